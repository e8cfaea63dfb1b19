"""Fixtures for the Telegram bot's tests: the fake Bot API, a bot factory, and helpers to read what it sent."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from frontends.client import DaemonApi
from frontends.follow import ResultImage
from frontends.telegram.bot import FETCHING, DistilleryBot
from frontends.telegram.settings import Settings
from tests.frontends.telegram.fake_bot_api import TOKEN, Call, FakeBotApi
from tests.image_server import serving

StartBot = Callable[..., Awaitable[DistilleryBot]]


@pytest.fixture
async def bot_api() -> AsyncIterator[FakeBotApi]:
    api = FakeBotApi()
    await api.start()
    yield api
    await api.stop()


def settings_for(api: FakeBotApi, **overrides: Any) -> Settings:
    """Settings pointing at the fake API; short polls so a stopping bot does not wait long."""
    settings = Settings(token=TOKEN, api_url=api.base_url, api_file_url=api.base_file_url, poll_timeout=1)
    return dataclasses.replace(settings, **overrides)


@pytest.fixture
async def start_bot(bot_api: FakeBotApi) -> AsyncIterator[StartBot]:
    """``await start_bot(daemon, **settings)``: a started bot on the fake API, stopped after the test."""
    bots: list[DistilleryBot] = []

    async def start(daemon: DaemonApi, preview: ResultImage | None = None, **overrides: Any) -> DistilleryBot:
        bot = DistilleryBot(settings_for(bot_api, **overrides), daemon, preview=preview)
        await bot.start()
        bots.append(bot)
        return bot

    yield start
    for bot in bots:
        await bot.stop()


def sent_to(api: FakeBotApi, chat_id: int, method: str = "sendMessage") -> list[str]:
    """Texts the bot sent to a chat with one method."""
    return [call.text for call in api.calls_of(method, chat_id)]


async def reply_to(api: FakeBotApi, message: dict[str, Any], timeout: float = 30.0) -> Call:
    """The bot's sendMessage that replies to ``message``."""
    chat_id, message_id = message["chat"]["id"], message["message_id"]

    def replies(call: Call) -> bool:
        reply = call.params.get("reply_parameters")
        return (
            call.method == "sendMessage"
            and call.chat_id == chat_id
            and isinstance(reply, dict)
            and reply.get("message_id") == message_id
        )

    return await api.wait_for(replies, timeout)


async def answer(api: FakeBotApi, message: dict[str, Any], timeout: float = 30.0) -> str:
    """The bot's answer to ``message``: its reply, or what a "Fetching your picture..." placeholder became."""
    reply = await reply_to(api, message, timeout)
    if reply.text != FETCHING:
        return reply.text
    chat_id, message_id = reply.chat_id, reply.result["message_id"]

    def settled(call: Call) -> bool:
        return (
            call.method == "editMessageText"
            and call.chat_id == chat_id
            and int(call.params["message_id"]) == message_id
            and call.result is not None
        )

    return (await api.wait_for(settled, timeout)).text


async def final_edit(api: FakeBotApi, chat_id: int, message_id: int, timeout: float = 60.0) -> Call:
    """The edit that turned a progress message into its summary (the one without the Cancel button)."""

    def final(call: Call) -> bool:
        return (
            call.method == "editMessageText"
            and call.chat_id == chat_id
            and int(call.params["message_id"]) == message_id
            and "reply_markup" not in call.params
            and call.result is not None  # Telegram accepted it
        )

    return await api.wait_for(final, timeout)


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy (state the bot writes after a call it makes)."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {check}")
        await asyncio.sleep(0.02)
    return result


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    """A blank PNG; a 1-bit 7000x6000 one is a few KB yet over the daemon's 40 megapixel limit."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def image_server(portrait_png: bytes) -> AsyncIterator[str]:
    """A loopback web server with a portrait, a text file, a too-small and a too-large image; yields its URL."""
    files = {
        "portrait.png": (portrait_png, "image/png"),
        "notes.txt": (b"not a picture at all", "text/plain"),
        "tiny.png": (png(64, 64), "image/png"),
        "huge.png": (png(7000, 6000, "1"), "image/png"),
    }

    async with serving(files) as site:
        yield site
