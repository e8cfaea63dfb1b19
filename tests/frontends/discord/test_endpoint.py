"""The HTTP interactions endpoint: signatures, timestamps, body cap, health, ping, command registration and
the allow-lists, against the fake Discord API (no daemon call is made)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from frontends.discord.bot import NOT_ALLOWED
from frontends.discord.platform import escape
from tests.frontends.discord.fake_discord import CHANNEL_ID, GUILD_ID, FakeDiscord, message, user
from tests.frontends.discord.harness import Harness, settings_for
from tests.frontends.fakes import FakeDaemon

ALLOWED_USER = "111111111111111111"
STRANGER = "222222222222222222"


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon(platform="discord", workspace=GUILD_ID)


@pytest.fixture
async def harness(fake_discord: FakeDiscord, daemon: FakeDaemon) -> AsyncIterator[Harness]:
    settings = settings_for(fake_discord, allowed_users=frozenset({int(ALLOWED_USER)}))
    harness = await Harness(fake_discord, daemon, settings).start()
    yield harness
    await harness.close()


async def test_commands_are_registered_in_the_guild(harness: Harness, fake_discord: FakeDiscord) -> None:
    registered = {(command["name"], command["type"]) for command in fake_discord.commands[GUILD_ID]}
    names = ("distill", "serve", "upscale", "lora", "loras", "info", "stats", "models", "help")
    slash = {(name, 1) for name in names}
    assert registered == slash | {("Distill this", 3), ("Image info", 3), ("Upscale", 3)}
    distill = next(command for command in fake_discord.commands[GUILD_ID] if command["name"] == "distill")
    assert [option["name"] for option in distill["options"]] == ["image", "url", "class", "noflip"]
    for name in ("serve", "upscale"):
        command = next(command for command in fake_discord.commands[GUILD_ID] if command["name"] == name)
        assert [(option["name"], option["type"], option["required"]) for option in command["options"]] == [
            ("prompt", 3, True)
        ]


async def test_a_ping_is_answered_with_a_pong(harness: Harness, fake_discord: FakeDiscord) -> None:
    body = json.dumps({"id": "1", "application_id": "1", "type": 1, "token": "t", "version": 1}).encode()
    status, answer = await harness.post(body, fake_discord.sign(body))
    assert status == 200 and json.loads(answer) == {"type": 1}


async def test_a_bad_signature_is_401(harness: Harness, fake_discord: FakeDiscord) -> None:
    body = json.dumps({"id": "1", "application_id": "1", "type": 1, "token": "t", "version": 1}).encode()
    headers = fake_discord.sign(body)
    tampered = body.replace(b'"type": 1', b'"type": 2')
    assert (await harness.post(tampered, headers))[0] == 401
    headers["X-Signature-Ed25519"] = "00" * 64
    assert (await harness.post(body, headers))[0] == 401
    del headers["X-Signature-Ed25519"]
    assert (await harness.post(body, headers))[0] == 401


async def test_a_timestamp_more_than_five_minutes_off_is_401(harness: Harness, fake_discord: FakeDiscord) -> None:
    body = json.dumps({"id": "1", "application_id": "1", "type": 1, "token": "t", "version": 1}).encode()
    now = int(fake_discord.clock())
    # Correctly signed, but replayed six minutes later (or sent from a clock six minutes ahead).
    assert (await harness.post(body, fake_discord.sign(body, str(now - 360))))[0] == 401
    assert (await harness.post(body, fake_discord.sign(body, str(now + 360))))[0] == 401
    assert (await harness.post(body, fake_discord.sign(body, str(now - 240))))[0] == 200


async def test_a_huge_body_is_refused_before_anything_else(harness: Harness, fake_discord: FakeDiscord) -> None:
    body = b"{" + b" " * (harness.settings.max_body_bytes + 10) + b"}"
    assert (await harness.post(body, fake_discord.sign(body)))[0] == 413


async def test_health(harness: Harness) -> None:
    async with harness.session.get(f"http://127.0.0.1:{harness.mode.port}/healthz") as response:
        assert response.status == 200 and await response.text() == "ok\n"


@pytest.mark.parametrize("command", ["distill", "serve", "stats"])
async def test_a_user_outside_the_allow_list_is_refused_politely(
    harness: Harness, daemon: FakeDaemon, command: str
) -> None:
    options = {"prompt": "a cat"} if command == "serve" else {}
    response = await harness.command(command, STRANGER, **options)
    assert response["type"] == 4  # an immediate message, not a deferral: nothing was started
    assert response["data"]["content"] == escape(NOT_ALLOWED)
    assert response["data"]["flags"] == 64  # only the stranger sees it
    assert response["data"]["allowed_mentions"]["parse"] == []
    assert [name for name in daemon.methods() if name != "list_jobs"] == []  # nothing reached the daemon


async def test_buttons_and_menus_check_the_allow_list_too(harness: Harness) -> None:
    job_message = message(CHANNEL_ID, "Distilling", user(ALLOWED_USER))
    clicked = await harness.click(f"cancel:{STRANGER}:job1", STRANGER, job_message)
    assert clicked["data"]["content"] == escape(NOT_ALLOWED)
    menu = await harness.menu("Distill this", STRANGER, job_message)
    assert menu["data"]["content"] == escape(NOT_ALLOWED)
