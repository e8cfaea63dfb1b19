"""``distillery-daemon``: settings -> logging -> server."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from daemon import logs
from daemon.rpc.server import serve
from daemon.settings import load_settings


def main(argv: Sequence[str] | None = None) -> None:
    """Run the daemon until SIGTERM."""
    settings = load_settings(sys.argv[1:] if argv is None else argv)
    # Job ids on every line about a job; the bearer token is redacted wherever it would appear.
    logs.configure(settings.log_level, [settings.token] if settings.token else [])
    # Libraries chatter at INFO (HTTP, model loading); the daemon's own lines are what operators need.
    for noisy in ("httpx", "urllib3", "diffusers", "transformers", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
