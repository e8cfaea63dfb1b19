"""/loras, /lora (showing, the owner's changes, delete with confirmation, download), /stats and /models, through
the real python-telegram-bot against the fake Bot API and the fake daemon."""

from __future__ import annotations

import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.actions import too_big_text
from frontends.commands import LORA_USAGE
from frontends.render import lora_text, loras_text, models_text, stats_text
from frontends.telegram.library import NOT_LORA_OWNER, fit
from frontends.telegram.platform import requester
from frontends.telegram.settings import UPLOAD_LIMIT
from tests.frontends.fakes import FakeDaemon
from tests.frontends.telegram.conftest import StartBot, reply_to
from tests.frontends.telegram.fake_bot_api import GROUP_ID, FakeBotApi, group_chat, private_chat, user

ANN, BEN = 521, 522


@pytest.fixture
def daemon() -> FakeDaemon:
    daemon = FakeDaemon("telegram", "")
    daemon.add_lora("annlora", ANN)
    daemon.add_lora("benpub", BEN, public=True)
    daemon.add_lora("benpriv", BEN)
    return daemon


async def ask(api: FakeBotApi, text: str, sender: int = ANN, chat: dict[str, object] | None = None) -> str:
    message = api.text(user(sender), chat or private_chat(sender), text)
    api.send(message)
    return (await reply_to(api, message)).text


async def test_loras_lists_own_then_public_ones(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon)
    text = await ask(bot_api, "/loras")
    who = requester(ANN, ANN)
    assert text == loras_text([daemon.loras["annlora"], daemon.loras["benpub"]], who)
    assert text.startswith("Your LoRAs:\nannlora - woman, yours, private\nPublic LoRAs:\nbenpub")
    assert "benpriv" not in text
    assert ("list_loras", (who, True)) in daemon.calls


def test_a_long_list_is_cut_at_a_line_to_fit_one_message() -> None:
    text = "\n".join(f"lora{n:04d} - person, shared, public" for n in range(400))
    cut = fit(text)
    assert len(cut) <= 4096 and cut.endswith("\n…") and cut.split("\n")[-2].startswith("lora")


async def test_lora_shows_details_and_hides_others_private_ones(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon)
    assert await ask(bot_api, "/lora annlora") == lora_text(daemon.loras["annlora"], requester(ANN, ANN))
    assert await ask(bot_api, "/lora BenPub.safetensors") == lora_text(daemon.loras["benpub"], requester(ANN))
    assert await ask(bot_api, "/lora benpriv") == "There is no LoRA called benpriv."
    assert await ask(bot_api, "/lora") == f"Name the LoRA.\n\n{LORA_USAGE}"
    assert await ask(bot_api, "/lora annlora --rename x") == f"Unknown option --rename.\n\n{LORA_USAGE}"


@pytest.mark.parametrize(
    ("option", "expected", "change"),
    [
        (
            "--makepublic",
            "annlora is public now: everyone here can use it with --lora annlora.",
            (True, None, None),
        ),
        ("--makeprivate", "annlora is private now: only you can use it.", (False, None, None)),
        (
            "--showimage",
            "Others can see the source picture of annlora once you make it public.",
            (None, None, True),
        ),
        ("--hideimage", "Only you can see the source picture of annlora now.", (None, None, False)),
        (
            '--description "me, in 2024"',
            "The description of annlora is now: me, in 2024",
            (None, "me, in 2024", None),
        ),
        ("--description", "annlora has no description now.", (None, "", None)),
    ],
)
async def test_owner_changes_are_sent_and_confirmed(
    bot_api: FakeBotApi,
    start_bot: StartBot,
    daemon: FakeDaemon,
    option: str,
    expected: str,
    change: tuple[bool | None, str | None, bool | None],
) -> None:
    await start_bot(daemon)
    assert await ask(bot_api, f"/lora annlora {option}") == expected
    assert [args for name, args in daemon.calls if name == "update_lora"] == [("annlora", *change)]


async def test_changing_someone_elses_lora_gets_the_daemons_refusal(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon)
    assert await ask(bot_api, "/lora benpub --makeprivate") == "Only the owner of benpub can change it."
    assert daemon.loras["benpub"].public


async def test_delete_asks_first_and_only_the_owner_answers(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon)
    command = bot_api.text(user(ANN), group_chat(), "/lora annlora --delete")
    bot_api.send(command)
    question = await reply_to(bot_api, command)
    assert question.text.startswith("Delete annlora and its source picture for good?")
    buttons = question.params["reply_markup"]["inline_keyboard"][0]
    assert [(b["text"], b["callback_data"]) for b in buttons] == [
        ("Delete", "lora-delete:annlora"),
        ("Keep", "lora-keep:annlora"),
    ]
    asked = bot_api.message(GROUP_ID, question.result["message_id"])

    # Someone else in the group cannot press either button.
    for data in ("lora-delete:annlora", "lora-keep:annlora"):
        bot_api.push(bot_api.press(user(BEN), asked, data))
    await bot_api.wait_for(lambda call: len(bot_api.calls_of("answerCallbackQuery")) == 2)
    assert {call.params["text"] for call in bot_api.calls_of("answerCallbackQuery")} == {NOT_LORA_OWNER}
    assert "annlora" in daemon.loras and "delete_lora" not in daemon.methods()

    # Keep: the question is answered and nothing is deleted.
    bot_api.push(bot_api.press(user(ANN), asked, "lora-keep:annlora"))
    kept = await bot_api.wait_for(lambda call: call.method == "editMessageText")
    assert kept.text == "Kept annlora." and "reply_markup" not in kept.params
    assert "annlora" in daemon.loras and "delete_lora" not in daemon.methods()

    # Asked again, Delete deletes.
    again = bot_api.text(user(ANN), group_chat(), "/lora annlora --delete")
    bot_api.send(again)
    second = await reply_to(bot_api, again)
    bot_api.push(
        bot_api.press(user(ANN), bot_api.message(GROUP_ID, second.result["message_id"]), "lora-delete:annlora")
    )
    deleted = await bot_api.wait_for(
        lambda call: call.method == "editMessageText" and call.text != "Kept annlora."
    )
    assert deleted.text == "Deleted annlora and its source picture."
    assert "annlora" not in daemon.loras
    assert ("delete_lora", ("annlora", requester(ANN, GROUP_ID))) in daemon.calls


async def test_delete_of_someone_elses_lora_is_refused_before_asking(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon)
    assert await ask(bot_api, "/lora benpub --delete") == "Only the owner of benpub can delete it."
    assert await ask(bot_api, "/lora benpriv --delete") == "There is no LoRA called benpriv."
    assert "benpub" in daemon.loras and "delete_lora" not in daemon.methods()


async def test_download_sends_the_file_or_explains_the_upload_limit(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    big = daemon.add_lora("biglora", ANN, size=60 * 1024 * 1024)
    await start_bot(daemon)
    message = bot_api.text(user(ANN), private_chat(ANN), "/lora annlora --download")
    bot_api.send(message)
    document = await bot_api.wait_for(lambda call: call.method == "sendDocument")
    assert document.files["document"] == daemon.lora_files["annlora"] and document.chat_id == ANN
    assert document.filenames["document"] == "annlora.safetensors"
    assert document.params["reply_parameters"]["message_id"] == message["message_id"]

    text = await ask(bot_api, "/lora biglora --download")
    assert text == too_big_text(big, UPLOAD_LIMIT)
    assert "60 MB" in text and "at most 50 MB" in text and text.endswith("distillery lora biglora --download")
    assert [args[0] for name, args in daemon.calls if name == "download_lora"] == ["annlora"]


async def test_stats_reports_the_users_numbers(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    daemon.loras["annlora"].public = True
    await start_bot(daemon)
    generations = daemon.generate(pb.GenerateSpec(prompt="a cat", count=3), requester(ANN))
    accepted = await anext(generations)
    await daemon.finish(accepted.job_id)
    await generations.aclose()
    text = await ask(bot_api, "/stats")
    expected = pb.UserStats(loras_owned=1, public_loras=1, generate_jobs=1, images_generated=3)
    assert text == stats_text(expected) == "LoRAs: 1 (1 public)\nDistill jobs: 0\nGenerations: 1, 3 images"


async def test_models_lists_the_base_model_and_the_configured_ones(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    daemon.models = ["dreamy", "inkwash"]
    await start_bot(daemon)
    text = await ask(bot_api, "/models")
    assert text == models_text(pb.Status(base_model="tiny-sd", models=["dreamy", "inkwash"]))
    assert text.splitlines() == [
        "base: tiny-sd (the default, and what training uses)",
        "dreamy: /serve ... --model dreamy",
        "inkwash: /serve ... --model inkwash",
    ]
