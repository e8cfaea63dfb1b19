"""A bot process's ``main``: settings, logging, run until SIGTERM or SIGINT; a bad configuration exits 2."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from frontends.sources import SettingsError


class _Logged(Protocol):
    @property
    def log_level(self) -> str: ...


def launch(
    prog: str,
    load: Callable[[Sequence[str]], _Logged],
    run: Callable[[Any, asyncio.Event], Awaitable[None]],
    quiet: Iterable[str],
    argv: Sequence[str] | None = None,
) -> None:
    """Load the settings, configure logging (the loggers in ``quiet`` at WARNING), and run until a signal."""

    async def main() -> None:
        settings = load(sys.argv[1:] if argv is None else argv)
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
        for name in quiet:
            logging.getLogger(name).setLevel(logging.WARNING)
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
