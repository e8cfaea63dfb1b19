"""HTTP mode's signature checks, and the Cancel button that only the job's owner may use."""

from __future__ import annotations

import time

from distillery.v1 import distillery_pb2 as pb

from frontends.clientstate import ClientState
from frontends.slack import blocks
from tests.frontends.fakes import FakeDaemon
from tests.frontends.slack.fake_slack_api import TEAM, FakeSlack
from tests.frontends.slack.harness import BotHarness, signed_headers, slash_body

FORM = "application/x-www-form-urlencoded"


async def test_unsigned_badly_signed_and_stale_requests_are_rejected(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    body = slash_body("https://example.org/me.jpg")
    assert (await bot.post(body, FORM, sign=False))[0] == 401
    assert (await bot.post(body, FORM, headers=signed_headers(body, secret="not-the-secret")))[0] == 401
    # Signed with the right secret, but six minutes ago: a replay outside the 5-minute window.
    stale = signed_headers(body, timestamp=int(time.time()) - 360)
    assert (await bot.post(body, FORM, headers=stale))[0] == 401
    # Also from the future (a clock that is wrong, or a forged time).
    ahead = signed_headers(body, timestamp=int(time.time()) + 360)
    assert (await bot.post(body, FORM, headers=ahead))[0] == 401
    # A body changed after signing.
    tampered = signed_headers(body)
    assert (await bot.post(body.replace("me.jpg", "them.jpg"), FORM, headers=tampered))[0] == 401
    assert fake_daemon.submits == [] and fake_slack.calls == []

    # The same request, properly signed and fresh, goes through.
    status, _ = await bot.post(body, FORM)
    assert status == 200 and len(fake_daemon.submits) == 1


async def test_a_request_within_the_window_is_accepted(bot: BotHarness, fake_daemon: FakeDaemon) -> None:
    body = slash_body("help")
    status, text = await bot.post(body, FORM, headers=signed_headers(body, timestamp=int(time.time()) - 240))
    assert status == 200 and "Usage:" in text


async def _started_job(bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> ClientState:
    await bot.command("https://example.org/me.jpg", user="U1", channel="C1")
    await fake_slack.wait_for(lambda: fake_daemon.jobs and fake_daemon.jobs["job1"].client_state)
    state = ClientState.decode(fake_daemon.client_state("job1"))
    assert state is not None
    return state


async def test_only_the_owner_can_cancel(bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> None:
    state = await _started_job(bot, fake_slack, fake_daemon)

    assert (await bot.click_cancel("job1", user="U2"))[0] == 200
    await fake_slack.wait_for(lambda: fake_slack.of("chat.postEphemeral"))
    [refusal] = fake_slack.of("chat.postEphemeral")
    assert (refusal.params["user"], refusal.params["text"]) == ("U2", blocks.NOT_OWNER)
    assert fake_daemon.jobs["job1"].state == pb.JOB_STATE_QUEUED
    assert fake_daemon.cancels == []  # the bot knew the owner; the daemon was not even asked

    assert (await bot.click_cancel("job1", user="U1"))[0] == 200
    await bot.bot.followers.wait("job1")
    assert fake_daemon.jobs["job1"].state == pb.JOB_STATE_CANCELLED
    [(job_id, requester)] = fake_daemon.cancels
    assert (job_id, requester.user) == ("job1", "U1")
    final = fake_slack.message("C1", state.message)
    assert final["text"] == "name1 was cancelled."
    assert all(block["type"] != "actions" for block in final["blocks"])


async def test_the_daemon_guards_jobs_the_bot_does_not_follow(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    # A job of U1 this bot process does not follow (as after a restart, before re-attaching).
    await fake_daemon.submit(
        pb.DistillSpec(url="https://x/y.png", requester=pb.Requester(platform="slack", workspace=TEAM, user="U1"))
    )
    await bot.click_cancel("job1", user="U2")
    await fake_slack.wait_for(lambda: fake_slack.of("chat.postEphemeral"))
    assert fake_slack.of("chat.postEphemeral")[0].params["text"] == blocks.NOT_OWNER
    assert fake_daemon.jobs["job1"].state == pb.JOB_STATE_QUEUED
    assert len(fake_daemon.cancels) == 1  # asked, and answered NOT_FOUND


async def test_cancelling_a_finished_job_says_so(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    await _started_job(bot, fake_slack, fake_daemon)
    await fake_daemon.finish("job1")
    await bot.bot.followers.wait("job1")
    await bot.click_cancel("job1", user="U1")
    await fake_slack.wait_for(lambda: fake_slack.of("chat.postEphemeral"))
    assert fake_slack.of("chat.postEphemeral")[0].params["text"] == "That job already ended."
