"""``distillery-telegram``: settings -> logging -> run the bot until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from frontends.client import DaemonClient
from frontends.telegram.bot import DistilleryBot
from frontends.telegram.settings import Settings, SettingsError, load_settings

log = logging.getLogger("frontends.telegram")


class RedactingFormatter(logging.Formatter):
    """Blanks the bot token (part of every Bot API URL) and other secrets anywhere in a formatted line,
    tracebacks included."""

    def __init__(self, fmt: str, secrets: list[str | None]) -> None:
        super().__init__(fmt)
        self.secrets = [secret for secret in secrets if secret]

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, "<secret>")
        return text


def configure_logging(settings: Settings) -> None:
    """Log to stderr (journald adds timestamps under systemd) with secrets redacted."""
    handler = logging.StreamHandler(sys.stderr)
    secrets = [settings.token, settings.webhook_secret, settings.daemon_token]
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    # httpx logs every request URL at INFO, and the token is in the URL; the redaction is the second guard.
    for noisy in ("httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def run(settings: Settings) -> None:
    """Start the bot, wait for a stop signal, stop it."""
    daemon = DaemonClient(settings.daemon, settings.daemon_token)
    bot = DistilleryBot(settings, daemon)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
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
    """Entry point of the console script."""
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
    except SettingsError as error:
        raise SystemExit(f"distillery-telegram: {error}") from None
    configure_logging(settings)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
