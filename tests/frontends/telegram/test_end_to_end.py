"""End to end: the real bot (python-telegram-bot on the fake Bot API) and the real daemon on the demo preset.

One daemon serves the whole module. Each way to send /distill runs to a finished LoRA and the recorded calls
show the confirmation, paced progress edits of that one message, and the summary; each user mistake the daemon
judges gets its sentence back; a redelivered update makes one job; Cancel works for the owner only.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from distillery.v1 import distillery_pb2 as pb
from PIL import Image

from daemon.pipeline.image import NOT_AN_IMAGE
from frontends.client import DaemonClient
from frontends.follow import OFFLINE_NOTE
from frontends.render import FINISHED_STATES
from frontends.telegram.bot import NOT_OWNER, DistilleryBot
from frontends.telegram.platform import requester
from tests.daemon_process import start_daemon
from tests.frontends.telegram.conftest import StartBot, answer, eventually, final_edit, reply_to
from tests.frontends.telegram.fake_bot_api import GROUP_ID, Call, FakeBotApi, group_chat, private_chat, user

pytestmark = pytest.mark.slow

ANN, BEN, CY, DEE = 701, 702, 703, 704
# Enough training steps for a job of a few seconds even on a fast machine; two active jobs per user, a limit
# easy to reach.
DAEMON_ARGS = ("--train-steps", "48", "--user-active-limit", "2")
# The bot here edits at most every quarter second (a private chat) or three quarters (a group): the pacing is
# the real code at shorter intervals, so a job of a few seconds always shows progress edits before the
# summary, however fast the machine runs it. The Telegram-sized intervals are covered in test_progress.
EDIT_GAP = {"private_edit_interval": 0.25, "group_edit_interval": 0.75}
# Small margin for loopback jitter between the bot's clock and the fake server's receipt times.
JITTER = 0.1


class Daemon:
    """The module's real daemon; ``restart`` brings it back on the same socket and state (the last test)."""

    def __init__(self, state_dir: Path, models: tuple[Path, Path]) -> None:
        self.state_dir, self.models = state_dir, models
        self.running = start_daemon(state_dir, models, *DAEMON_ARGS)
        self.target = self.running.target

    def stop(self) -> None:
        status = self.running.stop()
        assert status == 0, self.running.log_text()

    async def start_again(self, timeout: float = 180.0) -> None:
        """Start it on the same socket and wait (without blocking the loop the bot runs on) until it serves."""
        socket = self.running.socket
        self.running = start_daemon(self.state_dir, self.models, *DAEMON_ARGS, socket=socket, wait=False)
        probe = DaemonClient(self.target)
        try:
            deadline = time.monotonic() + timeout
            while not await probe.ready(timeout=1.0):
                assert self.running.process.poll() is None, self.running.log_text()
                assert time.monotonic() < deadline, self.running.log_text()
                await asyncio.sleep(0.1)
        finally:
            await probe.close()


@pytest.fixture(scope="module")
def daemon(demo_models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One real daemon for the module (starting one takes seconds; a demo job about two)."""
    running = Daemon(tmp_path_factory.mktemp("telegram-e2e") / "state", demo_models)
    yield running
    running.stop()


@pytest.fixture
async def bot(start_bot: StartBot, client: DaemonClient) -> DistilleryBot:
    return await start_bot(client, **EDIT_GAP)


@dataclass
class Outcome:
    first: Call  # the bot's first reply: the confirmation, or a "Fetching..." placeholder under load
    confirmation: str  # the text with the LoRA name and queue position
    edits: list[Call]  # every accepted edit of that message, the summary last
    summary: Call
    sent: float  # when the test pushed the update

    @property
    def waited(self) -> float:
        return self.first.at - self.sent


async def distill(api: FakeBotApi, message: dict[str, Any], timeout: float = 90.0) -> Outcome:
    """Send a message and follow the bot's answer to it, one message, to the summary."""
    sent = time.monotonic()
    api.send(message)
    first = await reply_to(api, message)
    chat_id, progress_id = message["chat"]["id"], first.result["message_id"]
    summary = await final_edit(api, chat_id, progress_id, timeout)
    edits = [
        call
        for call in api.calls_of("editMessageText", chat_id)
        if int(call.params["message_id"]) == progress_id and call.at <= summary.at and call.result is not None
    ]
    texts = [first.text] + [call.text for call in edits]
    confirmation = next(text for text in texts if text.startswith("Distilling"))
    return Outcome(first, confirmation, edits, summary, sent)


def check_progress(outcome: Outcome, name: str, min_gap: float) -> None:
    """Confirmation, progress through the stages, paced distinct edits, and a summary without a button."""
    assert outcome.waited < 1.5, f"the first answer took {outcome.waited:.2f} s"
    assert outcome.confirmation.startswith(f"Distilling {name}\nWaiting in the queue")
    texts = [call.text for call in outcome.edits]
    # At least one progress edit before the summary (a demo job is too short for many at 1 edit/s).
    assert any(text.startswith(f"Distilling {name}\nStage: ") for text in texts[:-1]), texts
    assert all(earlier != later for earlier, later in itertools.pairwise(texts)), "an unchanged edit"
    times = [outcome.first.at] + [call.at for call in outcome.edits]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= min_gap - JITTER for gap in gaps), gaps
    summary = outcome.summary.text
    assert summary.startswith(f"{name} is ready in ")
    assert "Caption: " in summary and "Class: " in summary and f"Use it by writing {name} in a prompt" in summary
    assert all("reply_markup" in call.params for call in outcome.edits[:-1])


def lora_name(outcome: Outcome) -> str:
    return outcome.confirmation.split("\n")[0].removeprefix("Distilling ")


async def test_distill_a_link(bot_api: FakeBotApi, bot: DistilleryBot, image_server: str) -> None:
    message = bot_api.text(user(ANN), private_chat(ANN), f"/distill {image_server}/portrait.png --noflip")
    outcome = await distill(bot_api, message)
    name = lora_name(outcome)
    check_progress(outcome, name, min_gap=EDIT_GAP["private_edit_interval"])
    # The daemon's first picture with the new LoRA, then the LoRA file itself.
    photo = await bot_api.wait_for(lambda call: call.method == "sendPhoto" and call.chat_id == ANN)
    assert photo.params["caption"] == f"{name}: its preview"
    assert Image.open(io.BytesIO(photo.files["photo"])).format == "PNG"
    document = await bot_api.wait_for(lambda call: call.method == "sendDocument" and call.chat_id == ANN)
    assert document.params["caption"].startswith(f"{name}.safetensors")
    assert len(document.files["document"]) > 1000  # the LoRA's safetensors, straight from the daemon
    # Both answer the job's message.
    job_message = outcome.first.result["message_id"]
    assert photo.params["reply_parameters"]["message_id"] == document.params["reply_parameters"]["message_id"]
    assert photo.params["reply_parameters"]["message_id"] == job_message


async def test_distill_a_photo_with_a_caption(
    bot_api: FakeBotApi, bot: DistilleryBot, client: DaemonClient, portrait_png: bytes
) -> None:
    message = bot_api.photo(user(ANN), private_chat(ANN), portrait_png, caption="/distill --class woman")
    outcome = await distill(bot_api, message)
    name = lora_name(outcome)
    check_progress(outcome, name, min_gap=EDIT_GAP["private_edit_interval"])
    assert "Class: woman" in outcome.summary.text
    # The bot uploaded the picture itself: the daemon stored it as the job's source image.
    [job] = [job for job in await client.list_jobs(requester(ANN)) if job.lora_name == name]
    assert job.source == "upload" and job.state == pb.JOB_STATE_SUCCEEDED


async def test_distill_as_a_reply_to_a_photo(bot_api: FakeBotApi, bot: DistilleryBot, portrait_png: bytes) -> None:
    photo = bot_api.photo(user(ANN), private_chat(ANN), portrait_png)
    bot_api.send(photo)
    message = bot_api.text(
        user(ANN), private_chat(ANN), "/distill@distillery_test_bot --class man", reply_to=photo
    )
    outcome = await distill(bot_api, message)
    check_progress(outcome, lora_name(outcome), min_gap=EDIT_GAP["private_edit_interval"])
    assert "Class: man" in outcome.summary.text


async def test_user_mistakes_get_the_daemons_sentence(
    bot_api: FakeBotApi, bot: DistilleryBot, client: DaemonClient, image_server: str
) -> None:
    cases = {
        f"/distill {image_server}/missing.jpg": "The image link answered HTTP 404.",
        f"/distill {image_server}/notes.txt": NOT_AN_IMAGE,
        f"/distill {image_server}/tiny.png": "The image is 64x64 pixels; send one whose shorter side",
        f"/distill {image_server}/huge.png": "The image claims to be 7000x6000 pixels",
    }
    for text, expected in cases.items():
        message = bot_api.text(user(CY), private_chat(CY), text)
        bot_api.send(message)
        reply = await answer(bot_api, message)
        assert reply.startswith(expected), (text, reply)
    # A file that is not a picture, sent as a document with the caption.
    document = bot_api.document(
        user(CY), private_chat(CY), b"%PDF-1.4 a pdf", caption="/distill", mime_type="application/pdf"
    )
    bot_api.send(document)
    assert await answer(bot_api, document) == NOT_AN_IMAGE
    assert await client.list_jobs(requester(CY)) == []


async def test_a_full_quota_is_explained(
    bot_api: FakeBotApi, bot: DistilleryBot, client: DaemonClient, image_server: str
) -> None:
    texts = []
    for _ in range(3):
        message = bot_api.text(user(BEN), private_chat(BEN), f"/distill {image_server}/portrait.png")
        bot_api.send(message)
        texts.append(await answer(bot_api, message))
    assert texts[0].startswith("Distilling") and texts[1].startswith("Distilling")
    assert texts[2] == "You already have 2 jobs queued or running; wait for one to finish or cancel one."
    jobs = bot_api.text(user(BEN), private_chat(BEN), "/jobs")
    bot_api.send(jobs)
    listed = (await reply_to(bot_api, jobs)).text.split("\n")
    assert listed[0] == "Your jobs:" and len(listed) == 3
    assert all(re.fullmatch(r"\w+: (queued|running \(.+\)|ready)", line) for line in listed[1:]), listed
    for job in await client.list_jobs(requester(BEN), active_only=True):
        await client.cancel(job.id, requester(BEN))  # leave the daemon idle for the next test


async def test_redelivery_makes_one_job_and_only_the_owner_can_cancel(
    bot_api: FakeBotApi, bot: DistilleryBot, client: DaemonClient, image_server: str
) -> None:
    message = bot_api.text(user(ANN), group_chat(), f"/distill {image_server}/portrait.png")
    update = bot_api.send(message)
    bot_api.push(update)  # Telegram delivers the same update again
    assert (await answer(bot_api, message)).startswith("Distilling")  # submitted (past any placeholder)
    confirmation = await reply_to(bot_api, message)
    progress = bot_api.message(GROUP_ID, confirmation.result["message_id"])
    [job] = await client.list_jobs(requester(ANN), active_only=True)
    assert job.idempotency_key == f"tg:{GROUP_ID}:{message['message_id']}"

    bot_api.push(bot_api.press(user(BEN), progress, f"cancel:{job.id}"))
    refusal = await bot_api.wait_for(lambda call: call.method == "answerCallbackQuery")
    assert refusal.params["text"] == NOT_OWNER
    # Without the replied-to message to go by, the bot asks the daemon, which refuses another user's job.
    orphan = {key: value for key, value in progress.items() if key != "reply_to_message"}
    bot_api.push(bot_api.press(user(BEN), orphan, f"cancel:{job.id}"))
    await eventually(lambda: len(bot_api.calls_of("answerCallbackQuery")) == 2)
    assert bot_api.calls_of("answerCallbackQuery")[1].params["text"] == NOT_OWNER
    assert (await client.get_job(job.id, requester(ANN))).state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING)

    bot_api.push(bot_api.press(user(ANN), progress, f"cancel:{job.id}"))
    summary = await final_edit(bot_api, GROUP_ID, progress["message_id"])
    assert summary.text == f"{job.lora_name} was cancelled."
    # A group gets edits further apart than a private chat, even when the job ends sooner.
    edits = [call.at for call in bot_api.calls_of("editMessageText", GROUP_ID)]
    times = [confirmation.at, *edits]
    gap = EDIT_GAP["group_edit_interval"]
    assert all(later - earlier >= gap - JITTER for earlier, later in itertools.pairwise(times)), times
    assert (await client.get_job(job.id, requester(ANN))).state == pb.JOB_STATE_CANCELLED
    replies = [
        call
        for call in bot_api.calls_of("sendMessage", GROUP_ID)
        if call.params.get("reply_parameters", {}).get("message_id") == message["message_id"]
    ]
    assert len(replies) == 1  # one confirmation for the two deliveries
    await eventually(lambda: len(bot_api.calls_of("answerCallbackQuery")) == 3)
    assert bot_api.calls_of("answerCallbackQuery")[2].params["text"] != NOT_OWNER


async def test_serve_with_a_fresh_lora_sends_real_pngs_and_info_reads_them(
    bot_api: FakeBotApi, bot: DistilleryBot, image_server: str
) -> None:
    outcome = await distill(
        bot_api, bot_api.text(user(DEE), private_chat(DEE), f"/distill {image_server}/portrait.png")
    )
    name = lora_name(outcome)
    serve = bot_api.text(user(DEE), private_chat(DEE), f'/serve "a portrait" --lora {name} --n 2 --seed 5')
    bot_api.send(serve)
    first = await reply_to(bot_api, serve)
    summary = await final_edit(bot_api, DEE, first.result["message_id"], timeout=120.0)
    assert summary.text.startswith("Your 2 images are ready"), summary.text
    assert f"LoRAs: {name} (" in summary.text and "seeds 5-6" in summary.text

    group = await bot_api.wait_for(lambda call: call.method == "sendMediaGroup" and call.chat_id == DEE)
    captions = [item["caption"] for item in group.params["media"]]
    assert [caption.split(" - ")[1] for caption in captions] == ["seed 5", "seed 6"]
    assert all(f" - {name} " in caption for caption in captions), captions
    pictures = [Image.open(io.BytesIO(data)) for data in group.files.values()]
    assert len(pictures) == 2 and all(picture.format == "PNG" for picture in pictures)

    # /info as a reply to the first picture: its parameters as the daemon stored them.
    photo = bot_api.message(DEE, group.result[0]["message_id"])
    info = bot_api.text(user(DEE), private_chat(DEE), "/info", reply_to=photo)
    bot_api.send(info)
    text = (await reply_to(bot_api, info)).text
    assert text.startswith(captions[0].split(" - ")[0]) and "Seed: 5" in text, text

    missing = bot_api.text(user(DEE), private_chat(DEE), "/serve a portrait --lora nosuchlora")
    bot_api.send(missing)
    assert (await reply_to(bot_api, missing)).text == "There is no LoRA called nosuchlora."


async def test_a_bot_restart_reattaches_and_the_chat_gets_its_summary(
    bot_api: FakeBotApi, start_bot: StartBot, client: DaemonClient, image_server: str
) -> None:
    # Restarted while the job is in the queue or running: the new bot follows it live.
    first = await start_bot(client)
    live = bot_api.text(user(CY), private_chat(CY), f"/distill {image_server}/portrait.png")
    bot_api.send(live)
    await answer(bot_api, live)
    live_progress = (await reply_to(bot_api, live)).result["message_id"]
    await first.stop()
    second = await start_bot(client)
    summary = await final_edit(bot_api, CY, live_progress)
    assert " is ready in " in summary.text

    # Down while the job ends: the next bot still turns the progress message into the summary.
    ended = bot_api.text(user(CY), private_chat(CY), f"/distill {image_server}/portrait.png")
    bot_api.send(ended)
    await answer(bot_api, ended)
    ended_progress = (await reply_to(bot_api, ended)).result["message_id"]
    await second.stop()
    [job] = await client.list_jobs(requester(CY), active_only=True)
    while (await client.get_job(job.id, requester(CY))).state not in FINISHED_STATES:
        await asyncio.sleep(0.1)
    await start_bot(client)
    summary = await final_edit(bot_api, CY, ended_progress)
    assert summary.text.startswith(f"{job.lora_name} is ready in ")
    # One confirmation per request, one LoRA file per job: nothing was sent twice across the restarts.
    assert len(bot_api.calls_of("sendMessage", CY)) == 2
    await eventually(lambda: len(bot_api.calls_of("sendDocument", CY)) == 2)
    await asyncio.sleep(0.5)
    assert len(bot_api.calls_of("sendDocument", CY)) == 2


async def test_a_daemon_restart_mid_job_keeps_the_message_going(
    bot_api: FakeBotApi, start_bot: StartBot, client: DaemonClient, daemon: Daemon, image_server: str
) -> None:
    """Last in the module: it restarts the shared daemon."""
    await start_bot(client, offline_notice_after=0.5)
    message = bot_api.text(user(ANN), private_chat(ANN), f"/distill {image_server}/portrait.png")
    bot_api.send(message)
    await answer(bot_api, message)
    progress = (await reply_to(bot_api, message)).result["message_id"]
    [job] = await client.list_jobs(requester(ANN), active_only=True)
    while (await client.get_job(job.id, requester(ANN))).state == pb.JOB_STATE_QUEUED:
        await asyncio.sleep(0.02)

    await asyncio.to_thread(daemon.stop)  # SIGTERM: the running job goes back to the queue
    await bot_api.wait_for(lambda call: OFFLINE_NOTE in call.text, timeout=30)
    await daemon.start_again()
    summary = await final_edit(bot_api, ANN, progress, timeout=120)
    assert summary.text.startswith(f"{job.lora_name} is ready in ")
    restarted = await client.get_job(job.id, requester(ANN))
    assert restarted.state == pb.JOB_STATE_SUCCEEDED
    assert len(bot_api.calls_of("sendMessage", ANN)) == 1  # the same message all along
