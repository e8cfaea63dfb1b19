"""/info, /loras, /lora (showing, the owner's actions, delete with its buttons, download) and /stats through
real slack-bolt over signed HTTP, with the fake daemon behind the bot."""

from __future__ import annotations

import asyncio

import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.actions import delete_question
from frontends.client import OFFLINE
from frontends.render import image_info_text, lora_text, loras_text, models_text, stats_text
from frontends.slack import blocks, library
from frontends.slack.daemon import slack_requester
from tests.frontends.fakes import FakeDaemon
from tests.frontends.slack.fake_slack_api import TEAM, FakeSlack
from tests.frontends.slack.harness import BotHarness, shown_text


def _user(user: str) -> pb.Requester:
    return slack_requester(TEAM, user, "C1")


async def _ask(bot: BotHarness, command: str, text: str = "", user: str = "U1") -> str:
    status, ack = await bot.command(text, command=command, user=user)
    assert status == 200
    return ack


async def _generated(fake_daemon: FakeDaemon, user: str = "U1") -> pb.ImageInfo:
    events = fake_daemon.generate(pb.GenerateSpec(prompt="a cat"), _user(user))
    accepted = await anext(events)
    await events.aclose()
    await fake_daemon.finish_generation(accepted.job_id, count=1)
    return fake_daemon.image_infos[f"{accepted.job_id}-1.png"]


async def test_info_tells_how_a_picture_was_made(bot: BotHarness, fake_daemon: FakeDaemon) -> None:
    info = await _generated(fake_daemon)
    assert await _ask(bot, "/info", info.name) == image_info_text(info)
    assert await _ask(bot, "/info", info.name.removesuffix(".png")) == image_info_text(info)
    # Someone else's picture is as unknown as one that does not exist.
    assert await _ask(bot, "/info", info.name, user="U2") == f"There is no image called {info.name}."
    assert await _ask(bot, "/info") == library.INFO_USAGE


async def test_the_image_info_shortcut_reads_the_name_from_the_message(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    info = await _generated(fake_daemon)
    message = {"type": "message", "text": "", "ts": "1700000000.000009", "files": [{"name": info.name}]}
    assert (await bot.shortcut(blocks.INFO_SHORTCUT, message))[0] == 200
    await fake_slack.wait_for(lambda: fake_slack.of("chat.postEphemeral"))
    # The caption as a comment works too; a message naming no picture gets a sentence.
    await bot.shortcut(blocks.INFO_SHORTCUT, {"type": "message", "text": f"{info.name} - seed 1234"})
    await bot.shortcut(blocks.INFO_SHORTCUT, {"type": "message", "text": "lunch?"})
    await fake_slack.wait_for(lambda: len(fake_slack.of("chat.postEphemeral")) == 3)
    replies = [call.params for call in fake_slack.of("chat.postEphemeral")]
    assert all(reply["user"] == "U1" and reply["channel"] == "C1" for reply in replies)
    assert sorted(reply["text"] for reply in replies) == sorted(
        [image_info_text(info), image_info_text(info), library.NO_IMAGE_NAME]
    )


async def test_loras_lists_the_users_and_the_public_ones(bot: BotHarness, fake_daemon: FakeDaemon) -> None:
    assert (await _ask(bot, "/loras")).startswith("No LoRAs yet.")
    mine = fake_daemon.add_lora("rifttami", "U1")
    shared = fake_daemon.add_lora("zorblat", "U2", public=True)
    fake_daemon.add_lora("hidden", "U3")
    ack = await _ask(bot, "/loras")
    assert ack == loras_text([mine, shared], _user("U1"))
    assert "rifttami" in ack and "zorblat" in ack and "hidden" not in ack


async def test_lora_shows_the_details(bot: BotHarness, fake_daemon: FakeDaemon) -> None:
    lora = fake_daemon.add_lora("rifttami", "U1")
    assert await _ask(bot, "/lora", "RiftTami") == lora_text(lora, _user("U1"))
    assert "Owner: you; private" in await _ask(bot, "/lora", "rifttami")
    assert await _ask(bot, "/lora", "rifttami", user="U2") == "There is no LoRA called rifttami."
    assert (await _ask(bot, "/lora")).startswith("Usage: /lora <name>")
    bad = await _ask(bot, "/lora", "rifttami --makefamous")
    assert bad.startswith("Unknown option --makefamous.\n\nUsage: /lora <name>")


@pytest.mark.parametrize(
    ("words", "field", "value", "answer"),
    [
        ("--makepublic", "public", True, "rifttami is public now: everyone here can use it with --lora rifttami."),
        ("--makeprivate", "public", False, "rifttami is private now: only you can use it."),
        (
            "--showimage",
            "show_image",
            True,
            "Others can see the source picture of rifttami once you make it public.",
        ),
        ("--hideimage", "show_image", False, "Only you can see the source picture of rifttami now."),
        (
            '--description "my best one"',
            "description",
            "my best one",
            "The description of rifttami is now: my best one",
        ),
        ("--description", "description", "", "rifttami has no description now."),
    ],
)
async def test_the_owners_actions(
    bot: BotHarness, fake_daemon: FakeDaemon, words: str, field: str, value: object, answer: str
) -> None:
    lora = fake_daemon.add_lora("rifttami", "U1", public=not value if field == "public" else False)
    lora.description = "old words"
    assert await _ask(bot, "/lora", f"rifttami {words}") == answer
    [(name, request)] = fake_daemon.updates
    assert name == "rifttami" and request.requester.user == "U1"
    assert request.HasField(field) and getattr(request, field) == value
    # Only the one setting asked for is sent.
    assert [other for other in ("public", "description", "show_image") if request.HasField(other)] == [field]
    assert getattr(fake_daemon.loras["rifttami"], field) == value


async def test_others_cannot_change_a_public_lora(bot: BotHarness, fake_daemon: FakeDaemon) -> None:
    fake_daemon.add_lora("zorblat", "U2", public=True)
    assert await _ask(bot, "/lora", "zorblat --makeprivate") == "Only the owner of zorblat can change it."
    assert fake_daemon.loras["zorblat"].public


async def test_delete_asks_first_and_only_the_owner_answers(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    fake_daemon.add_lora("rifttami", "U1")
    fake_daemon.add_lora("zorblat", "U2", public=True)
    assert await _ask(bot, "/lora", "zorblat --delete") == "Only the owner of zorblat can delete it."

    status, ack = await bot.ack_of("rifttami --delete", command="/lora", user="U1")
    assert status == 200 and shown_text(ack) == delete_question("rifttami")
    assert ack.get("response_type", "ephemeral") == "ephemeral"
    [question, actions] = ack["blocks"]
    assert question["text"] == {"type": "plain_text", "text": delete_question("rifttami"), "emoji": False}
    buttons = {button["action_id"]: button["value"] for button in actions["elements"]}
    assert buttons == {blocks.DELETE_ACTION: "U1:rifttami", blocks.KEEP_ACTION: "U1:rifttami"}
    assert "rifttami" in fake_daemon.loras  # nothing happens before a click

    # Keep: the question is answered and nothing is deleted.
    await bot.click(blocks.KEEP_ACTION, "U1:rifttami", user="U1")
    await fake_slack.wait_for(lambda: fake_slack.responses)
    assert (shown_text(fake_slack.responses[-1]), fake_slack.responses[-1]["replace_original"]) == (
        "Kept rifttami.",
        True,
    )
    assert fake_daemon.deleted == []

    # Someone else's click (the question is the owner's) is refused.
    await bot.click(blocks.DELETE_ACTION, "U1:rifttami", user="U2")
    await fake_slack.wait_for(lambda: fake_slack.of("chat.postEphemeral"))
    [refusal] = fake_slack.of("chat.postEphemeral")
    assert (refusal.params["user"], refusal.params["text"]) == ("U2", "Only the owner of rifttami can delete it.")
    assert fake_daemon.deleted == []

    await bot.click(blocks.DELETE_ACTION, "U1:rifttami", user="U1")
    await fake_slack.wait_for(lambda: len(fake_slack.responses) == 2)
    assert shown_text(fake_slack.responses[-1]) == "Deleted rifttami and its source picture."
    assert fake_daemon.deleted == ["rifttami"] and "rifttami" not in fake_daemon.loras


async def test_download_uploads_the_file_to_the_users_dm(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    fake_daemon.add_lora("rifttami", "U1", size=3_000_000)
    ack = await _ask(bot, "/lora", "rifttami --download", user="U1")
    assert ack == "Sending rifttami.safetensors (3.0 MB) to you in a direct message."
    await fake_slack.wait_for(lambda: any(upload.completed for upload in fake_slack.uploads.values()))
    [upload] = fake_slack.uploads.values()
    assert upload.filename == "rifttami.safetensors" and upload.data == fake_daemon.lora_files["rifttami"]
    assert upload.completed["channel_id"] == "D1"  # never the channel: a private LoRA stays private
    assert "write rifttami in the prompt" in upload.completed["initial_comment"]


async def test_a_lora_too_large_for_slack_points_to_the_cli(
    bot: BotHarness, fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    fake_daemon.add_lora("rifttami", "U1").size_bytes = bot.settings.max_upload_bytes + 1
    ack = await _ask(bot, "/lora", "rifttami --download")
    assert ack.startswith("rifttami.safetensors is 200 MB; the bot can send files of at most 200 MB here.")
    assert ack.endswith("distillery lora rifttami --download")
    await asyncio.sleep(0.05)
    assert fake_slack.uploads == {}


async def test_stats(bot: BotHarness, fake_daemon: FakeDaemon) -> None:
    fake_daemon.add_lora("rifttami", "U1", public=True)
    fake_daemon.add_lora("zorblat", "U1")
    await _generated(fake_daemon, "U1")
    ack = await _ask(bot, "/stats")
    assert ack == stats_text(
        pb.UserStats(loras_owned=2, public_loras=1, distill_jobs=0, generate_jobs=1, images_generated=1)
    )
    assert ack.startswith("LoRAs: 2 (1 public)")


async def test_models(bot: BotHarness, fake_daemon: FakeDaemon) -> None:
    fake_daemon.models = ["dreamy"]
    ack = await _ask(bot, "/models")
    assert ack == models_text(pb.Status(base_model="tiny-sd", models=["dreamy"]))
    assert ack.splitlines() == [
        "base: tiny-sd (the default, and what training uses)",
        "dreamy: /serve ... --model dreamy",
    ]


async def test_daemon_offline(bot: BotHarness, fake_daemon: FakeDaemon) -> None:
    fake_daemon.offline = True
    for command, text in (
        ("/loras", ""),
        ("/lora", "rifttami"),
        ("/info", "a-1.png"),
        ("/stats", ""),
        ("/models", ""),
    ):
        assert await _ask(bot, command, text) == OFFLINE
    assert await _ask(bot, "/serve", "a cat") == OFFLINE
