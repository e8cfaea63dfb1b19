"""User text made literal in each chat platform's markup: names, captions, descriptions, prompts, file names.

A platform adapter's ``escape`` is one of these. Text in plain-text fields (Telegram without ``parse_mode``,
Slack ``plain_text`` objects) needs none; these are for the places where markup is parsed.
"""

from __future__ import annotations

import re

ZERO_WIDTH_SPACE = "\u200b"
# Slack's inline formatting marks; mrkdwn has no backslash escape for them.
_SLACK_MARKS = re.compile(r"[*_~`]")
# Discord markdown's special characters, each escaped with a backslash.
_DISCORD_MARKS = re.compile(r"([\\*_~`|>#\-\[\]()<:])")
_DISCORD_BROADCAST = re.compile(r"@(everyone|here)", re.IGNORECASE)


def slack_mrkdwn(text: str) -> str:
    """Text for a Slack ``mrkdwn`` field that shows literally: ``&``, ``<`` and ``>`` become the entities Slack
    requires (so ``<!channel>``, ``<@U...>`` and ``<http://x|y>`` cannot ping or link), and a zero-width space
    around each ``*``, ``_``, ``~`` and backtick keeps them from pairing into bold, italics, strike or code."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SLACK_MARKS.sub(lambda mark: f"{ZERO_WIDTH_SPACE}{mark.group(0)}{ZERO_WIDTH_SPACE}", text)


def discord_markdown(text: str) -> str:
    """Text for a Discord message that shows literally: markdown characters backslash-escaped, and
    ``@everyone``/``@here`` broken by a zero-width space (send with no allowed mentions as well)."""
    escaped = _DISCORD_MARKS.sub(r"\\\1", text)
    return _DISCORD_BROADCAST.sub(lambda match: f"@{ZERO_WIDTH_SPACE}{match.group(1)}", escaped)
