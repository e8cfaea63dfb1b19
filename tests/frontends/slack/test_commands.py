"""/distill as a slash command through real slack-bolt over signed HTTP, with a fake daemon behind the bot."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import grpc
import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.client import OFFLINE
from frontends.clientstate import ClientState
from frontends.slack import blocks
from tests.frontends.fakes import FakeDaemon
from tests.frontends.slack.fake_slack_api import TEAM, FakeSlack
from tests.frontends.slack.harness import BotHarness, settings_for


def _actions(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [block for block in message["blocks"] if block["type"] == "actions"]


async def test_help_and_an_empty_command_explain_usage(bot: BotHarness, fake_daemon: FakeDaemon) -> None:
    for text in ("", "help"):
        status, ack = await bot.command(text)
        assert status == 200
        assert "/distill <image url> [--class man|woman|person] [--noflip]" in ack
        assert "upload a photo" in ack
        assert "reply /distill" not in ack  # the Telegram-only way is not offered in Slack
    assert fake_daemon.submits == []


async def test_slash_command_end_to_end(bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> None:
    started = time.monotonic()
    status, ack = await bot.command(
        "<https://example.org/me.jpg> --class woman --noflip", user="U1", channel="C1", trigger="trig-1"
    )
    assert status == 200 and time.monotonic() - started < 3
    assert ack == "Your LoRA will be called name1. It is next in the queue. Progress will appear in this channel."
    spec, image = fake_daemon.submits[0]
    assert image is None
    assert spec.url == "https://example.org/me.jpg"  # Slack's <...> link wrapping is undone
    assert spec.subject_class == pb.SUBJECT_CLASS_WOMAN and spec.no_flip
    assert spec.idempotency_key == "slack-command:trig-1"
    assert (spec.requester.platform, spec.requester.workspace, spec.requester.user, spec.requester.chat) == (
        "slack",
        TEAM,
        "U1",
        "C1",
    )

    await fake_slack.wait_for(lambda: fake_daemon.client_state("job1"))
    [post] = fake_slack.of("chat.postMessage")
    assert post.params["channel"] == "C1"
    state = ClientState.decode(fake_daemon.client_state("job1"))
    assert state is not None and state.chat == "C1"
    message = fake_slack.message("C1", state.message)
    assert "Distilling name1" in message["text"] and "Waiting in the queue" in message["text"]
    [actions] = _actions(message)
    button = actions["elements"][0]
    assert (button["action_id"], button["value"]) == ("distill_cancel", "job1")
    assert any("<@U1>" in json.dumps(block) for block in message["blocks"])

    await fake_daemon.run_to("job1", steps=4)
    await fake_slack.wait_for(lambda: "step 4/4" in fake_slack.message("C1", state.message)["text"])
    text = fake_slack.message("C1", state.message)["text"]
    assert "Stage: Training" in text and "Caption: a woman in a suit" in text and "Class: woman" in text
    assert "[################] 100%" in text

    await fake_daemon.finish("job1")
    await bot.bot.followers.wait("job1")
    final = fake_slack.message("C1", state.message)
    assert final["text"].startswith("name1 is ready in 1 min 15 s.")
    assert "a portrait of name1 woman" in final["text"]
    assert _actions(final) == []  # nothing left to cancel
    assert len(fake_slack.of("chat.postMessage")) == 1  # one message, edited in place
    done = ClientState.decode(fake_daemon.client_state("job1"))
    assert done is not None and done.done and done.seq == fake_daemon.jobs["job1"].last_seq
    # Unchanged content is never sent twice.
    texts = [call.params["text"] for call in fake_slack.of("chat.update")]
    assert all(a != b for a, b in itertools.pairwise(texts))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("example.org/me.jpg", "The image link must start with http:// or https://."),
        ("https://example.org/a.jpg --class dog", "--class takes man, woman or person, not 'dog'."),
        ("https://example.org/a.jpg --fast", "Unknown option --fast."),
        ("https://example.org/a.jpg https://example.org/b.jpg", "Send one image link at a time."),
        ("--noflip", "Send an image link, or a photo with the caption /distill."),
    ],
)
async def test_bad_words_get_the_problem_and_the_usage(
    bot: BotHarness, fake_daemon: FakeDaemon, text: str, problem: str
) -> None:
    status, ack = await bot.command(text)
    assert status == 200
    assert ack.startswith(problem)
    assert "Usage: /distill <image url>" in ack
    assert fake_daemon.submits == []


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "The link did not answer with a picture (HTTP 404)."),
        (grpc.StatusCode.INVALID_ARGUMENT, "That file is not a JPEG, PNG or WebP image."),
        (grpc.StatusCode.INVALID_ARGUMENT, "The picture is too small: its shorter side must be 256 px."),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "The queue is full (20 jobs waiting); try again later."),
        (grpc.StatusCode.UNAUTHENTICATED, "This frontend is not allowed to talk to the trainer (token)."),
    ],
)
async def test_the_daemons_refusal_is_the_ack(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon, code: grpc.StatusCode, message: str
) -> None:
    fake_daemon.fail_submit(code, message)
    status, ack = await bot.command("https://example.org/me.jpg")
    assert (status, ack) == (200, message)
    assert fake_slack.of("chat.postMessage") == []


async def test_daemon_offline(bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> None:
    fake_daemon.offline = True
    assert await bot.command("https://example.org/me.jpg") == (200, OFFLINE)
    assert await bot.command("jobs") == (200, OFFLINE)
    assert fake_slack.of("chat.postMessage") == []


async def test_jobs_lists_only_the_users_jobs(bot: BotHarness, fake_daemon: FakeDaemon) -> None:
    assert (await bot.command("jobs"))[1].startswith("You have no jobs yet.")
    await bot.command("https://example.org/a.jpg", user="U1")
    await bot.command("https://example.org/b.jpg", user="U2")
    await fake_daemon.emit("job1", "Running.", state=pb.JOB_STATE_RUNNING, stage=pb.STAGE_TRAIN)
    _status, ack = await bot.command("jobs", user="U1")
    assert ack == "Your jobs:\nname1: running (training)"


async def test_a_slow_image_host_does_not_cost_the_3s_ack(fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> None:
    harness = await BotHarness(fake_slack, fake_daemon, settings_for(fake_slack, ack_wait=0.2)).start()
    try:
        # The daemon does not answer until the test says so; the slash command is acknowledged meanwhile.
        fake_daemon.submit_gate = asyncio.Event()
        assert await harness.command("https://example.org/slow.jpg", user="U1") == (200, blocks.FETCHING)
        assert len(fake_daemon.submits) == 1 and fake_slack.of("chat.postMessage") == []
        # The job message follows once the daemon answers.
        fake_daemon.submit_gate.set()
        await fake_slack.wait_for(lambda: len(fake_slack.of("chat.postMessage")) == 1)

        # A late refusal reaches the user as an ephemeral message instead.
        fake_daemon.submit_gate = asyncio.Event()
        fake_daemon.fail_submit(grpc.StatusCode.INVALID_ARGUMENT, "That file is not a JPEG, PNG or WebP image.")
        assert (await harness.command("https://example.org/slow.txt", user="U2"))[1] == blocks.FETCHING
        assert fake_slack.of("chat.postEphemeral") == []
        fake_daemon.submit_gate.set()
        await fake_slack.wait_for(lambda: fake_slack.of("chat.postEphemeral"))
        [ephemeral] = fake_slack.of("chat.postEphemeral")
        assert ephemeral.params["user"] == "U2" and ephemeral.params["channel"] == "C1"
        assert ephemeral.params["text"] == "That file is not a JPEG, PNG or WebP image."
    finally:
        await harness.close()


async def test_allow_lists(fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> None:
    settings = settings_for(fake_slack, allowed_users=frozenset({"U1"}), allowed_channels=frozenset({"C1"}))
    harness = await BotHarness(fake_slack, fake_daemon, settings).start()
    try:
        assert await harness.command("https://example.org/a.jpg", user="U2") == (200, blocks.NOT_ALLOWED)
        assert await harness.command("help", user="U1", channel="C9") == (200, blocks.NOT_ALLOWED)
        other_team = await harness.command("https://example.org/a.jpg", user="U1", team="T0OTHER")
        assert other_team[1].startswith("Your LoRA")  # no workspace list: any team
        assert (await harness.command("https://example.org/b.jpg", user="U1", channel="D1"))[1].startswith(
            "Your LoRA"  # DMs pass the channel list
        )
        assert len(fake_daemon.submits) == 2
    finally:
        await harness.close()

    settings = settings_for(fake_slack, allowed_workspaces=frozenset({TEAM}))
    harness = await BotHarness(fake_slack, fake_daemon, settings).start()
    try:
        assert await harness.command("help", team="T0OTHER") == (200, blocks.NOT_ALLOWED)
    finally:
        await harness.close()


async def test_a_repeated_trigger_makes_one_job_and_one_message(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    first = await bot.command("https://example.org/a.jpg", trigger="trig-same")
    await fake_slack.wait_for(lambda: fake_daemon.jobs["job1"].client_state)
    again = await bot.command("https://example.org/a.jpg", trigger="trig-same")
    assert first[1].startswith("Your LoRA will be called name1.")
    assert again[1] == "That request is already being distilled as name1."
    await asyncio.sleep(0.05)
    assert len(fake_daemon.jobs) == 1
    assert len(fake_slack.of("chat.postMessage")) == 1


async def test_bot_not_in_channel_posts_the_job_message_to_the_users_dm(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    fake_slack.no_access.add("C7")
    await bot.command("https://example.org/a.jpg", user="U5", channel="C7")
    await fake_slack.wait_for(lambda: fake_daemon.jobs["job1"].client_state)
    state = ClientState.decode(fake_daemon.client_state("job1"))
    assert state is not None and state.chat == "D5"
    assert [call.params["users"] for call in fake_slack.of("conversations.open")] == ["U5"]
    assert "Distilling name1" in fake_slack.message("D5", state.message)["text"]
