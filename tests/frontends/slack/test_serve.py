"""/serve through real slack-bolt over signed HTTP with the fake daemon: the ack, the one job message, the
pictures in its thread, the owner-only Cancel, repeated deliveries, and re-attaching after a restart."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.clientstate import ClientState
from frontends.commands import SERVE_USAGE, UPSCALE_USAGE
from frontends.render import image_caption
from frontends.slack import blocks, library
from tests.frontends.fakes import FakeDaemon
from tests.frontends.slack.fake_slack_api import FakeSlack
from tests.frontends.slack.harness import BotHarness, settings_for
from tests.frontends.test_serve_grammar import BAD_SERVE, BAD_UPSCALE


def _actions(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [block for block in message["blocks"] if block["type"] == "actions"]


async def _serve(bot: BotHarness, text: str, command: str = "/serve", **fields: Any) -> str:
    status, ack = await bot.command(text, command=command, **fields)
    assert status == 200
    return ack


async def _posted(fake_slack: FakeSlack, fake_daemon: FakeDaemon, job_id: str) -> ClientState:
    await fake_slack.wait_for(lambda: job_id in fake_daemon.jobs and fake_daemon.client_state(job_id))
    state = ClientState.decode(fake_daemon.client_state(job_id))
    assert state is not None
    return state


async def test_serve_end_to_end(bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> None:
    fake_daemon.add_lora("rifttami", "U1")
    started = time.monotonic()
    ack = await _serve(bot, '"a portrait as an astronaut" --lora rifttami --n 2 --seed 7', trigger="trig-s1")
    assert time.monotonic() - started < 3
    assert (
        ack == "Generating 2 images with rifttami. It is next in the queue. Progress will appear in this channel."
    )
    [(spec, requester, key)] = fake_daemon.generates
    assert spec.prompt == "a portrait as an astronaut" and [use.name for use in spec.loras] == ["rifttami"]
    assert spec.count == 2 and spec.seed == 7
    assert (requester.user, requester.chat, key) == ("U1", "C1", "slack-command:trig-s1")

    state = await _posted(fake_slack, fake_daemon, "job1")
    assert state.chat == "C1"
    message = fake_slack.message("C1", state.message)
    assert message["text"].startswith("Generating 2 images with rifttami\nWaiting in the queue")
    [actions] = _actions(message)
    button = actions["elements"][0]
    assert (button["action_id"], button["value"]) == (blocks.CANCEL_ACTION, "job1")
    assert button["confirm"]["text"]["text"] == "Generation stops and no picture is kept."

    for step in range(1, 5):
        progress = pb.Progress(step=step, total=4, eta_seconds=float(4 - step))
        await fake_daemon.emit(
            "job1", "Generating.", state=pb.JOB_STATE_RUNNING, stage=pb.STAGE_GENERATE, progress=progress
        )
    await fake_slack.wait_for(lambda: "step 4/4" in fake_slack.message("C1", state.message)["text"])
    assert "Stage: Generating" in fake_slack.message("C1", state.message)["text"]

    await fake_daemon.finish_generation("job1", count=2)
    await bot.bot.followers.wait("job1")
    final = fake_slack.message("C1", state.message)
    assert final["text"].startswith(
        "Your 2 images are ready in 12 s.\nPrompt: a portrait as an astronaut rifttami"
    )
    assert "LoRAs: rifttami (0.8)" in final["text"] and "seeds 7-8" in final["text"]
    shown = final["blocks"][0]["text"]["text"]  # the plain_text section; the fallback text is escaped
    assert "/info <image name>" in shown and "Reply /info" not in shown
    assert _actions(final) == []
    assert len(fake_slack.of("chat.postMessage")) == 1  # progress and summary in one message

    # Each picture in the job message's thread, its comment the caption /info understands.
    uploads = list(fake_slack.uploads.values())
    assert [upload.filename for upload in uploads] == ["job1-1.png", "job1-2.png"]
    for upload in uploads:
        info = fake_daemon.image_infos[upload.filename]
        assert upload.data == fake_daemon.images[upload.filename]
        assert upload.completed["channel_id"] == "C1" and upload.completed["thread_ts"] == state.message
        assert upload.completed["initial_comment"] == image_caption(info)
        assert upload.completed["initial_comment"].startswith(f"{upload.filename} - seed ")
    done = ClientState.decode(fake_daemon.client_state("job1"))
    assert done is not None and done.done and done.delivered == 2


@pytest.mark.parametrize(("text", "problem"), BAD_SERVE)
async def test_bad_flags_get_the_problem_and_the_usage(
    bot: BotHarness, fake_daemon: FakeDaemon, text: str, problem: str
) -> None:
    assert await _serve(bot, text) == f"{problem}\n\n{SERVE_USAGE}"
    assert fake_daemon.generates == []


@pytest.mark.parametrize(("text", "problem"), BAD_UPSCALE)
async def test_bad_upscale_flags_get_the_problem_and_the_usage(
    bot: BotHarness, fake_daemon: FakeDaemon, text: str, problem: str
) -> None:
    assert await _serve(bot, text, command="/upscale") == f"{problem}\n\n{UPSCALE_USAGE}"
    assert fake_daemon.generates == []


async def test_upscale_end_to_end(bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> None:
    fake_daemon.add_lora("rifttami", "U1")
    await _serve(bot, "a cat --lora rifttami --n 2 --seed 7", trigger="trig-u1")
    await _posted(fake_slack, fake_daemon, "job1")
    await fake_daemon.finish_generation("job1", count=2)
    await bot.bot.followers.wait("job1")
    for text in ("", "help"):
        assert await _serve(bot, text, command="/upscale") == UPSCALE_USAGE

    ack = await _serve(bot, "job1-2.png --upscalemethod lanczos", command="/upscale", trigger="trig-u2")
    assert ack == "Upscaling job1-2.png. It is next in the queue. Progress will appear in this channel."
    spec, _, key = fake_daemon.generates[-1]
    assert (spec.upscale_image, spec.upscale_method, key) == ("job1-2.png", "lanczos", "slack-command:trig-u2")
    state = await _posted(fake_slack, fake_daemon, "job2")
    assert fake_slack.message("C1", state.message)["text"].startswith("Upscaling job1-2.png\nWaiting in the queue")
    await fake_daemon.finish_generation("job2", count=1)
    await bot.bot.followers.wait("job2")
    final = fake_slack.message("C1", state.message)["text"]
    assert "seed 8" in final and "Upscaled from job1-2.png: 2 times, lanczos" in final
    assert [upload.filename for upload in fake_slack.uploads.values()][-1] == "job2-1.png"

    # The Upscale shortcut on the message that holds a picture: that picture, its job message in the channel.
    picture = {"type": "message", "text": "", "ts": "1700000000.000009", "files": [{"name": "job1-1.png"}]}
    assert (await bot.shortcut(blocks.UPSCALE_SHORTCUT, picture))[0] == 200
    await _posted(fake_slack, fake_daemon, "job3")
    spec, _, key = fake_daemon.generates[-1]
    assert (spec.upscale_image, spec.power, key.startswith("slack-shortcut:")) == ("job1-1.png", True, True)
    # A message without a picture, or someone else's picture, gets a sentence only the clicker sees.
    await bot.shortcut(blocks.UPSCALE_SHORTCUT, {"type": "message", "text": "lunch?"})
    await bot.shortcut(blocks.UPSCALE_SHORTCUT, picture, user="U2")
    await fake_slack.wait_for(lambda: len(fake_slack.of("chat.postEphemeral")) == 2)
    replies = sorted((call.params["user"], call.params["text"]) for call in fake_slack.of("chat.postEphemeral"))
    assert replies == [("U1", library.NO_IMAGE_NAME), ("U2", "There is no stored image job1-1.png.")]
    assert len(fake_daemon.jobs) == 3  # the refused request made no job


async def test_help_and_an_empty_serve_show_the_usage(bot: BotHarness, fake_daemon: FakeDaemon) -> None:
    for text in ("", "help"):
        assert (await _serve(bot, text)).startswith("Usage: /serve <prompt> [--lora <name>[:weight]]")
    # /distill help points to the other commands too.
    distill_help = (await bot.command("help"))[1]
    assert all(
        command in distill_help
        for command in ("/serve <prompt>", "/upscale <picture name>", "/loras", "/lora <name>", "/info", "/stats")
    )
    assert fake_daemon.generates == []


async def test_smart_punctuation_from_slack_clients_is_read_as_typed(
    bot: BotHarness, fake_daemon: FakeDaemon
) -> None:
    fake_daemon.add_lora("rifttami", "U1")
    await _serve(bot, "\u201ca cat in a hat\u201d \u2014lora rifttami:0.6 \u2014n 1")
    [(spec, _, _)] = fake_daemon.generates
    assert spec.prompt == "a cat in a hat"
    assert [(use.name, round(use.weight, 2)) for use in spec.loras] == [("rifttami", 0.6)]


async def test_the_daemons_refusal_is_the_ack(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    assert await _serve(bot, "a cat --lora nosuch") == "There is no LoRA called nosuch."
    fake_daemon.fail_submit(grpc.StatusCode.RESOURCE_EXHAUSTED, "The queue is full (20 jobs waiting).")
    assert await _serve(bot, "a cat") == "The queue is full (20 jobs waiting)."
    assert fake_slack.of("chat.postMessage") == []


async def test_a_slow_start_does_not_cost_the_3s_ack(fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> None:
    harness = await BotHarness(fake_slack, fake_daemon, settings_for(fake_slack, ack_wait=0.2)).start()
    try:
        fake_daemon.submit_gate = asyncio.Event()
        assert await _serve(harness, "a cat --adapt https://example.org/slow.png") == "Got it: starting your " + (
            "pictures. Their progress will appear in this channel."
        )
        assert len(fake_daemon.generates) == 1 and fake_slack.of("chat.postMessage") == []
        fake_daemon.submit_gate.set()
        await fake_slack.wait_for(lambda: len(fake_slack.of("chat.postMessage")) == 1)
        assert "Generating an image" in fake_slack.of("chat.postMessage")[0].params["text"]
    finally:
        await harness.close()


async def test_only_the_owner_can_cancel_a_generation(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    await _serve(bot, "a cat", user="U1")
    state = await _posted(fake_slack, fake_daemon, "job1")
    await bot.click_cancel("job1", user="U2")
    await fake_slack.wait_for(lambda: fake_slack.of("chat.postEphemeral"))
    [refusal] = fake_slack.of("chat.postEphemeral")
    assert (refusal.params["user"], refusal.params["text"]) == ("U2", blocks.NOT_OWNER)
    assert fake_daemon.cancels == [] and fake_daemon.jobs["job1"].state == pb.JOB_STATE_QUEUED

    await bot.click_cancel("job1", user="U1")
    await bot.bot.followers.wait("job1")
    assert fake_slack.message("C1", state.message)["text"] == "The generation was cancelled."
    assert fake_slack.uploads == {}


async def test_a_redelivered_serve_makes_one_job_and_one_message(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    fake_daemon.add_lora("rifttami", "U1")
    first = await _serve(bot, "a cat --lora rifttami", trigger="trig-same")
    await _posted(fake_slack, fake_daemon, "job1")
    again = await _serve(bot, "a cat --lora rifttami", trigger="trig-same")
    assert first.startswith("Generating an image with rifttami. It is next in the queue.")
    assert again == "That request is already running: generating an image with rifttami."
    await asyncio.sleep(0.05)
    assert len(fake_daemon.generates) == 2 and list(fake_daemon.jobs) == ["job1"]
    assert len(fake_slack.of("chat.postMessage")) == 1


async def test_a_restarted_bot_uploads_the_pictures_once(fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> None:
    first = await BotHarness(fake_slack, fake_daemon, settings_for(fake_slack)).start()
    try:
        await _serve(first, "a cat --n 2", channel="C3")
        posted = await _posted(fake_slack, fake_daemon, "job1")
    finally:
        await first.close()
    # The pictures are made while no bot is running.
    await fake_daemon.finish_generation("job1", count=2)

    for _ in range(2):  # a second restart finds nothing left to do
        again = await BotHarness(fake_slack, fake_daemon, settings_for(fake_slack)).start()
        try:
            await fake_slack.wait_for(
                lambda: (ClientState.decode(fake_daemon.client_state("job1")) or posted).done
            )
            await again.bot.followers.wait("job1")
        finally:
            await again.close()
    assert [upload.filename for upload in fake_slack.uploads.values()] == ["job1-1.png", "job1-2.png"]
    assert all(upload.completed["thread_ts"] == posted.message for upload in fake_slack.uploads.values())
    assert fake_slack.message("C3", posted.message)["text"].startswith("Your 2 images are ready")
    assert len(fake_slack.of("chat.postMessage")) == 1


async def test_a_bot_stopped_between_two_uploads_posts_only_the_rest(
    fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    first = await BotHarness(fake_slack, fake_daemon, settings_for(fake_slack)).start()
    try:
        await _serve(first, "a cat --n 2")
        posted = await _posted(fake_slack, fake_daemon, "job1")
    finally:
        await first.close()
    await fake_daemon.finish_generation("job1", count=2)
    # As the note reads when the bot stopped after showing the summary and uploading the first picture.
    last = fake_daemon.jobs["job1"].last_seq
    fake_daemon.jobs["job1"].client_state = ClientState(posted.chat, posted.message, last, delivered=1).encode()

    again = await BotHarness(fake_slack, fake_daemon, settings_for(fake_slack)).start()
    try:
        await fake_slack.wait_for(lambda: (ClientState.decode(fake_daemon.client_state("job1")) or posted).done)
    finally:
        await again.close()
    assert [upload.filename for upload in fake_slack.uploads.values()] == ["job1-2.png"]
    assert json.loads(fake_daemon.client_state("job1"))["delivered"] == 2


async def test_allow_lists_apply_to_every_new_command(fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> None:
    fake_daemon.add_lora("rifttami", "U2", public=True)
    settings = settings_for(fake_slack, allowed_users=frozenset({"U1"}), allowed_workspaces=frozenset({"T0TEAM"}))
    harness = await BotHarness(fake_slack, fake_daemon, settings).start()
    try:
        for command, text in (
            ("/serve", "a cat"),
            ("/info", "job1-1.png"),
            ("/loras", ""),
            ("/lora", "rifttami"),
            ("/lora", "rifttami --download"),
            ("/stats", ""),
            ("/models", ""),
        ):
            assert await harness.command(text, command=command, user="U2") == (200, blocks.NOT_ALLOWED)
            assert await harness.command(text, command=command, team="T0OTHER") == (200, blocks.NOT_ALLOWED)
        assert (await harness.command("rifttami", command="/lora", user="U1"))[1].startswith("rifttami")
    finally:
        await harness.close()
    assert fake_daemon.generates == [] and fake_slack.uploads == {}
