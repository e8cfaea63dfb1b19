"""Restarts: a bot that comes back re-attaches to its messages from the daemon's notes, and a broken event
stream (the daemon restarting) is watched again from the last event shown. Fake daemon, real bolt."""

from __future__ import annotations

import asyncio

import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.clientstate import ClientState
from frontends.follow import GONE
from frontends.follow import OFFLINE_NOTE as RECONNECTING
from tests.frontends.fakes import FakeDaemon
from tests.frontends.slack.fake_slack_api import TEAM, FakeSlack
from tests.frontends.slack.harness import BotHarness, settings_for


async def _note(fake_slack: FakeSlack, fake_daemon: FakeDaemon, job_id: str, seq: int = 0) -> ClientState:
    def noted() -> bool:
        state = ClientState.decode(fake_daemon.client_state(job_id))
        return state is not None and state.seq >= seq

    await fake_slack.wait_for(noted)
    state = ClientState.decode(fake_daemon.client_state(job_id))
    assert state is not None
    return state


def _final_shown(fake_daemon: FakeDaemon, job_id: str) -> bool:
    state = ClientState.decode(fake_daemon.client_state(job_id))
    return state is not None and state.done


async def _bot(fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> BotHarness:
    return await BotHarness(fake_slack, fake_daemon, settings_for(fake_slack)).start()


async def test_a_restarted_bot_continues_the_same_message_from_the_last_event_shown(
    fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    first = await _bot(fake_slack, fake_daemon)
    try:
        await first.command("https://example.org/me.jpg", user="U1", channel="C1")
        await fake_daemon.run_to("job1", steps=2)
        before = await _note(fake_slack, fake_daemon, "job1", seq=fake_daemon.jobs["job1"].last_seq)
    finally:
        await first.close()
    # Events the stopped bot never saw.
    await fake_daemon.emit(
        "job1", "Saving.", stage=pb.STAGE_SAVE, progress=pb.Progress(step=1, total=1), state=pb.JOB_STATE_RUNNING
    )

    second = await _bot(fake_slack, fake_daemon)
    try:
        await fake_slack.wait_for(lambda: "Stage: Saving" in fake_slack.message("C1", before.message)["text"])
        assert fake_daemon.watches[-1] == ("job1", before.seq)  # replayed only what was not shown
        await fake_daemon.finish("job1")
        after = await _note(fake_slack, fake_daemon, "job1", seq=fake_daemon.jobs["job1"].last_seq)
        await fake_slack.wait_for(lambda: _final_shown(fake_daemon, "job1"))
    finally:
        await second.close()
    assert (after.chat, after.message) == ("C1", before.message)
    text = fake_slack.message("C1", before.message)["text"]
    # What the first bot learned (caption, class) survives through the job record.
    assert text.startswith("name1 is ready") and "Caption: a woman in a suit" in text and "Class: woman" in text
    assert len(fake_slack.of("chat.postMessage")) == 1


async def test_a_job_that_finished_while_the_bot_was_down_gets_its_final_message(
    fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    first = await _bot(fake_slack, fake_daemon)
    try:
        await first.command("https://example.org/me.jpg", user="U1")
        note = await _note(fake_slack, fake_daemon, "job1")
    finally:
        await first.close()
    await fake_daemon.run_to("job1")
    await fake_daemon.finish("job1", pb.JOB_STATE_FAILED, error="The picture has no face in it.")

    second = await _bot(fake_slack, fake_daemon)
    try:
        await fake_slack.wait_for(lambda: _final_shown(fake_daemon, "job1"))
    finally:
        await second.close()
    assert fake_slack.message("C1", note.message)["text"] == "name1 failed: The picture has no face in it."

    # A third start has nothing left to do for it.
    calls = len(fake_slack.calls)
    third = await _bot(fake_slack, fake_daemon)
    await asyncio.sleep(0.1)
    await third.close()
    assert len(fake_slack.calls) == calls


async def test_a_job_accepted_before_its_message_was_posted_gets_one(
    fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    requester = pb.Requester(platform="slack", workspace=TEAM, user="U3", chat="C3")
    await fake_daemon.submit(pb.DistillSpec(url="https://example.org/me.jpg", requester=requester))
    # Jobs of other frontends are not the Slack bot's business.
    await fake_daemon.submit(
        pb.DistillSpec(url="https://x/y.png", requester=pb.Requester(platform="telegram", user="9"))
    )
    bot = await _bot(fake_slack, fake_daemon)
    try:
        note = await _note(fake_slack, fake_daemon, "job1")
    finally:
        await bot.close()
    assert note.chat == "C3"
    assert [call.params["channel"] for call in fake_slack.of("chat.postMessage")] == ["C3"]


async def test_reattaching_waits_for_a_daemon_that_is_down(fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> None:
    first = await _bot(fake_slack, fake_daemon)
    try:
        await first.command("https://example.org/me.jpg", user="U1")
        note = await _note(fake_slack, fake_daemon, "job1")
    finally:
        await first.close()
    fake_daemon.offline = True
    second = await _bot(fake_slack, fake_daemon)
    try:
        await asyncio.sleep(0.1)  # several failed attempts
        assert not second.bot.followers.is_following("job1")
        fake_daemon.offline = False
        await fake_slack.wait_for(lambda: second.bot.followers.is_following("job1"))
        await fake_daemon.finish("job1")
        await second.bot.followers.wait("job1")
    finally:
        await second.close()
    assert fake_slack.message("C1", note.message)["text"].startswith("name1 is ready")


async def test_a_broken_stream_is_watched_again_from_the_last_event(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    await bot.command("https://example.org/me.jpg", user="U1")
    note = await _note(fake_slack, fake_daemon, "job1")
    await fake_daemon.run_to("job1", steps=2)
    shown = fake_daemon.jobs["job1"].last_seq
    await fake_slack.wait_for(lambda: "step 2/2" in fake_slack.message("C1", note.message)["text"])

    fake_daemon.offline = True  # the daemon goes away: the stream breaks, and watching again fails for now
    await fake_daemon.break_watches()
    await fake_slack.wait_for(lambda: RECONNECTING in str(fake_slack.message("C1", note.message)["blocks"]))
    fake_daemon.offline = False
    await fake_daemon.finish("job1")
    await bot.bot.followers.wait("job1")

    assert ("job1", shown) in fake_daemon.watches[1:]  # resumed after the last event it had shown
    final = fake_slack.message("C1", note.message)
    assert final["text"].startswith("name1 is ready") and RECONNECTING not in str(final["blocks"])


async def test_a_job_the_daemon_forgot_stops_being_followed(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    await bot.command("https://example.org/me.jpg", user="U1")
    note = await _note(fake_slack, fake_daemon, "job1")
    del fake_daemon.jobs["job1"]  # e.g. the daemon's store was reset
    await fake_daemon.break_watches()
    await asyncio.wait_for(bot.bot.followers.wait("job1"), 5)
    assert GONE in str(fake_slack.message("C1", note.message)["blocks"])
    assert not bot.bot.followers.is_following("job1")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"channel": "C1"}',
        b'{"channel": true, "ts": "1.2"}',
        b'{"channel": "C1", "ts": ""}',
    ],
)
def test_notes_that_are_not_ours_are_ignored(data: bytes) -> None:
    assert ClientState.decode(data) is None


def test_a_note_round_trips_and_stays_small() -> None:
    state = ClientState(chat="C0123456789", message="1700000000.123456", seq=123456, done=True)
    assert ClientState.decode(state.encode()) == state
    assert len(state.encode()) < 100
