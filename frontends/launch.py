"""A bot process's ``main``: settings, logging, run until SIGTERM or SIGINT; a bad configuration exits 2.

Every line the process logs, tracebacks included, has the settings' secrets blanked out: the fields a settings
dataclass keeps out of its ``repr`` (``field(repr=False)``) are its secrets. A bot token in a request URL
(Telegram puts it in every Bot API URL) never reaches the log, whatever a library logs at DEBUG.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from frontends.sources import SettingsError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Logged(Protocol):
    @property
    def log_level(self) -> str: ...


class RedactingFormatter(logging.Formatter):
    """Replaces each secret with ``<secret>`` anywhere in a formatted line, tracebacks included."""

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self.secrets = [secret for secret in secrets if secret]

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, "<secret>")
        return text


def secrets_of(settings: object) -> list[str]:
    """The values of a settings dataclass's fields that its ``repr`` leaves out."""
    if not dataclasses.is_dataclass(settings):
        return []
    values = (getattr(settings, item.name) for item in dataclasses.fields(settings) if not item.repr)
    return [value for value in values if isinstance(value, str) and value]


def configure_logging(settings: _Logged, quiet: Iterable[str]) -> None:
    """Log to stderr (journald adds its own timestamps) with secrets blanked; the loggers in ``quiet`` (request
    lines of HTTP libraries, heartbeats) at WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(LOG_FORMAT, secrets_of(settings)))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)


def launch(
    prog: str,
    load: Callable[[Sequence[str]], _Logged],
    run: Callable[[Any, asyncio.Event], Awaitable[None]],
    quiet: Iterable[str],
    argv: Sequence[str] | None = None,
) -> None:
    """Load the settings, configure logging, and run until a signal."""

    async def main() -> None:
        settings = load(sys.argv[1:] if argv is None else argv)
        configure_logging(settings, quiet)
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        logging.getLogger(prog).info("starting: %s", settings)  # secrets are kept out of the settings' repr
        await run(settings, stop)

    try:
        asyncio.run(main())
    except SettingsError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
