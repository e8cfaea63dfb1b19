"""The bot's handlers with the real python-telegram-bot against the fake Bot API and a fake daemon.

These cover what the bot decides by itself (parsing, allow-lists, file limits, which picture it takes, the
request it sends, redeliveries, the Cancel button, webhook secrets) quickly; test_end_to_end.py repeats the
user-visible paths with the real daemon.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import grpc
import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.client import OFFLINE, DaemonClient, DaemonError
from frontends.clientstate import ClientState
from frontends.commands import DISTILL_USAGE
from frontends.platform import Attachment
from frontends.render import JobView
from frontends.telegram.bot import FETCHING, HELP_TEXT, NOT_OWNER
from frontends.telegram.webhook import SECRET_HEADER
from tests.frontends.fakes import FakeDaemon
from tests.frontends.telegram.conftest import StartBot, eventually, final_edit, reply_to
from tests.frontends.telegram.fake_bot_api import BOT_USER, GROUP_ID, FakeBotApi, group_chat, private_chat, user

# PTB 22 warns when RetryAfter is built with seconds (they become a timedelta in v23).
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

ANN, BEN = 501, 502
FAST = {"private_edit_interval": 0.05, "group_edit_interval": 0.1}


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon("telegram", "")


def submits(daemon: FakeDaemon) -> list[pb.DistillSpec]:
    return [spec for name, spec in daemon.calls if name == "submit"]


async def test_start_and_help_explain_the_commands(bot_api: FakeBotApi, start_bot: StartBot) -> None:
    await start_bot(FakeDaemon("telegram", ""))
    for command in ("/start", "/help"):
        reply = await reply_to(
            bot_api, bot_api.send(bot_api.text(user(ANN), private_chat(ANN), command))["message"]
        )
        assert reply.text == HELP_TEXT
    assert "/distill <image url>" in HELP_TEXT and "/jobs" in HELP_TEXT


async def test_distill_url_confirms_edits_and_summarises(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon, **FAST)
    message = bot_api.text(
        user(ANN), private_chat(ANN), "/distill https://example.org/me.jpg --class woman --noflip"
    )
    bot_api.send(message)
    confirmation = await reply_to(bot_api, message)
    assert confirmation.text == "Distilling name1\nWaiting in the queue: next."
    assert confirmation.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "cancel:job1"

    [spec] = submits(daemon)
    assert spec.url == "https://example.org/me.jpg"
    assert spec.requester == pb.Requester(platform="telegram", user=str(ANN), chat=str(ANN))
    assert spec.subject_class == pb.SUBJECT_CLASS_WOMAN and spec.no_flip
    assert spec.idempotency_key == f"tg:{ANN}:{message['message_id']}"
    state = await eventually(lambda: ClientState.decode(daemon.jobs["job1"].client_state))
    assert (state.chat, state.bot) == (str(ANN), str(BOT_USER["id"]))
    progress_id = int(state.message)

    await daemon.emit("job1", state=pb.JOB_STATE_RUNNING, stage=pb.STAGE_CAPTION)
    await daemon.emit("job1", captioned=pb.Captioned(caption="a woman in a space suit"))
    await daemon.emit("job1", stage=pb.STAGE_TRAIN, progress=pb.Progress(step=3, total=6, eta_seconds=4))
    await bot_api.wait_for(lambda call: "step 3/6" in call.text)
    await daemon.finish("job1")
    summary = await final_edit(bot_api, ANN, progress_id)
    assert summary.text.startswith("name1 is ready in 1 min 15 s.")
    assert "Caption: a woman in a space suit" in summary.text and "name1" in summary.text

    document = await bot_api.wait_for(lambda call: call.method == "sendDocument")
    assert document.files["document"] == b"LORA" and document.chat_id == ANN
    await eventually(lambda: (ClientState.decode(daemon.jobs["job1"].client_state) or state).done)


async def test_photo_with_caption_uploads_the_largest_size(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon)
    message = bot_api.photo(user(ANN), private_chat(ANN), b"the real portrait", caption="/distill --class man")
    bot_api.send(message)
    await reply_to(bot_api, message)
    [spec] = submits(daemon)
    assert spec.upload and spec.subject_class == pb.SUBJECT_CLASS_MAN
    assert daemon.uploads == [b"the real portrait"]


async def test_reply_to_a_photo_and_image_documents_in_groups(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon)
    photo = bot_api.photo(user(BEN), group_chat(), b"ben's portrait")
    command = bot_api.text(user(ANN), group_chat(), "/distill@distillery_test_bot", reply_to=photo)
    bot_api.send(command)
    await reply_to(bot_api, command)

    document = bot_api.document(user(ANN), group_chat(), b"a png file", caption="/distill@distillery_test_bot")
    bot_api.send(document)
    await reply_to(bot_api, document)
    assert daemon.uploads == [b"ben's portrait", b"a png file"]
    assert [spec.requester.chat for spec in submits(daemon)] == [str(GROUP_ID)] * 2

    # Addressed to another bot in the same group: not ours to answer.
    other = bot_api.document(user(ANN), group_chat(), b"x", caption="/distill@some_other_bot")
    bot_api.send(other)
    await asyncio.sleep(0.5)
    assert len(submits(daemon)) == 2
    assert not any(
        call.params.get("reply_parameters", {}).get("message_id") == other["message_id"]
        for call in bot_api.calls_of("sendMessage")
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/distill", "Send an image link, or a photo with the caption /distill."),
        ("/distill https://example.org/a.jpg --colour red", "Unknown option --colour."),
        ("/distill https://example.org/a.jpg --class dog", "--class takes man, woman or person, not 'dog'."),
        ("/distill ftp://example.org/a.jpg", "The image link must start with http:// or https://."),
    ],
)
async def test_usage_errors_get_the_usage_text(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon, text: str, expected: str
) -> None:
    await start_bot(daemon)
    message = bot_api.text(user(ANN), private_chat(ANN), text)
    bot_api.send(message)
    reply = await reply_to(bot_api, message)
    assert reply.text == f"{expected}\n\n{DISTILL_USAGE}"
    assert submits(daemon) == []


async def test_a_photo_with_flags_and_a_link_is_a_usage_error(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon)
    message = bot_api.photo(user(ANN), private_chat(ANN), b"x", caption="/distill https://example.org/a.jpg")
    bot_api.send(message)
    reply = await reply_to(bot_api, message)
    assert reply.text.startswith("Send either a photo or a link, not both.")


async def test_allow_lists_refuse_others_and_name_their_ids(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon, allowed_users=frozenset({ANN}), allowed_chats=frozenset({GROUP_ID}))
    refused = bot_api.text(user(BEN), private_chat(BEN), "/distill https://example.org/a.jpg")
    bot_api.send(refused)
    reply = await reply_to(bot_api, refused)
    assert "not allowed to use this bot" in reply.text and str(BEN) in reply.text
    jobs = bot_api.text(user(BEN), private_chat(BEN), "/jobs")
    bot_api.send(jobs)
    assert "not allowed" in (await reply_to(bot_api, jobs)).text
    assert submits(daemon) == []

    # Listed user anywhere, and anyone in a listed group.
    for sender, chat in ((user(ANN), private_chat(ANN)), (user(BEN), group_chat())):
        allowed = bot_api.text(sender, chat, "/distill https://example.org/a.jpg")
        bot_api.send(allowed)
        assert (await reply_to(bot_api, allowed)).text.startswith("Distilling")
    assert len(submits(daemon)) == 2


async def test_files_over_20_mb_are_refused_before_downloading(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon)
    big = bot_api.document(user(ANN), private_chat(ANN), b"small stand-in", caption="/distill", size=25 * 2**20)
    bot_api.send(big)
    reply = await reply_to(bot_api, big)
    assert reply.text.startswith("That file is 25.0 MB; Telegram lets bots download files of at most 20 MB.")
    assert bot_api.calls_of("getFile") == [] and submits(daemon) == []

    # A size Telegram did not put in the message: getFile's own "file is too big" gets the same answer.
    photo = bot_api.photo(user(ANN), private_chat(ANN), b"x", caption="/distill", size=21 * 2**20)
    photo["photo"][-1].pop("file_size")
    bot_api.send(photo)
    reply = await reply_to(bot_api, photo)
    assert "at most 20 MB" in reply.text and submits(daemon) == []


async def test_daemon_errors_are_replied_as_written(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon)
    full = "The queue is full (20 jobs waiting); try again later."
    daemon.submit_errors.append(DaemonError(grpc.StatusCode.RESOURCE_EXHAUSTED, full))
    message = bot_api.text(user(ANN), private_chat(ANN), "/distill https://example.org/a.jpg")
    bot_api.send(message)
    assert (await reply_to(bot_api, message)).text == full


async def test_an_offline_daemon_is_reported(bot_api: FakeBotApi, start_bot: StartBot, tmp_path: Path) -> None:
    client = DaemonClient(f"unix:{tmp_path / 'nobody-listens.sock'}")
    try:
        await start_bot(client)
        message = bot_api.text(user(ANN), private_chat(ANN), "/distill https://example.org/a.jpg")
        bot_api.send(message)
        assert (await reply_to(bot_api, message)).text == OFFLINE == "The trainer is offline; try again later."
        jobs = bot_api.text(user(ANN), private_chat(ANN), "/jobs")
        bot_api.send(jobs)
        assert (await reply_to(bot_api, jobs)).text == OFFLINE
    finally:
        await client.close()


async def test_a_redelivered_update_makes_one_job_and_one_message(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    bot = await start_bot(daemon)
    message = bot_api.text(user(ANN), private_chat(ANN), "/distill https://example.org/a.jpg")
    update = bot_api.send(message)
    bot_api.push(update)  # Telegram delivers it again (the bot had not confirmed it yet)
    await reply_to(bot_api, message)
    await asyncio.sleep(0.5)
    assert len(daemon.jobs) == 1 and len(bot_api.calls_of("sendMessage", ANN)) == 1

    # After a restart the bot has forgotten the update, but the daemon has not: still one job, one message.
    await bot.stop()
    await start_bot(daemon)
    bot_api.push(update)
    await asyncio.sleep(0.8)  # time for a (wrong) second confirmation to show up
    assert len(daemon.jobs) == 1 and len(bot_api.calls_of("sendMessage", ANN)) == 1
    assert [spec.idempotency_key for spec in submits(daemon)] == [f"tg:{ANN}:{message['message_id']}"] * 2


async def test_cancel_button_works_for_the_owner_only(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon, **FAST)
    message = bot_api.text(user(ANN), group_chat(), "/distill https://example.org/a.jpg")
    bot_api.send(message)
    await reply_to(bot_api, message)
    state = await eventually(lambda: ClientState.decode(daemon.jobs["job1"].client_state))
    progress = bot_api.message(GROUP_ID, int(state.message))

    bot_api.push(bot_api.press(user(BEN), progress, "cancel:job1"))
    refusal = await bot_api.wait_for(lambda call: call.method == "answerCallbackQuery")
    assert refusal.params["text"] == NOT_OWNER and refusal.params["show_alert"] in (True, "true", "True")
    assert "cancel" not in daemon.methods()

    # A message without the reply (e.g. the /distill was deleted): the daemon's NOT_FOUND refuses as well.
    orphan = {key: value for key, value in progress.items() if key != "reply_to_message"}
    bot_api.push(bot_api.press(user(BEN), orphan, "cancel:job1"))
    await bot_api.wait_for(lambda call: len(bot_api.calls_of("answerCallbackQuery")) == 2)
    assert bot_api.calls_of("answerCallbackQuery")[1].params["text"] == NOT_OWNER
    assert daemon.jobs["job1"].state == pb.JOB_STATE_QUEUED

    bot_api.push(bot_api.press(user(ANN), progress, "cancel:job1"))
    await bot_api.wait_for(lambda call: call.method == "answerCallbackQuery" and call.params["text"] != NOT_OWNER)
    summary = await final_edit(bot_api, GROUP_ID, int(state.message))
    assert summary.text == "name1 was cancelled."
    assert daemon.jobs["job1"].state == pb.JOB_STATE_CANCELLED


async def test_jobs_lists_the_users_jobs(bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon) -> None:
    await start_bot(daemon)
    empty = bot_api.text(user(ANN), private_chat(ANN), "/jobs")
    bot_api.send(empty)
    assert (await reply_to(bot_api, empty)).text.startswith("You have no jobs yet.")
    await daemon.submit(DaemonClient.spec(pb.Requester(platform="telegram", user=str(ANN)), url="https://x/y"))
    await daemon.finish("job1", pb.JOB_STATE_FAILED, "The image link answered HTTP 404.")
    listed = bot_api.text(user(ANN), private_chat(ANN), "/jobs")
    bot_api.send(listed)
    reply = await reply_to(bot_api, listed)
    assert reply.text == "Your jobs:\nname1: failed - The image link answered HTTP 404."


async def one_preview(view: JobView) -> Attachment:
    return Attachment("preview.png", b"PNG preview of " + view.lora_name.encode())


async def test_a_preview_is_sent_when_there_is_one(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon, preview=one_preview, send_lora_file=False, **FAST)
    message = bot_api.text(user(ANN), private_chat(ANN), "/distill https://example.org/a.jpg")
    bot_api.send(message)
    await reply_to(bot_api, message)
    await daemon.finish("job1")
    photo = await bot_api.wait_for(lambda call: call.method == "sendPhoto")
    assert photo.files["photo"] == b"PNG preview of name1" and photo.chat_id == ANN
    assert bot_api.calls_of("sendDocument") == []


async def test_a_bot_restart_reattaches_from_the_last_event_shown(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    bot = await start_bot(daemon, **FAST)
    message = bot_api.text(user(ANN), private_chat(ANN), "/distill https://example.org/a.jpg")
    bot_api.send(message)
    await reply_to(bot_api, message)
    await daemon.emit(
        "job1", state=pb.JOB_STATE_RUNNING, stage=pb.STAGE_TRAIN, progress=pb.Progress(step=1, total=6)
    )
    await bot_api.wait_for(lambda call: "step 1/6" in call.text)
    shown = await eventually(
        lambda: (s := ClientState.decode(daemon.jobs["job1"].client_state)) and s.seq == 2 and s
    )
    await bot.stop()
    assert not shown.done

    # While the bot is down the job ends; the new bot still turns the message into the summary.
    await daemon.finish("job1")
    await start_bot(daemon, **FAST)
    summary = await final_edit(bot_api, ANN, int(shown.message))
    assert summary.text.startswith("name1 is ready in 1 min 15 s.")
    await bot_api.wait_for(lambda call: call.method == "sendDocument")
    watches = [args for name, args in daemon.calls if name == "watch"]
    assert watches[-1] == ("job1", pb.Requester(platform="telegram"), 2)


async def test_webhook_checks_the_secret_token(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    bot = await start_bot(
        daemon,
        webhook_url="https://bot.example.org/telegram",
        webhook_secret="s3cret-token",
        webhook_port=0,
    )
    assert bot.webhook is not None
    registered = bot_api.calls_of("setWebhook")[-1]
    assert registered.params["url"] == "https://bot.example.org/telegram"
    assert registered.params["secret_token"] == "s3cret-token"
    url = f"http://127.0.0.1:{bot.webhook.port}/telegram"
    distill = bot_api.update_for(bot_api.text(user(ANN), private_chat(ANN), "/distill https://example.org/a.jpg"))
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {SECRET_HEADER: "wrong"}):
            async with session.post(url, json=distill, headers=headers) as response:
                assert response.status == 403
        await asyncio.sleep(0.3)
        assert submits(daemon) == [] and bot_api.calls_of("sendMessage") == []

        async with session.post(url, json=distill, headers={SECRET_HEADER: "s3cret-token"}) as response:
            assert response.status == 200
        await reply_to(bot_api, distill["message"])
        assert len(submits(daemon)) == 1
        async with session.post(url, data=b"not json", headers={SECRET_HEADER: "s3cret-token"}) as response:
            assert response.status == 400


async def test_telegrams_retry_after_is_honoured(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon, **FAST)
    message = bot_api.text(user(ANN), private_chat(ANN), "/distill https://example.org/a.jpg")
    bot_api.send(message)
    progress_id = (await reply_to(bot_api, message)).result["message_id"]
    bot_api.fail("editMessageText", 429, "Too Many Requests: retry after 1", retry_after=1)
    await daemon.emit("job1", state=pb.JOB_STATE_RUNNING, stage=pb.STAGE_CAPTION)
    await bot_api.wait_for(lambda call: call.method == "editMessageText")
    await daemon.finish("job1")
    summary = await final_edit(bot_api, ANN, progress_id)
    refused, *shown = bot_api.calls_of("editMessageText", ANN)
    assert refused.result is None and shown[0].result is not None
    assert shown[0].at - refused.at >= 0.95  # waited out retry_after before editing again
    assert summary.text.startswith("name1 is ready")


async def test_a_slow_link_gets_a_placeholder_that_becomes_the_progress_message(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon, **FAST)
    # The daemon does not answer until the test says so; the chat hears from the bot meanwhile.
    daemon.submit_gate = asyncio.Event()
    message = bot_api.text(user(ANN), private_chat(ANN), "/distill https://slow.example.org/a.jpg")
    bot_api.send(message)
    placeholder = await reply_to(bot_api, message)
    assert placeholder.text == FETCHING
    progress_id = placeholder.result["message_id"]
    daemon.submit_gate.set()
    confirmed = await bot_api.wait_for(lambda call: call.method == "editMessageText")
    assert confirmed.text == "Distilling name1\nWaiting in the queue: next."
    assert confirmed.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "cancel:job1"
    state = await eventually(lambda: ClientState.decode(daemon.jobs["job1"].client_state))
    assert int(state.message) == progress_id
    await daemon.finish("job1")
    assert (await final_edit(bot_api, ANN, progress_id)).text.startswith("name1 is ready")
    assert len(bot_api.calls_of("sendMessage", ANN)) == 1


async def test_a_slow_failure_is_written_into_the_placeholder(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon
) -> None:
    await start_bot(daemon)
    daemon.submit_gate = asyncio.Event()
    daemon.submit_errors.append(
        DaemonError(grpc.StatusCode.INVALID_ARGUMENT, "The image link did not answer in time.")
    )
    message = bot_api.text(user(ANN), private_chat(ANN), "/distill https://slow.example.org/a.jpg")
    bot_api.send(message)
    placeholder = await reply_to(bot_api, message)
    daemon.submit_gate.set()
    edited = await bot_api.wait_for(lambda call: call.method == "editMessageText")
    assert int(edited.params["message_id"]) == placeholder.result["message_id"]
    assert edited.text == "The image link did not answer in time."
    await asyncio.sleep(0.2)
    assert len(bot_api.calls_of("sendMessage", ANN)) == 1
