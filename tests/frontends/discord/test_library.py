"""/loras, /lora and its buttons, /stats, /models, /info, /upscale and the usage answers (every bad /serve and
/upscale the other bots answer with usage, too), against the shared fake daemon: every answer is ephemeral,
deferred when the daemon is asked, and escaped."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.clientstate import ClientState
from frontends.commands import SERVE_USAGE, UPSCALE_USAGE
from frontends.discord.bot import INTERNAL
from frontends.discord.platform import escape
from frontends.render import models_text
from tests.frontends.discord.fake_discord import (
    CHANNEL_ID,
    GUILD_ID,
    FakeDiscord,
    attachment,
    buttons,
    message,
    user,
)
from tests.frontends.discord.harness import Harness, settings_for
from tests.frontends.fakes import FakeDaemon
from tests.frontends.test_serve_grammar import BAD_SERVE, BAD_UPSCALE

OWNER, OTHER = "6001", "6002"


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon(platform="discord", workspace=GUILD_ID)


@pytest.fixture
async def bot(fake_discord: FakeDiscord, daemon: FakeDaemon) -> AsyncIterator[Harness]:
    harness = await Harness(fake_discord, daemon, settings_for(fake_discord)).start()
    yield harness
    await harness.close()


async def answered(bot: Harness, fake: FakeDiscord, name: str, user_id: str, prompt: str = "") -> str:
    """The deferred answer's text once the bot has written it."""
    response = await bot.command(name, user_id, **({"prompt": prompt} if prompt else {}))
    assert response["type"] == 5 and response["data"]["flags"] == 64
    token = bot.last["token"]
    return str(await fake.wait_for(lambda: fake.originals.get(token, {}).get("content"), timeout=10))


async def test_loras_lists_mine_and_public_ones_escaped(
    bot: Harness, fake_discord: FakeDiscord, daemon: FakeDaemon
) -> None:
    daemon.add_lora("rifttami", OWNER)
    daemon.loras["rifttami"].description = "**@everyone** look"
    daemon.add_lora("sharedone", OTHER, public=True)
    text = await answered(bot, fake_discord, "loras", OWNER)
    assert text.startswith(escape("Your LoRAs:\nrifttami - woman, yours, private"))
    assert "\\*\\*@\u200beveryone\\*\\* look" in text and escape("sharedone - woman, shared, public") in text


async def test_models_lists_the_base_model_and_the_configured_ones(
    bot: Harness, fake_discord: FakeDiscord, daemon: FakeDaemon
) -> None:
    daemon.models = ["dreamy"]
    text = await answered(bot, fake_discord, "models", OWNER)
    assert text == escape(models_text(pb.Status(base_model="tiny-sd", models=["dreamy"])))
    assert escape("dreamy: /serve ... --model dreamy") in text and text.startswith(escape("base: tiny-sd"))


async def test_lora_actions_and_the_owner_only_delete_buttons(
    bot: Harness, fake_discord: FakeDiscord, daemon: FakeDaemon
) -> None:
    daemon.add_lora("rifttami", OWNER)
    made_public = await answered(bot, fake_discord, "lora", OWNER, "rifttami --makepublic")
    assert made_public.startswith(escape("rifttami is public now")) and daemon.loras["rifttami"].public

    question = await answered(bot, fake_discord, "lora", OWNER, "rifttami --delete")
    assert question.startswith(escape("Delete rifttami"))
    shown = fake_discord.originals[bot.last["token"]]
    delete, keep = buttons(shown)
    assert (delete["label"], keep["label"]) == ("Delete", "Keep")

    refused = await bot.click(delete["custom_id"], OTHER, shown)
    assert refused["type"] == 4
    assert refused["data"]["content"] == escape("Only the owner of rifttami can delete it.")
    assert "rifttami" in daemon.loras

    clicked = await bot.click(delete["custom_id"], OWNER, shown)
    assert clicked["type"] == 5
    token = bot.last["token"]
    text = await fake_discord.wait_for(lambda: fake_discord.originals.get(token, {}).get("content"), timeout=10)
    assert text == escape("Deleted rifttami and its source picture.") and daemon.deleted == ["rifttami"]


async def test_download_attaches_the_file_to_the_private_answer(
    bot: Harness, fake_discord: FakeDiscord, daemon: FakeDaemon
) -> None:
    daemon.add_lora("rifttami", OWNER)
    await answered(bot, fake_discord, "lora", OWNER, "rifttami --download")
    [edit] = [post for post in fake_discord.posted if post.path.endswith("/@original") and post.files]
    assert edit.files == {"rifttami.safetensors": daemon.lora_files["rifttami"]}

    daemon.add_lora("hugeone", OWNER, size=50 * 1024 * 1024)
    too_big = await answered(bot, fake_discord, "lora", OWNER, "hugeone --download")
    assert escape("distillery lora hugeone --download") in too_big


async def test_usage_answers_come_at_once(bot: Harness, fake_discord: FakeDiscord, daemon: FakeDaemon) -> None:
    serve = await bot.command("serve", OWNER, prompt="a cat --steps none")
    assert serve["type"] == 4 and serve["data"]["content"].startswith(escape("--steps takes a whole number"))
    assert escape(SERVE_USAGE) in serve["data"]["content"]
    help_answer = await bot.command("help", OWNER)
    assert help_answer["type"] == 4 and escape("/distill image:<portrait>") in help_answer["data"]["content"]
    distill = await bot.command("distill", OWNER)
    assert distill["type"] == 4 and distill["data"]["content"].startswith(escape("Attach the portrait"))
    both = await bot.command("distill", OWNER, url="https://example.org/a.png", image=_attachment())
    assert both["type"] == 4 and both["data"]["content"].startswith(escape("Send either a photo or a link"))
    lora = await bot.command("lora", OWNER, prompt="rifttami --frobnicate")
    assert lora["type"] == 4 and lora["data"]["content"].startswith(escape("Unknown option --frobnicate."))
    info = await bot.command("info", OWNER, prompt="two pictures")
    assert info["type"] == 4 and info["data"]["content"].startswith(escape("Ask about one picture at a time."))
    not_found = await answered(bot, fake_discord, "info", OWNER, "nothing-1")
    assert not_found == escape("There is no image called nothing-1.png.")
    assert [name for name in daemon.methods() if name not in ("list_jobs",)] == ["image_info"]


@pytest.mark.parametrize(("words", "problem"), BAD_SERVE)
async def test_every_bad_serve_gets_the_problem_and_the_usage_at_once(
    bot: Harness, daemon: FakeDaemon, words: str, problem: str
) -> None:
    response = await bot.command("serve", OWNER, prompt=words)
    assert response["type"] == 4 and response["data"]["flags"] == 64
    assert response["data"]["content"] == escape(f"{problem}\n{SERVE_USAGE}")
    assert daemon.generates == []


@pytest.mark.parametrize(
    ("words", "problem"), [("", "Which picture? Give its name, such as 3f2a9c1d-1.png."), *BAD_UPSCALE]
)
async def test_every_bad_upscale_gets_the_problem_and_the_usage_at_once(
    bot: Harness, daemon: FakeDaemon, words: str, problem: str
) -> None:
    response = await bot.command("upscale", OWNER, prompt=words)
    assert response["type"] == 4 and response["data"]["flags"] == 64
    assert response["data"]["content"] == escape(f"{problem}\n{UPSCALE_USAGE}")
    assert daemon.generates == []


async def test_upscale_is_drawn_in_a_job_message_like_serve(
    bot: Harness, fake_discord: FakeDiscord, daemon: FakeDaemon
) -> None:
    daemon.add_lora("rifttami", OWNER)
    assert (await answered(bot, fake_discord, "serve", OWNER, "a cat --lora rifttami --n 2")).startswith("Drawing")
    await daemon.finish("job1")
    text = await answered(bot, fake_discord, "upscale", OWNER, "JOB1-2.png --power=1.5")
    assert text.startswith("Drawing")
    spec, _, key = daemon.generates[-1]
    assert (spec.upscale_image, spec.power_scale, key) == ("job1-2.png", 1.5, f"discord:{bot.last['id']}")
    state = ClientState.decode(await fake_discord.wait_for(lambda: daemon.client_state("job2")))
    assert state is not None
    shown = fake_discord.find(state.chat, state.message)["content"]
    assert escape("Upscaling job1-2.png") in shown
    # Another user's picture is not theirs to upscale: the daemon's sentence.
    refused = await answered(bot, fake_discord, "upscale", OTHER, "job1-1.png")
    assert refused == escape("There is no stored image job1-1.png.")
    assert len(daemon.jobs) == 2

    # The "Upscale" menu on a message with one of the pictures: that picture, at the default factor.
    picture = attachment("https://cdn.discordapp.com/attachments/1/2/job1-1.png", "job1-1.png", 100)
    posted = message(CHANNEL_ID, "job1-1.png - seed 1", user(OWNER), attachments=[picture])
    response = await bot.menu("Upscale", OWNER, posted)
    assert response["type"] == 5
    await fake_discord.wait_for(lambda: len(daemon.jobs) == 3, timeout=10)
    spec, _, _ = daemon.generates[-1]
    assert (spec.upscale_image, spec.power, spec.HasField("power_scale")) == ("job1-1.png", True, False)
    # On a message without a distillery picture, it says so and asks nothing of the daemon.
    response = await bot.menu("Upscale", OWNER, message(CHANNEL_ID, "hello", user(OTHER)))
    assert escape("That message names no picture of the distillery.") in str(response)
    assert len(daemon.jobs) == 3


async def test_image_info_on_a_message_without_a_distillery_picture(
    bot: Harness, fake_discord: FakeDiscord
) -> None:
    response = await bot.menu("Image info", OWNER, message(CHANNEL_ID, "hello", user(OTHER)))
    assert response["type"] == 5
    token = bot.last["token"]
    text = await fake_discord.wait_for(lambda: fake_discord.originals.get(token, {}).get("content"), timeout=10)
    assert text == escape("That message names no picture of the distillery.")


async def test_an_unexpected_failure_is_logged_and_the_user_told(
    bot: Harness, fake_discord: FakeDiscord, daemon: FakeDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    daemon.user_stats = broken  # type: ignore[method-assign]
    text = await answered(bot, fake_discord, "stats", OWNER)
    assert text == escape(INTERNAL)
    assert "unexpected failure: RuntimeError" in caplog.text


def _attachment() -> dict[str, object]:
    return attachment("https://cdn.discordapp.com/attachments/1/2/a.png", "a.png", 100)
