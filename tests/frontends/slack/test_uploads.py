"""An image uploaded with /distill in the message text: a file_share event, a private download, one job."""

from __future__ import annotations

import asyncio

import grpc
from distillery.v1 import distillery_pb2 as pb

from frontends.clientstate import ClientState
from frontends.slack import blocks, files
from tests.frontends.fakes import FakeDaemon
from tests.frontends.slack.fake_slack_api import BOT_TOKEN, TEAM, FakeSlack
from tests.frontends.slack.harness import BotHarness, settings_for, shown_text, upload_event

PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 100


async def _ephemeral(fake: FakeSlack) -> str:
    await fake.wait_for(lambda: fake.of("chat.postEphemeral"))
    [reply] = fake.of("chat.postEphemeral")
    return shown_text(reply.params)


async def test_upload_end_to_end(bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> None:
    item = fake_slack.add_file("me.png", PNG)
    status, _ = await bot.event(upload_event([item], "here I am /distill --class man --noflip", "Ev1"))
    assert status == 200
    await fake_slack.wait_for(lambda: fake_daemon.submits and fake_daemon.jobs["job1"].client_state)
    spec, image = fake_daemon.submits[0]
    assert image == PNG
    assert spec.upload and spec.subject_class == pb.SUBJECT_CLASS_MAN and spec.no_flip
    assert spec.idempotency_key == "slack-event:Ev1"
    assert (spec.requester.workspace, spec.requester.user, spec.requester.chat) == (TEAM, "U1", "C1")
    assert fake_slack.downloads == [(item["id"], f"Bearer {BOT_TOKEN}")]

    state = ClientState.decode(fake_daemon.client_state("job1"))
    assert state is not None and state.chat == "C1"
    await fake_daemon.run_to("job1")
    await fake_daemon.finish("job1")
    await bot.bot.followers.wait("job1")
    assert fake_slack.message("C1", state.message)["text"].startswith("name1 is ready")


async def test_messages_without_distill_are_ignored(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    item = fake_slack.add_file("cat.png", PNG)
    await bot.event(upload_event([item], "look at my cat", "Ev1"))
    await bot.event(upload_event([item], "/distillery is a word, not the command", "Ev2"))
    plain = upload_event([], "/distill", "Ev3")
    del plain["event"]["subtype"]  # an ordinary message: the slash command is the way without a file
    await bot.event(plain)
    await asyncio.sleep(0.1)
    assert fake_daemon.submits == [] and fake_slack.downloads == [] and fake_slack.of("chat.postEphemeral") == []


async def test_a_retried_event_makes_one_job(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    item = fake_slack.add_file("me.png", PNG)
    envelope = upload_event([item], "/distill", "Ev1")
    assert (await bot.event(envelope))[0] == 200
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    assert (await bot.event(envelope, headers=retry))[0] == 200
    await fake_slack.wait_for(lambda: fake_daemon.jobs and fake_daemon.jobs["job1"].client_state)

    # A retry reaching a restarted bot (no memory of the first delivery) finds the job through the daemon's
    # idempotency key, and does not post a second message.
    again = await BotHarness(fake_slack, fake_daemon, settings_for(fake_slack)).start(reattach=False)
    try:
        assert (await again.event(envelope, headers={"X-Slack-Retry-Num": "2"}))[0] == 200
        await fake_slack.wait_for(lambda: len(fake_daemon.submits) == 2)
        await asyncio.sleep(0.05)
    finally:
        await again.close()
    assert len(fake_daemon.jobs) == 1
    assert len(fake_slack.of("chat.postMessage")) == 1
    assert len(fake_slack.downloads) == 2  # the first bot downloaded once; the restarted one once


async def test_slacks_login_page_instead_of_the_file_is_refused_clearly(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    item = fake_slack.add_file("me.png", PNG, readable=False)  # the app lacks files:read
    await bot.event(upload_event([item], "/distill", "Ev1"))
    assert await _ephemeral(fake_slack) == files.UNREADABLE
    assert fake_daemon.submits == []


async def test_the_bot_token_goes_only_to_slacks_file_host(fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> None:
    settings = settings_for(fake_slack, file_url_prefixes=("https://files.slack.com/",))
    harness = await BotHarness(fake_slack, fake_daemon, settings).start()
    try:
        item = fake_slack.add_file("me.png", PNG)  # served by the fake, which is not files.slack.com
        await harness.event(upload_event([item], "/distill", "Ev1"))
        assert await _ephemeral(fake_slack) == files.NOT_SLACK
    finally:
        await harness.close()
    assert fake_slack.downloads == []


async def test_not_an_image_too_large_and_no_file(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    pdf = fake_slack.add_file("cv.pdf", b"%PDF-1.4", mimetype="application/pdf")
    huge = fake_slack.add_file("huge.png", PNG, size=21 * 1024 * 1024)
    await bot.event(upload_event([pdf], "/distill", "Ev1"))
    await bot.event(upload_event([huge], "/distill", "Ev2", user="U2"))
    await bot.event(upload_event([], "/distill", "Ev3", user="U3"))
    await fake_slack.wait_for(lambda: len(fake_slack.of("chat.postEphemeral")) == 3)
    replies = {call.params["user"]: shown_text(call.params) for call in fake_slack.of("chat.postEphemeral")}
    assert replies == {
        "U1": files.NOT_AN_IMAGE,
        "U2": "That picture is larger than 20 MB; send a smaller one.",
        "U3": blocks.NO_IMAGE,
    }
    assert fake_slack.downloads == [] and fake_daemon.submits == []


async def test_bad_options_and_daemon_refusals_are_ephemeral(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    item = fake_slack.add_file("me.png", PNG)
    await bot.event(upload_event([item], "/distill --class robot", "Ev1"))
    text = await _ephemeral(fake_slack)
    assert text.startswith("--class takes man, woman or person, not 'robot'.") and "Usage:" in text

    fake_daemon.fail_submit(grpc.StatusCode.INVALID_ARGUMENT, "The picture is too small.")
    await bot.event(upload_event([item], "/distill", "Ev2", user="U2"))
    await fake_slack.wait_for(lambda: len(fake_slack.of("chat.postEphemeral")) == 2)
    assert shown_text(fake_slack.of("chat.postEphemeral")[1].params) == "The picture is too small."
    assert fake_slack.of("chat.postMessage") == []


async def test_a_file_stub_is_completed_with_files_info(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    item = fake_slack.add_file("me.png", PNG)
    stub = {"id": item["id"], "mode": "hidden_by_limit", "file_access": "check_file_info"}
    await bot.event(upload_event([stub], "/distill", "Ev1"))
    await fake_slack.wait_for(lambda: fake_daemon.submits)
    assert [call.params["file"] for call in fake_slack.of("files.info")] == [item["id"]]
    assert fake_daemon.submits[0][1] == PNG


async def test_uploads_obey_the_allow_lists(fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> None:
    harness = await BotHarness(
        fake_slack, fake_daemon, settings_for(fake_slack, allowed_channels=frozenset({"C1"}))
    ).start()
    try:
        item = fake_slack.add_file("me.png", PNG)
        await harness.event(upload_event([item], "/distill", "Ev1", channel="C2"))
        assert await _ephemeral(fake_slack) == blocks.NOT_ALLOWED
    finally:
        await harness.close()
    assert fake_slack.downloads == [] and fake_daemon.submits == []


async def test_a_file_the_bot_cannot_look_up_is_refused_clearly(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    fake_slack.failures["files.info"] = "missing_scope"
    await bot.event(upload_event([{"id": "F9999", "file_access": "check_file_info"}], "/distill", "Ev1"))
    assert await _ephemeral(fake_slack) == files.UNREADABLE
    assert fake_daemon.submits == []
