"""End to end: real slack-bolt over signed loopback HTTP, the fake Slack Web API, and the REAL daemon on the
demo preset (tiny models, a few seconds a job). One daemon serves the whole module; each test uses its own
Slack users so the daemon's per-user limit (1 active job here, to exercise it) does not couple the tests.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from distillery.v1 import distillery_pb2 as pb
from PIL import Image

from frontends.client import DaemonClient
from frontends.clientstate import ClientState
from frontends.follow import OFFLINE_NOTE, platform_requester
from frontends.slack import blocks
from tests.daemon_process import RunningDaemon, start_daemon, wait_serving
from tests.frontends.slack.fake_slack_api import FakeSlack
from tests.frontends.slack.harness import BotHarness, settings_for, upload_event

pytestmark = pytest.mark.slow


# One active job per user: small enough to reach the limit in a test, and each test uses its own users.
# Two training steps and two regularization photos (the later flags win over FAST_JOB's): every stage still
# runs and reports progress, in a fraction of the time.
DAEMON_ARGS = ("--user-active-limit", "1", "--train-steps", "2", "--reg-images", "2")


@dataclass
class Daemons:
    """The module's daemon, restartable in place: same state folder, same socket, so clients keep working."""

    state_dir: Path
    models: tuple[Path, Path]
    socket: Path
    current: RunningDaemon | None = None

    @property
    def target(self) -> str:
        return f"unix:{self.socket}"

    def start(self) -> None:
        # start_daemon picks a socket of its own; the later --socket wins, so wait on this one here.
        self.current = start_daemon(
            self.state_dir, self.models, *DAEMON_ARGS, "--socket", str(self.socket), wait=False
        )
        try:
            wait_serving(self.target, self.current.process, 180.0)
        except Exception:
            self.current.stop(signal.SIGKILL)
            raise RuntimeError(f"daemon failed to start; its log:\n{self.current.log_text()}") from None

    def restart(self) -> None:
        assert self.current is not None
        assert self.current.stop(signal.SIGTERM) == 0, self.current.log_text()
        self.start()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, demo_models: tuple[Path, Path]) -> Iterator[Daemons]:
    state_dir = tmp_path_factory.mktemp("slack-e2e")
    # Unix socket paths are limited to ~107 bytes; pytest's temporary folders can be longer.
    socket = Path(f"/tmp/distillery-slack-{os.getpid()}-{time.monotonic_ns()}.sock")
    daemons = Daemons(state_dir, demo_models, socket)
    daemons.start()
    yield daemons
    assert daemons.current is not None
    assert daemons.current.stop(signal.SIGTERM) == 0, daemons.current.log_text()


@pytest.fixture
async def bot(fake_slack: FakeSlack, client: DaemonClient) -> AsyncIterator[BotHarness]:
    harness = await BotHarness(fake_slack, client, settings_for(fake_slack, result_image="source")).start()
    yield harness
    await harness.close()


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height), 128).save(out, format="PNG")
    return out.getvalue()


async def _job_of(client: DaemonClient, user: str) -> pb.Job:
    [job] = await client.list_jobs(pb.Requester(platform="slack", workspace="T0TEAM", user=user))
    return job


async def _note(client: DaemonClient, job_id: str, done: bool = False, timeout: float = 60.0) -> ClientState:
    """The bot's note on the job, once there is one (and once it says the final message is shown)."""
    async with asyncio.timeout(timeout):
        while True:
            job = await client.get_job(job_id, platform_requester("slack"))
            state = ClientState.decode(job.client_state)
            if state is not None and (state.done or not done):
                return state
            await asyncio.sleep(0.05)


async def _final(bot: BotHarness, client: DaemonClient, job_id: str) -> tuple[ClientState, str]:
    """Wait until the bot shows the job's final message; its note on the job and the message text."""
    state = await _note(client, job_id, done=True)
    job = await client.get_job(job_id, platform_requester("slack"))
    assert state.seq == job.last_seq
    return state, str(bot.fake.message(state.chat, state.message)["text"])


async def test_slash_command_url_to_finished_lora(
    bot: BotHarness, fake_slack: FakeSlack, client: DaemonClient, portrait_png: bytes
) -> None:
    url = fake_slack.add_public("portrait.png", portrait_png)
    status, ack = await bot.command(f"{url} --class woman", user="UA1", channel="C1")
    assert status == 200 and ack.startswith("Your LoRA will be called ") and "in the queue" in ack
    job = await _job_of(client, "UA1")
    assert job.lora_name in ack and job.requested_class == pb.SUBJECT_CLASS_WOMAN

    state, text = await _final(bot, client, job.id)
    assert state.chat == "C1"
    assert text.startswith(f"{job.lora_name} is ready in ")
    assert "Class: woman" in text and f"a portrait of {job.lora_name} woman" in text
    assert len(fake_slack.of("chat.postMessage")) == 1
    shown = [call.params["text"] for call in fake_slack.of("chat.update")]
    assert any("Stage:" in version for version in shown)  # live progress went through the same message

    # The finished job's picture, uploaded with files_upload_v2 into the job message's thread.
    [upload] = fake_slack.uploads.values()
    assert upload.filename == f"{job.lora_name}.png" and upload.data.startswith(b"\x89PNG")
    assert upload.completed["channel_id"] == "C1" and upload.completed["thread_ts"] == state.message
    assert Image.open(io.BytesIO(upload.data)).size[0] >= 256


async def test_uploaded_photo_to_finished_lora(
    bot: BotHarness, fake_slack: FakeSlack, client: DaemonClient, portrait_png: bytes
) -> None:
    item = fake_slack.add_file("astronaut.png", portrait_png)
    status, _ = await bot.event(upload_event([item], "me /distill --noflip", "EvE2E", user="UB1", channel="C2"))
    assert status == 200
    await fake_slack.wait_for(lambda: fake_slack.of("chat.postMessage"), timeout=30)
    job = await _job_of(client, "UB1")
    assert job.source == "upload" and not job.flip and job.idempotency_key == "slack-event:EvE2E"

    state, text = await _final(bot, client, job.id)
    assert state.chat == "C2" and text.startswith(f"{job.lora_name} is ready")

    # Slack retrying the same event later (to a restarted bot, say) makes no second job or message.
    again = await BotHarness(fake_slack, client, settings_for(fake_slack)).start(reattach=False)
    try:
        await again.event(upload_event([item], "me /distill --noflip", "EvE2E", user="UB1", channel="C2"))
        await fake_slack.wait_for(lambda: len(fake_slack.downloads) == 2, timeout=10)
        await asyncio.sleep(0.2)  # time enough to post a second message, were the duplicate not noticed
    finally:
        await again.close()
    assert [
        job.id for job in await client.list_jobs(pb.Requester(platform="slack", workspace="T0TEAM", user="UB1"))
    ] == [job.id]
    assert len(fake_slack.of("chat.postMessage")) == 1


async def test_what_the_user_reads_when_the_daemon_refuses(
    bot: BotHarness, fake_slack: FakeSlack, client: DaemonClient, portrait_png: bytes
) -> None:
    missing = fake_slack.add_public("missing.png", b"")
    del fake_slack.public["missing.png"]
    text_file = fake_slack.add_public("notes.png", b"just some text, not a picture", "text/plain")
    tiny = fake_slack.add_public("tiny.png", png(64, 64))
    huge = fake_slack.add_public("huge.png", png(8000, 8000))
    answers = {}
    for name, url in (("missing", missing), ("text", text_file), ("tiny", tiny), ("huge", huge)):
        answers[name] = (await bot.command(url, user="UC1"))[1]
    assert answers["missing"] == "The image link answered HTTP 404."
    assert answers["text"] == "That file is not a JPEG, PNG or WebP image."
    assert answers["tiny"] == "The image is 64x64 pixels; send one whose shorter side is at least 256 pixels."
    assert answers["huge"].startswith("The image claims to be 8000x8000 pixels")

    # An upload that says it is a PNG but is not one: the daemon's refusal comes back as an ephemeral.
    fake = fake_slack.add_file("fake.png", b"GIF? no, text", mimetype="image/png")
    await bot.event(upload_event([fake], "/distill", "EvBad", user="UC1"))
    await fake_slack.wait_for(lambda: fake_slack.of("chat.postEphemeral"), timeout=10)
    assert fake_slack.of("chat.postEphemeral")[0].params["text"] == "That file is not a JPEG, PNG or WebP image."
    assert fake_slack.of("chat.postMessage") == []
    assert await client.list_jobs(pb.Requester(platform="slack", workspace="T0TEAM", user="UC1")) == []


async def test_cancel_by_owner_only_and_the_per_user_limit(
    bot: BotHarness, fake_slack: FakeSlack, client: DaemonClient, portrait_png: bytes
) -> None:
    url = fake_slack.add_public("portrait.png", portrait_png)
    await bot.command(url, user="UD1")
    # Submitted second, so it waits in the queue behind UD1's job while the tests click.
    waiting_ack = (await bot.command(url, user="UD2"))[1]
    assert "It is number 2 in the queue." in waiting_ack or "next in the queue" in waiting_ack
    # The daemon allows one active job per user here: the owner's second request is refused, readably.
    refused = (await bot.command(url, user="UD2"))[1]
    assert refused.startswith("You already have 1 jobs queued or running")
    waiting = await _job_of(client, "UD2")

    await bot.click_cancel(waiting.id, user="UD9")
    await fake_slack.wait_for(lambda: fake_slack.of("chat.postEphemeral"))
    assert fake_slack.of("chat.postEphemeral")[0].params["text"] == blocks.NOT_OWNER
    # A bot that does not follow the job leaves the check to the daemon, which answers NOT_FOUND.
    other = await BotHarness(fake_slack, client, settings_for(fake_slack)).start(reattach=False)
    try:
        await other.click_cancel(waiting.id, user="UD9")
        await fake_slack.wait_for(lambda: len(fake_slack.of("chat.postEphemeral")) == 2)
    finally:
        await other.close()
    assert fake_slack.of("chat.postEphemeral")[1].params["text"] == blocks.NOT_OWNER
    assert (await client.get_job(waiting.id, platform_requester("slack"))).state in (
        pb.JOB_STATE_QUEUED,
        pb.JOB_STATE_RUNNING,
    )

    await bot.click_cancel(waiting.id, user="UD2")
    _, text = await _final(bot, client, waiting.id)
    assert text == f"{waiting.lora_name} was cancelled."
    first = await _job_of(client, "UD1")
    _, text = await _final(bot, client, first.id)
    assert text.startswith(f"{first.lora_name} is ready")


async def test_a_restarted_bot_reattaches_to_the_same_message(
    fake_slack: FakeSlack, client: DaemonClient, portrait_png: bytes
) -> None:
    url = fake_slack.add_public("portrait.png", portrait_png)
    first = await BotHarness(fake_slack, client, settings_for(fake_slack)).start()
    try:
        await first.command(url, user="UE1", channel="C5")
        job = await _job_of(client, "UE1")
        posted = await _note(client, job.id)
    finally:
        await first.close()  # the bot goes away mid-job; the job goes on in the daemon
    updates_before = len(fake_slack.of("chat.update"))

    second = await BotHarness(fake_slack, client, settings_for(fake_slack)).start()
    try:
        state, text = await _final(second, client, job.id)
    finally:
        await second.close()
    assert (state.chat, state.message) == ("C5", posted.message)
    assert text.startswith(f"{job.lora_name} is ready")
    assert len(fake_slack.of("chat.postMessage")) == 1  # the same message, updated; no new one
    assert len(fake_slack.of("chat.update")) > updates_before


async def test_the_job_message_survives_a_daemon_restart(
    fake_slack: FakeSlack, daemon: Daemons, client: DaemonClient, bot: BotHarness, portrait_png: bytes
) -> None:
    # A long job ahead keeps this one waiting, so it is surely unfinished when the daemon goes away.
    operator = pb.Requester(platform="cli", user="blocker")
    blocker = await client.submit(client.spec(operator, upload=True, train_steps=2000), portrait_png)
    url = fake_slack.add_public("portrait.png", portrait_png)
    await bot.command(url, user="UF1")
    job = await _job_of(client, "UF1")
    posted = await _note(client, job.id)

    # SIGTERM: the daemon stops the running job at a safe point and queues both again when it is back. The
    # bot keeps running meanwhile (the restart is off its event loop) and tells the channel.
    await asyncio.to_thread(daemon.restart)
    await client.cancel(blocker.job.id, operator)

    state, text = await _final(bot, client, job.id)
    assert (state.chat, state.message) == (posted.chat, posted.message)
    assert text.startswith(f"{job.lora_name} is ready")
    assert len(fake_slack.of("chat.postMessage")) == 1  # the same message all along
    shown = [str(call.params["blocks"]) for call in fake_slack.of("chat.update")]
    assert any(OFFLINE_NOTE in blocks for blocks in shown), "the message said the trainer was away"
    attempts = (await client.get_job(job.id, platform_requester("slack"))).attempts
    assert attempts >= 1


async def test_serve_with_a_fresh_lora_uploads_real_pictures(
    bot: BotHarness, fake_slack: FakeSlack, client: DaemonClient, portrait_png: bytes
) -> None:
    url = fake_slack.add_public("portrait.png", portrait_png)
    await bot.command(url, user="UG1", channel="C6")
    trained = await _job_of(client, "UG1")
    await _final(bot, client, trained.id)
    name = trained.lora_name

    status, ack = await bot.command(
        f'"a portrait of {name} as an astronaut" --lora {name} --n 2 --steps 2 --seed 5',
        command="/serve",
        user="UG1",
        channel="C6",
    )
    assert status == 200 and ack.startswith(f"Generating 2 images with {name}."), ack
    jobs = await client.list_jobs(pb.Requester(platform="slack", workspace="T0TEAM", user="UG1"))
    [generation] = [job for job in jobs if job.kind == pb.JOB_KIND_GENERATE]
    state, text = await _final(bot, client, generation.id)
    assert state.chat == "C6" and state.delivered == 2
    assert text.startswith("Your 2 images are ready") and f"LoRAs: {name}" in text and "seeds 5-6" in text

    # The pictures in the job message's thread: real PNGs, each captioned with its name and seed.
    pictures = [
        upload for upload in fake_slack.uploads.values() if upload.completed.get("thread_ts") == state.message
    ]
    assert [upload.filename for upload in pictures] == [f"{generation.id}-1.png", f"{generation.id}-2.png"]
    for number, upload in enumerate(pictures):
        assert Image.open(io.BytesIO(upload.data)).format == "PNG"
        assert upload.completed["initial_comment"].startswith(f"{upload.filename} - seed {5 + number}")

    # /info on a picture's name gives its parameters as the daemon stored them.
    status, info = await bot.command(pictures[0].filename, command="/info", user="UG1")
    assert status == 200 and info.startswith(f"{pictures[0].filename} (") and "Seed: 5" in info


async def test_by_default_the_thread_gets_the_loras_first_picture(
    fake_slack: FakeSlack, client: DaemonClient, portrait_png: bytes
) -> None:
    harness = await BotHarness(fake_slack, client, settings_for(fake_slack)).start()
    try:
        url = fake_slack.add_public("portrait.png", portrait_png)
        status, _ = await harness.command(url, user="UC1", channel="C3")
        assert status == 200
        job = await _job_of(client, "UC1")
        state, _ = await _final(harness, client, job.id)
        await fake_slack.wait_for(lambda: fake_slack.uploads, timeout=30)
    finally:
        await harness.close()
    [upload] = fake_slack.uploads.values()
    # Drawn by the daemon with the new LoRA, not the picture it was trained on.
    assert upload.filename == f"{job.id}-preview-1.png" and upload.completed["thread_ts"] == state.message
    assert upload.completed["title"] == f"{job.lora_name}: its preview"
    with Image.open(io.BytesIO(upload.data)) as picture:
        assert job.lora_name in picture.text["parameters"]  # type: ignore[attr-defined]
