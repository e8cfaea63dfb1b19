"""``distillery-slack``: settings -> logging -> run until SIGTERM or SIGINT."""

from __future__ import annotations

from collections.abc import Sequence

from frontends.launch import launch
from frontends.slack.server import run
from frontends.slack.settings import load_settings


def main(argv: Sequence[str] | None = None) -> None:
    """Run the Slack bot; a configuration problem exits with status 2 and one line saying what to fix."""
    # aiohttp and the SDK log every request at INFO; the bot's own lines are what operators need.
    launch("distillery-slack", load_settings, run, ("aiohttp.access", "slack_sdk", "slack_bolt"), argv)


if __name__ == "__main__":
    main()
