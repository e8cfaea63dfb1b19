"""/serve and /info with the real python-telegram-bot against the fake Bot API and the fake daemon.

A generation is followed like a distillation (confirmation, paced edits, Cancel for its owner, summary), then
its images come to the chat captioned with their names, which /info reads back from a reply.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.client import DaemonError
from frontends.clientstate import ClientState
from frontends.commands import SERVE_USAGE, UPSCALE_USAGE
from frontends.render import image_caption, image_info_text
from frontends.telegram.bot import HELP_TEXT, NOT_OWNER
from frontends.telegram.library import INFO_USAGE
from tests.frontends.fakes import FakeDaemon
from tests.frontends.telegram.conftest import StartBot, eventually, final_edit, reply_to
from tests.frontends.telegram.fake_bot_api import GROUP_ID, FakeBotApi, group_chat, private_chat, user
from tests.frontends.test_serve_grammar import BAD_SERVE, BAD_UPSCALE

ANN, BEN = 511, 512
FAST = {"private_edit_interval": 0.05, "group_edit_interval": 0.1}


@pytest.fixture
def daemon() -> FakeDaemon:
    daemon = FakeDaemon("telegram", "")
    daemon.add_lora("annlora", ANN)
    daemon.add_lora("benlora", BEN)
    return daemon


def generations(daemon: FakeDaemon) -> list[tuple[pb.GenerateSpec, str]]:
    return [args for name, args in daemon.calls if name == "generate"]


async def progress_message(daemon: FakeDaemon, job_id: str = "job1") -> ClientState:
    state: ClientState = await eventually(lambda: ClientState.decode(daemon.jobs[job_id].client_state))
    return state


def test_help_names_the_new_commands() -> None:
    commands = (
        "/serve <prompt>",
        "/upscale <picture name>",
        "/info",
        "/loras",
        "/lora <name>",
        "/stats",
        "/models",
        "--delete",
        "--download",
    )
    for command in commands:
        assert command in HELP_TEXT


async def test_serve_confirms_shows_progress_sends_the_images_and_summarises(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon, **FAST)
    text = '/serve "a portrait as an astronaut" --lora annlora --n 2 --seed 7 --neg blurry'
    message = bot_api.text(user(ANN), private_chat(ANN), text)
    bot_api.send(message)
    confirmation = await reply_to(bot_api, message)
    assert confirmation.text == "Generating 2 images with annlora\nWaiting in the queue: next."
    assert confirmation.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "cancel:job1"

    [(spec, key)] = generations(daemon)
    assert spec.prompt == "a portrait as an astronaut" and spec.negative_prompt == "blurry"
    assert [use.name for use in spec.loras] == ["annlora"] and spec.count == 2 and spec.seed == 7
    assert key == f"tg:{ANN}:{message['message_id']}"
    state = await progress_message(daemon)
    assert int(state.message) == confirmation.result["message_id"]

    await daemon.emit("job1", state=pb.JOB_STATE_RUNNING, stage=pb.STAGE_GENERATE)
    await daemon.emit("job1", progress=pb.Progress(step=5, total=20))
    edit = await bot_api.wait_for(lambda call: "step 5/20" in call.text)
    assert edit.text.startswith("Generating 2 images with annlora\nStage: Generating\n")
    assert "reply_markup" in edit.params  # Cancel stays while it runs
    await daemon.finish("job1")
    summary = await final_edit(bot_api, ANN, int(state.message))
    assert summary.text.startswith("Your 2 images are ready in 12 s.\nPrompt: a portrait as an astronaut annlora")
    assert "seeds 7-8" in summary.text

    group = await bot_api.wait_for(lambda call: call.method == "sendMediaGroup")
    captions = [item["caption"] for item in group.params["media"]]
    assert captions == [image_caption(daemon.image_infos[f"job1-{n}.png"]) for n in (1, 2)]
    assert captions[0].startswith("job1-1.png - seed 7 - annlora")
    assert sorted(group.files.values()) == [b"\x89PNG generated job1-1.png", b"\x89PNG generated job1-2.png"]
    # The album answers the job's message, which answers the command.
    assert group.params["reply_parameters"]["message_id"] == int(state.message)
    await eventually(lambda: (ClientState.decode(daemon.jobs["job1"].client_state) or state).done)
    assert bot_api.calls_of("sendPhoto") == [] and bot_api.calls_of("sendDocument") == []


async def test_one_image_is_a_photo_and_info_reads_its_caption(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon, **FAST)
    message = bot_api.text(user(ANN), group_chat(), "/serve@distillery_test_bot a cat in a hat")
    bot_api.send(message)
    confirmation = await reply_to(bot_api, message)
    assert confirmation.text == "Generating an image\nWaiting in the queue: next."
    await progress_message(daemon)
    await daemon.finish("job1")
    photo = await bot_api.wait_for(lambda call: call.method == "sendPhoto")
    info = daemon.image_infos["job1-1.png"]
    assert (
        photo.params["caption"] == image_caption(info) and photo.files["photo"] == b"\x89PNG generated job1-1.png"
    )
    assert photo.chat_id == GROUP_ID
    assert photo.params["reply_parameters"]["message_id"] == confirmation.result["message_id"]

    # /info as a reply to the bot's picture, and by name.
    by_reply = bot_api.text(user(ANN), group_chat(), "/info", reply_to=photo.result)
    bot_api.send(by_reply)
    assert (await reply_to(bot_api, by_reply)).text == image_info_text(info)
    by_name = bot_api.text(user(ANN), private_chat(ANN), "/info job1-1.png")
    bot_api.send(by_name)
    reply = await reply_to(bot_api, by_name)
    assert reply.text == image_info_text(info) and reply.text.startswith("job1-1.png (512x512)\na cat in a hat")

    # Someone else's picture is not theirs to read; a reply to anything else gets the usage.
    other = bot_api.text(user(BEN), group_chat(), "/info", reply_to=photo.result)
    bot_api.send(other)
    assert (await reply_to(bot_api, other)).text == "There is no image called job1-1.png."
    plain = bot_api.text(user(ANN), group_chat(), "just words")
    wrong = bot_api.text(user(ANN), group_chat(), "/info", reply_to=plain)
    bot_api.send(wrong)
    assert (await reply_to(bot_api, wrong)).text == f"Which picture?\n\n{INFO_USAGE}"


@pytest.mark.parametrize(("words", "expected"), [("", "Write what to generate."), *BAD_SERVE])
async def test_bad_flags_get_the_serve_usage(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon, words: str, expected: str
) -> None:
    await start_bot(daemon)
    message = bot_api.text(user(ANN), private_chat(ANN), f"/serve {words}")
    bot_api.send(message)
    assert (await reply_to(bot_api, message)).text == f"{expected}\n\n{SERVE_USAGE}"
    assert generations(daemon) == []


@pytest.mark.parametrize(
    ("words", "expected"), [("", "Which picture? Give its name, such as 3f2a9c1d-1.png."), *BAD_UPSCALE]
)
async def test_bad_flags_get_the_upscale_usage(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon, words: str, expected: str
) -> None:
    await start_bot(daemon)
    message = bot_api.text(user(ANN), private_chat(ANN), f"/upscale {words}")
    bot_api.send(message)
    assert (await reply_to(bot_api, message)).text == f"{expected}\n\n{UPSCALE_USAGE}"
    assert generations(daemon) == []


async def test_upscale_is_followed_and_delivered_like_serve(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon, **FAST)
    served = bot_api.text(user(ANN), private_chat(ANN), "/serve a cat --lora annlora --n 2 --seed 7")
    bot_api.send(served)
    await reply_to(bot_api, served)
    await progress_message(daemon)
    await daemon.finish("job1")
    await bot_api.wait_for(lambda call: call.method == "sendMediaGroup")

    message = bot_api.text(user(ANN), private_chat(ANN), "/upscale job1-2.png --power=1.5")
    bot_api.send(message)
    confirmation = await reply_to(bot_api, message)
    assert confirmation.text == "Upscaling job1-2.png\nWaiting in the queue: next."
    spec, key = generations(daemon)[1]
    assert (spec.upscale_image, spec.power, spec.power_scale, spec.prompt) == ("job1-2.png", True, 1.5, "")
    assert key == f"tg:{ANN}:{message['message_id']}"
    state = await progress_message(daemon, "job2")
    await daemon.finish("job2")
    summary = await final_edit(bot_api, ANN, int(state.message))
    assert summary.text.startswith("Your image is ready in 12 s.\nPrompt: a cat annlora")
    assert "seed 8" in summary.text and "Upscaled from job1-2.png: 1.5 times, latent" in summary.text
    photo = await bot_api.wait_for(lambda call: call.method == "sendPhoto" and call.result is not None)
    assert photo.params["caption"].startswith("job2-1.png - seed 8 - annlora")

    # /upscale as a reply to one of the bot's pictures takes the picture's name from its caption.
    reply = bot_api.text(user(ANN), private_chat(ANN), "/upscale --upscalemethod lanczos", reply_to=photo.result)
    bot_api.send(reply)
    await reply_to(bot_api, reply)
    spec, _ = generations(daemon)[2]
    assert (spec.upscale_image, spec.upscale_method) == ("job2-1.png", "lanczos")
    # A picture named in the words wins over the one replied to.
    named = bot_api.text(user(ANN), private_chat(ANN), "/upscale job1-1.png", reply_to=photo.result)
    bot_api.send(named)
    await reply_to(bot_api, named)
    assert generations(daemon)[3][0].upscale_image == "job1-1.png"

    # Someone else's picture does not exist for them: the daemon's sentence, as written.
    other = bot_api.text(user(BEN), private_chat(BEN), "/upscale job1-1.png")
    bot_api.send(other)
    assert (await reply_to(bot_api, other)).text == "There is no stored image job1-1.png."
    assert len(daemon.jobs) == 4


async def test_daemon_refusals_are_replied_as_written(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon)
    private = bot_api.text(user(ANN), private_chat(ANN), "/serve a portrait --lora benlora")
    bot_api.send(private)
    assert (await reply_to(bot_api, private)).text == "There is no LoRA called benlora."

    no_adapter = "--adapt is not available: this distillery has no IP-Adapter model configured."
    daemon.submit_errors.append(DaemonError(grpc.StatusCode.INVALID_ARGUMENT, no_adapter))
    adapt = bot_api.text(user(ANN), private_chat(ANN), "/serve a portrait --adapt annlora.png")
    bot_api.send(adapt)
    assert (await reply_to(bot_api, adapt)).text == no_adapter
    assert daemon.jobs == {}


async def test_only_the_owner_can_cancel_a_generation(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon, **FAST)
    message = bot_api.text(user(ANN), group_chat(), "/serve a portrait --lora annlora")
    bot_api.send(message)
    await reply_to(bot_api, message)
    state = await progress_message(daemon)
    progress = bot_api.message(GROUP_ID, int(state.message))

    bot_api.push(bot_api.press(user(BEN), progress, "cancel:job1"))
    refusal = await bot_api.wait_for(lambda call: call.method == "answerCallbackQuery")
    assert refusal.params["text"] == NOT_OWNER and "cancel" not in daemon.methods()

    bot_api.push(bot_api.press(user(ANN), progress, "cancel:job1"))
    summary = await final_edit(bot_api, GROUP_ID, int(state.message))
    assert summary.text == "The generation was cancelled."
    await asyncio.sleep(0.2)
    assert bot_api.calls_of("sendPhoto") == [] and bot_api.calls_of("sendMediaGroup") == []


async def test_a_redelivered_serve_makes_one_job_and_one_message(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    bot = await start_bot(daemon)
    message = bot_api.text(user(ANN), private_chat(ANN), "/serve a portrait --lora annlora")
    update = bot_api.send(message)
    bot_api.push(update)
    await reply_to(bot_api, message)
    await progress_message(daemon)
    await asyncio.sleep(0.5)
    assert len(daemon.jobs) == 1 and len(bot_api.calls_of("sendMessage", ANN)) == 1

    # After a restart only the daemon remembers: the same key finds the job, whose note says it is in hand.
    await bot.stop()
    await start_bot(daemon)
    bot_api.push(update)
    await eventually(lambda: len(generations(daemon)) == 2)
    await asyncio.sleep(0.8)
    assert len(daemon.jobs) == 1 and len(bot_api.calls_of("sendMessage", ANN)) == 1
    assert {key for _, key in generations(daemon)} == {f"tg:{ANN}:{message['message_id']}"}


async def test_a_restarted_bot_finishes_a_generation_and_sends_the_images_once(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    bot = await start_bot(daemon, **FAST)
    message = bot_api.text(user(ANN), private_chat(ANN), "/serve a portrait --lora annlora")
    bot_api.send(message)
    await reply_to(bot_api, message)
    await daemon.emit(
        "job1", state=pb.JOB_STATE_RUNNING, stage=pb.STAGE_GENERATE, progress=pb.Progress(step=2, total=20)
    )
    shown = await eventually(
        lambda: (s := ClientState.decode(daemon.jobs["job1"].client_state)) and s.seq == 2 and s
    )
    await bot.stop()

    await daemon.finish("job1")
    second = await start_bot(daemon, **FAST)
    summary = await final_edit(bot_api, ANN, int(shown.message))
    assert summary.text.startswith("Your image is ready in 12 s.\nPrompt: a portrait annlora")
    photo = await bot_api.wait_for(lambda call: call.method == "sendPhoto")
    assert photo.params["caption"].startswith("job1-1.png - seed 1234 - annlora")
    await eventually(lambda: (ClientState.decode(daemon.jobs["job1"].client_state) or shown).done)

    # Once more: the note says done, so a third start sends nothing again.
    await second.stop()
    await start_bot(daemon, **FAST)
    await asyncio.sleep(0.5)
    assert len(bot_api.calls_of("sendPhoto")) == 1


async def test_the_allow_lists_cover_the_new_commands(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon, allowed_users=frozenset({ANN}))
    for text in (
        "/serve a cat",
        "/upscale job1-1.png",
        "/info job1-1.png",
        "/loras",
        "/lora benlora",
        "/lora benlora --delete",
        "/stats",
        "/models",
    ):
        message = bot_api.text(user(BEN), private_chat(BEN), text)
        bot_api.send(message)
        reply = await reply_to(bot_api, message)
        assert "not allowed to use this bot" in reply.text, text
    assert [name for name in daemon.methods() if name != "list_jobs"] == []
