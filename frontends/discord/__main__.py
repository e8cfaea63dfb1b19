"""``distillery-discord``: settings -> logging -> run until SIGTERM or SIGINT."""

from __future__ import annotations

from collections.abc import Sequence

from frontends.discord.server import run
from frontends.discord.settings import load_settings
from frontends.launch import launch


def main(argv: Sequence[str] | None = None) -> None:
    """Run the Discord bot; a configuration problem exits with status 2 and one line saying what to fix."""
    # aiohttp and hikari log every request and heartbeat; the bot's own lines are what operators need.
    launch("distillery-discord", load_settings, run, ("aiohttp.access", "hikari"), argv)


if __name__ == "__main__":
    main()
