"""End to end: hikari's RESTBot behind our signed HTTP endpoint, the fake Discord API, and the REAL daemon on
the demo preset (tiny models, a few seconds a job). One daemon serves the whole module; each test uses its own
Discord users so the daemon's per-user limit (1 active job here) does not couple the tests. A long job of the
command line's, ahead in the queue, keeps a test's job waiting where a test needs it unfinished.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import hikari
import pytest
from distillery.v1 import distillery_pb2 as pb
from PIL import Image

from frontends.client import DaemonClient
from frontends.clientstate import ClientState
from frontends.discord.bot import NOT_OWNER
from frontends.discord.platform import escape
from tests.daemon_process import RunningDaemon, start_daemon
from tests.frontends.discord.fake_discord import (
    CHANNEL_ID,
    GUILD_ID,
    TOKEN_LIFETIME,
    FakeDiscord,
    attachment,
    buttons,
    message,
    user,
)
from tests.frontends.discord.harness import Harness, settings_for

pytestmark = pytest.mark.slow

DAEMON_ARGS = ("--user-active-limit", "1", "--train-steps", "2", "--reg-images", "2")
WATCHER = pb.Requester(platform="discord")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, demo_models: tuple[Path, Path]) -> Iterator[RunningDaemon]:
    # Unix socket paths are limited to ~107 bytes; pytest's temporary folders can be longer.
    socket = Path(f"/tmp/distillery-discord-{os.getpid()}-{time.monotonic_ns()}.sock")
    running = start_daemon(tmp_path_factory.mktemp("discord-e2e"), demo_models, *DAEMON_ARGS, socket=socket)
    yield running
    assert running.stop(signal.SIGTERM) == 0, running.log_text()


@pytest.fixture
async def bot(fake_discord: FakeDiscord, client: DaemonClient) -> AsyncIterator[Harness]:
    harness = await Harness(fake_discord, client, settings_for(fake_discord)).start()
    yield harness
    await harness.close()


def portrait(fake: FakeDiscord, data: bytes, name: str = "portrait.png") -> dict[str, Any]:
    return attachment(fake.cdn_url(name, data), name, len(data))


async def job_of(client: DaemonClient, user_id: str, kind: int = pb.JOB_KIND_DISTILL) -> pb.Job:
    """The user's one job of this kind, once the bot has submitted it (it does so after deferring)."""
    async with asyncio.timeout(60):
        while True:
            jobs = await client.list_jobs(pb.Requester(platform="discord", workspace=GUILD_ID, user=user_id))
            found = [job for job in jobs if job.kind == kind]
            if found:
                [job] = found
                return job
            await asyncio.sleep(0.05)


async def note(client: DaemonClient, job_id: str, done: bool = False, timeout: float = 90.0) -> ClientState:
    """The bot's note on the job once there is one (and once it says everything was delivered)."""
    async with asyncio.timeout(timeout):
        while True:
            job = await client.get_job(job_id, WATCHER)
            state = ClientState.decode(job.client_state)
            if state is not None and (state.done or not done):
                return state
            await asyncio.sleep(0.05)


async def final(fake: FakeDiscord, client: DaemonClient, job_id: str) -> tuple[ClientState, dict[str, Any]]:
    """The note and the job's message once the bot has shown the end and delivered the results."""
    state = await note(client, job_id, done=True)
    return state, fake.find(state.chat, state.message)


def replies_to(fake: FakeDiscord, state: ClientState) -> list[dict[str, Any]]:
    """The messages answering the job's message: its results."""
    return [
        item
        for item in fake.channel_messages(state.chat)
        if (item.get("message_reference") or {}).get("message_id") == state.message
    ]


async def original(fake: FakeDiscord, token: str) -> str:
    """The deferred answer's text once the bot has edited it."""
    return str(await fake.wait_for(lambda: fake.originals.get(token, {}).get("content"), timeout=60))


async def test_distill_an_attachment_to_summary_preview_and_file(
    bot: Harness, fake_discord: FakeDiscord, client: DaemonClient, portrait_png: bytes
) -> None:
    response = await bot.command(
        "distill", "4001", image=portrait(fake_discord, portrait_png), **{"class": "woman"}
    )
    assert response["type"] == 5 and response["data"]["flags"] == 64  # deferred within 3 s, only the user sees
    job = await job_of(client, "4001")
    assert job.source == "upload" and job.requested_class == pb.SUBJECT_CLASS_WOMAN
    assert job.idempotency_key.startswith("discord:")

    state, shown = await final(fake_discord, client, job.id)
    assert state.chat == CHANNEL_ID
    assert shown["content"].startswith(f"<@4001> {escape(job.lora_name)} is ready in ")
    assert buttons(shown) == []  # the Cancel button went away with the summary
    versions = fake_discord.edits[state.message]
    assert any("Stage" in version for version in versions)  # live progress went through the same message
    assert len(versions) == len(set(versions))  # no edit repeated what was already shown
    # Only the owner may be pinged, and nobody else ever.
    created = next(post for post in fake_discord.posted if post.path.endswith(f"/channels/{CHANNEL_ID}/messages"))
    assert created.body["allowed_mentions"] == {"parse": [], "users": ["4001"]}

    preview, lora_file = replies_to(fake_discord, state)
    [picture] = preview["attachments"]
    assert picture["filename"] == f"{job.id}-preview-1.png"
    with Image.open(io.BytesIO(fake_discord.cdn_files[picture["url"].rsplit("/", 1)[1]])) as image:
        assert image.format == "PNG" and job.lora_name in image.text["parameters"]  # type: ignore[attr-defined]
    [safetensors] = lora_file["attachments"]
    assert safetensors["filename"] == f"{job.lora_name}.safetensors" and safetensors["size"] > 0

    # The deferred answer links to the job's message.
    link = await original(fake_discord, bot.last["token"])
    assert f"{CHANNEL_ID}/{state.message}" in link


async def test_distill_this_on_a_posted_picture(
    bot: Harness, fake_discord: FakeDiscord, client: DaemonClient, portrait_png: bytes
) -> None:
    posted = message(
        CHANNEL_ID, "me at the beach", user("4002"), attachments=[portrait(fake_discord, portrait_png)]
    )
    response = await bot.menu("Distill this", "4002", posted)
    assert response["type"] == 5
    job = await job_of(client, "4002")
    _, shown = await final(fake_discord, client, job.id)
    assert escape(job.lora_name) in shown["content"] and "is ready" in shown["content"]

    # A message without a picture is answered at once.
    text_only = message(CHANNEL_ID, "no picture here", user("4002"))
    refused = await bot.menu("Distill this", "4002", text_only)
    assert refused["type"] == 4 and "no picture" in refused["data"]["content"]


async def test_serve_posts_the_pictures_with_their_parameters(
    bot: Harness, fake_discord: FakeDiscord, client: DaemonClient, portrait_png: bytes
) -> None:
    await bot.command("distill", "4003", image=portrait(fake_discord, portrait_png))
    trained = await job_of(client, "4003")
    await final(fake_discord, client, trained.id)
    name = trained.lora_name

    prompt = f'"a portrait of {name} as an astronaut" --lora {name} --n 2 --steps 2 --seed 5'
    response = await bot.command("serve", "4003", prompt=prompt)
    assert response["type"] == 5
    generation = await job_of(client, "4003", pb.JOB_KIND_GENERATE)
    state, shown = await final(fake_discord, client, generation.id)
    assert state.delivered == 2
    assert "Your 2 images are ready" in shown["content"] and escape("seeds 5-6") in shown["content"]
    pictures = replies_to(fake_discord, state)
    assert [item["attachments"][0]["filename"] for item in pictures] == [
        f"{generation.id}-1.png",
        f"{generation.id}-2.png",
    ]
    for number, item in enumerate(pictures):
        assert item["content"].startswith(escape(f"{generation.id}-{number + 1}.png - seed {5 + number}"))

    # "Image info" on one of them gives its parameters.
    info = await bot.menu("Image info", "4003", pictures[0])
    assert info["type"] == 5
    text = await original(fake_discord, bot.last["token"])
    assert text.startswith(escape(f"{generation.id}-1.png (")) and escape("Seed: 5") in text


async def test_cancel_by_the_owner_only(
    bot: Harness, fake_discord: FakeDiscord, client: DaemonClient, portrait_png: bytes
) -> None:
    operator = pb.Requester(platform="cli", user="blocker-cancel")
    blocker = await client.submit(client.spec(operator, upload=True, train_steps=2000), portrait_png)
    try:
        await bot.command("distill", "4004", image=portrait(fake_discord, portrait_png))
        job = await job_of(client, "4004")
        posted = await note(client, job.id)
        shown = await fake_discord.wait_for(lambda: buttons(fake_discord.find(posted.chat, posted.message)))
        [cancel] = shown
        assert cancel["label"] == "Cancel" and cancel["style"] == 4

        job_message = fake_discord.find(posted.chat, posted.message)
        refused = await bot.click(cancel["custom_id"], "4999", job_message)
        assert refused["type"] == 4 and refused["data"]["content"] == escape(NOT_OWNER)
        assert (await client.get_job(job.id, WATCHER)).state == pb.JOB_STATE_QUEUED

        accepted = await bot.click(cancel["custom_id"], "4004", job_message)
        assert accepted["type"] == 5
        state, shown_at_end = await final(fake_discord, client, job.id)
        assert shown_at_end["content"] == f"<@4004> {escape(job.lora_name)} was cancelled."
        assert (state.chat, state.message) == (posted.chat, posted.message)
    finally:
        await client.cancel(blocker.job.id, operator)


async def test_a_restarted_bot_carries_on_with_the_same_message(
    fake_discord: FakeDiscord, client: DaemonClient, portrait_png: bytes
) -> None:
    operator = pb.Requester(platform="cli", user="blocker-restart")
    blocker = await client.submit(client.spec(operator, upload=True, train_steps=2000), portrait_png)
    first = await Harness(fake_discord, client, settings_for(fake_discord)).start()
    try:
        await first.command("distill", "4005", image=portrait(fake_discord, portrait_png))
        job = await job_of(client, "4005")
        posted = await note(client, job.id)
        await original(fake_discord, first.last["token"])
        # The interaction token has long expired by the time a real job ends: the job message must not need it.
        fake_discord.clock = lambda: time.time() + TOKEN_LIFETIME + 60
        with pytest.raises(hikari.UnauthorizedError):
            await first.bot.answer(first.bot_interaction(first.last), "too late")
    finally:
        await first.close()  # the bot goes away mid-job; the job goes on in the daemon
    await client.cancel(blocker.job.id, operator)
    edits_before = len(fake_discord.edits[posted.message])

    second = await Harness(fake_discord, client, settings_for(fake_discord)).start()
    try:
        state, shown = await final(fake_discord, client, job.id)
    finally:
        await second.close()
    assert (state.chat, state.message) == (posted.chat, posted.message)
    assert "is ready" in shown["content"]
    assert len(fake_discord.edits[posted.message]) > edits_before
    created = [post for post in fake_discord.posted if post.path.endswith("/messages") and not post.files]
    assert len(created) == 1  # the same message, edited; no second job message


async def test_a_channel_the_bot_cannot_post_in_gets_a_dm_and_429s_are_waited_out(
    bot: Harness, fake_discord: FakeDiscord, client: DaemonClient, portrait_png: bytes
) -> None:
    fake_discord.forbidden_channels.add(CHANNEL_ID)
    fake_discord.rate_limits.append(("/messages/", 0.2))  # the first edit is told to wait
    await bot.command("distill", "4006", image=portrait(fake_discord, portrait_png))
    job = await job_of(client, "4006")
    state, shown = await final(fake_discord, client, job.id)
    assert state.chat == fake_discord.dm_channels["4006"]
    assert "is ready" in shown["content"]
    assert fake_discord.limited, "the injected 429 was hit"

    # The same interaction delivered again (Discord retried it) makes no second job and no second message.
    messages = len(fake_discord.channel_messages(state.chat))
    await bot.interact(bot.last)
    assert "Already on it" in await original(fake_discord, bot.last["token"])
    again = await client.list_jobs(pb.Requester(platform="discord", workspace=GUILD_ID, user="4006"))
    assert [item.id for item in again] == [job.id]
    assert len(fake_discord.channel_messages(state.chat)) == messages
