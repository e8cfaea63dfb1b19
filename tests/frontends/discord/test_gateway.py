"""Gateway mode smoke test: hikari's GatewayBot does its real handshake with a fake gateway (HELLO, IDENTIFY,
READY), registers the commands over REST, and answers an interaction that arrives over the websocket through
the interaction callback endpoint."""

from __future__ import annotations

import asyncio
import dataclasses

from frontends.discord.bot import HELP
from frontends.discord.platform import clip, escape
from frontends.discord.server import run_gateway
from tests.frontends.discord.fake_discord import GUILD_ID, FakeDiscord
from tests.frontends.discord.fake_gateway import FakeGateway
from tests.frontends.discord.harness import settings_for
from tests.frontends.fakes import FakeDaemon


async def test_gateway_handshake_registration_and_an_interaction() -> None:
    fake = FakeDiscord()
    gateway = FakeGateway(fake)
    await fake.start(gateway.routes)
    daemon = FakeDaemon(platform="discord", workspace=GUILD_ID)
    stop = asyncio.Event()
    settings = dataclasses.replace(settings_for(fake), mode="gateway", public_key="")
    running = asyncio.create_task(run_gateway(settings, daemon, stop))
    try:
        async with asyncio.timeout(30):
            await gateway.identified.wait()
        assert gateway.identify["token"] == settings.bot_token
        assert gateway.identify["intents"] == 1  # GUILDS only: no privileged intent
        await fake.wait_for(lambda: fake.commands.get(GUILD_ID), timeout=30)

        interaction = fake.interaction(2, {"id": "1", "name": "help", "type": 1}, "5001")
        await gateway.dispatch_interaction(interaction)
        callback = await fake.wait_for(
            lambda: next((post for post in fake.posted if post.path.endswith("/callback")), None), timeout=30
        )
        assert callback.path == f"/api/v10/interactions/{interaction['id']}/{interaction['token']}/callback"
        assert callback.body["type"] == 4
        assert callback.body["data"]["content"] == clip(escape(HELP))
        assert callback.body["data"]["flags"] == 64
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
        await fake.close()
