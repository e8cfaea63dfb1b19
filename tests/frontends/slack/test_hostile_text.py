"""Hostile text in Slack: odd command arguments get usage text; user text never pings, links or formats.

A LoRA description, a caption or a prompt may hold ``<!channel>``, ``<!here>``, ``<@U...>``,
``<http://x|y>`` and mrkdwn marks. The bot shows user text only in ``plain_text`` objects, and every
mrkdwn field it sends (the notification ``text``, context lines, comments) carries it escaped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.clientstate import ClientState
from frontends.commands import LORA_USAGE, SERVE_USAGE, UPSCALE_USAGE
from frontends.escape import ZERO_WIDTH_SPACE, discord_markdown, slack_mrkdwn
from frontends.slack import blocks, library
from tests.frontends.fakes import FakeDaemon
from tests.frontends.slack.fake_slack_api import FakeSlack
from tests.frontends.slack.harness import BotHarness, shown_text

MARKUP = "<!channel> <!here> <@U0ADMIN> <http://evil.example|click> *b* _i_ ~s~ `c` &amp;"
# What must never reach a field Slack parses: a mention or link token, or a formatting pair.
TOKENS = ("<!channel>", "<!here>", "<@U0ADMIN>", "<http://evil.example|click>", "*b*", "_i_", "~s~", "`c`")
ODD = {"5,000 characters": "a" * 5000, "control characters": "ab\x00c\x1b", "other scripts": "名前 имя"}


def mrkdwn_fields(message: dict[str, Any]) -> Iterator[str]:
    """Every string Slack would parse as mrkdwn: the top-level text and each mrkdwn text object."""
    yield str(message.get("text") or "")

    def walk(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                yield str(node.get("text", ""))
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    yield from walk(message.get("blocks") or [])


def assert_literal(message: dict[str, Any]) -> None:
    assert MARKUP in shown_text(message)  # shown as written, in plain_text
    for field in mrkdwn_fields(message):
        assert not any(token in field for token in TOKENS), field


@pytest.mark.parametrize("words", ODD.values(), ids=ODD.keys())
async def test_odd_arguments_get_the_commands_usage(bot: BotHarness, fake_daemon: FakeDaemon, words: str) -> None:
    usages = {
        "/distill": blocks.usage_text(),
        "/upscale": UPSCALE_USAGE,
        "/lora": LORA_USAGE,
        "/info": library.INFO_USAGE,
    }
    if words != ODD["other scripts"]:  # a prompt in any script is a fine prompt
        usages["/serve"] = SERVE_USAGE
    for command, usage in usages.items():
        status, ack = await bot.command(words, command=command)
        assert status == 200 and ack.endswith(usage), (command, ack[:200])
        assert len(ack) < len(usage) + 200 and "\x00" not in ack
    assert [name for name in fake_daemon.methods() if name != "list_jobs"] == []  # list_jobs: re-attaching


async def test_a_description_with_markup_neither_pings_nor_formats(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    fake_daemon.add_lora("rifttami", "U1", public=True).description = MARKUP
    for command, text in (("/lora", "rifttami"), ("/loras", "")):
        status, ack = await bot.ack_of(text, command=command, user="U2")
        assert status == 200
        assert_literal(ack)


async def test_a_caption_and_a_prompt_with_markup_stay_literal_in_the_job_message(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    await bot.command("https://example.org/me.jpg", user="U1")
    await fake_slack.wait_for(lambda: "job1" in fake_daemon.jobs and fake_daemon.client_state("job1"))
    await fake_daemon.emit("job1", state=pb.JOB_STATE_RUNNING, captioned=pb.Captioned(caption=MARKUP))
    note = ClientState.decode(fake_daemon.client_state("job1"))
    assert note is not None
    channel, ts = note.chat, note.message
    await fake_slack.wait_for(lambda: MARKUP in shown_text(fake_slack.message(channel, ts)))
    assert_literal(fake_slack.message(channel, ts))


def test_the_escape_helpers() -> None:
    escaped = slack_mrkdwn(MARKUP)
    assert "<" not in escaped and ">" not in escaped and "&amp;amp;" in escaped
    assert not any(token in escaped for token in TOKENS)
    unescaped = escaped.replace(ZERO_WIDTH_SPACE, "").replace("&lt;", "<").replace("&gt;", ">")
    assert unescaped.replace("&amp;", "&") == MARKUP  # nothing lost: Slack shows the entities as characters
    discord = discord_markdown("@everyone **b** <@123> [x](http://y) @Here")
    assert "@everyone" not in discord and "@Here" not in discord and "**" not in discord
    assert discord.replace("\\", "").replace(ZERO_WIDTH_SPACE, "") == "@everyone **b** <@123> [x](http://y) @Here"
