"""``distillery-telegram``: settings -> logging -> run the bot until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from frontends.client import DaemonClient
from frontends.launch import launch
from frontends.telegram.bot import DistilleryBot
from frontends.telegram.settings import Settings, load_settings

log = logging.getLogger("frontends.telegram")
# httpx logs every request URL at INFO, and the token is in the URL; the log's redaction is the second guard.
QUIET = ("httpx", "httpcore", "aiohttp.access")


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Start the bot, wait for ``stop``, stop it."""
    daemon = DaemonClient(settings.daemon, settings.daemon_token)
    bot = DistilleryBot(settings, daemon)
    if not await daemon.ready():
        # Not fatal: systemd may start us first, and every request gets "the trainer is offline" meanwhile.
        log.warning("the daemon at %s is not ready yet", settings.daemon)
    try:
        await bot.start()
        await stop.wait()
        log.info("stopping")
    finally:
        await bot.stop()
        await daemon.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the Telegram bot; a configuration problem exits with status 2 and one line saying what to fix."""
    launch("distillery-telegram", load_settings, run, QUIET, argv)


if __name__ == "__main__":
    main()
