"""``distillery-daemon``: settings -> logging -> server."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from daemon.rpc.server import serve
from daemon.settings import load_settings


def main(argv: Sequence[str] | None = None) -> None:
    """Run the daemon until SIGTERM."""
    settings = load_settings(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Libraries chatter at INFO (HTTP, model loading); the daemon's own lines are what operators need.
    for noisy in ("httpx", "urllib3", "diffusers", "transformers", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
