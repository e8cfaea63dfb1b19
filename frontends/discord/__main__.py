"""``distillery-discord``: settings -> logging -> run until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from frontends.discord.server import run
from frontends.discord.settings import SettingsError, load_settings


async def _main(argv: Sequence[str]) -> None:
    settings = load_settings(argv)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiohttp and hikari log every request and heartbeat; the bot's own lines are what operators need.
    for noisy in ("aiohttp.access", "hikari"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    logging.getLogger(__name__).info("starting: %s", settings)  # secrets are not in the repr
    await run(settings, stop)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the Discord bot; a configuration problem exits with status 2 and one line saying what to fix."""
    try:
        asyncio.run(_main(sys.argv[1:] if argv is None else argv))
    except SettingsError as error:
        print(f"distillery-discord: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
