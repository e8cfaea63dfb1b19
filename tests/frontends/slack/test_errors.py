"""The central error handler: what nobody expected is logged once and the user hears that it failed."""

from __future__ import annotations

import logging

import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.slack import blocks
from tests.frontends.fakes import FakeDaemon
from tests.frontends.slack.fake_slack_api import FakeSlack
from tests.frontends.slack.harness import BotHarness


class Broken(RuntimeError):
    """A bug somewhere below the bot."""


async def test_a_failure_while_posting_the_job_message_reaches_the_user(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    fake_slack.failures["chat.postMessage"] = "invalid_blocks"
    with caplog.at_level(logging.ERROR, logger="frontends.slack"):
        await bot.command("https://example.org/me.jpg", user="U1", channel="C1")
        await fake_slack.wait_for(lambda: fake_slack.of("chat.postEphemeral"))
    [reply] = fake_slack.of("chat.postEphemeral")
    assert (reply.params["user"], reply.params["text"]) == ("U1", blocks.INTERNAL)
    assert [record.message for record in caplog.records] == ["unexpected failure: Refused"]
    assert not bot.bot.followers.is_following("job1")


async def test_a_bug_in_a_listener_goes_to_the_same_handler(
    bot: BotHarness,
    fake_slack: FakeSlack,
    fake_daemon: FakeDaemon,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken_list_jobs(requester: pb.Requester, **options: object) -> list[pb.Job]:
        raise Broken("list_jobs exploded")

    monkeypatch.setattr(fake_daemon, "list_jobs", broken_list_jobs)
    with caplog.at_level(logging.ERROR, logger="frontends.slack"):
        status, _ = await bot.command("jobs", user="U7", channel="C7")
        await fake_slack.wait_for(lambda: fake_slack.of("chat.postEphemeral"))
    assert status == 500  # Slack shows its own "failed" note; the ephemeral says more
    [reply] = fake_slack.of("chat.postEphemeral")
    assert (reply.params["user"], reply.params["channel"], reply.params["text"]) == ("U7", "C7", blocks.INTERNAL)
    [record] = [record for record in caplog.records if record.name == "frontends.slack.app"]
    assert record.exc_info is not None and isinstance(record.exc_info[1], Broken)
