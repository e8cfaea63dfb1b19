"""The Discord bot in HTTP-interactions mode on a loopback port, talking to the fake Discord API."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import aiohttp

from frontends.client import DaemonApi
from frontends.discord.server import HttpMode
from frontends.discord.settings import DiscordSettings
from tests.frontends.discord.fake_discord import BOT_USER_ID, GUILD_ID, FakeDiscord

# Shaped like a real one: the gateway bot reads its own id from the first part.
BOT_TOKEN = base64.b64encode(BOT_USER_ID.encode()).decode().rstrip("=") + ".fake.test-token"


def settings_for(fake: FakeDiscord, **changes: Any) -> DiscordSettings:
    """HTTP mode against the fake: its REST base, its CDN host, port 0, and a fast pace."""
    settings = DiscordSettings(
        mode="http",
        bot_token=BOT_TOKEN,
        public_key=fake.public_key,
        port=0,
        guilds=frozenset({int(GUILD_ID)}),
        api_url=fake.url,
        cdn_hosts=(fake.host,),
        cdn_scheme="http",
        update_interval=0.05,
    )
    return dataclasses.replace(settings, **changes)


class Harness:
    """One bot process's worth: start, send signed interactions, close (a restart is close + a new one)."""

    def __init__(self, fake: FakeDiscord, daemon: DaemonApi, settings: DiscordSettings) -> None:
        self.fake = fake
        self.settings = settings
        self.mode = HttpMode(settings, daemon, clock=fake.clock)
        self.session = aiohttp.ClientSession()
        self.last: dict[str, Any] = {}  # the newest interaction sent

    @property
    def bot(self) -> Any:
        return self.mode.bot

    async def start(self) -> Harness:
        await self.mode.start()
        return self

    async def close(self) -> None:
        await self.session.close()
        await self.mode.close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.mode.port}{self.settings.path}"

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        async with self.session.post(self.endpoint, data=body, headers=headers) as response:
            return response.status, await response.read()

    async def interact(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST a signed interaction; the bot's initial response (also recorded as the @original)."""
        self.last = payload
        body = json.dumps(payload).encode()
        status, answer = await self.post(body, self.fake.sign(body))
        assert status == 200, (status, answer)
        response: dict[str, Any] = json.loads(answer)
        self.fake.record_initial(payload["token"], response)
        return response

    def bot_interaction(self, payload: dict[str, Any]) -> Any:
        """The interaction as hikari reads it (to call the bot's own methods with)."""
        return self.mode.rest_bot.entity_factory.deserialize_interaction(payload)

    async def command(self, name: str, user_id: str, **options: Any) -> dict[str, Any]:
        """A slash command with its options (an attachment option takes the attachment's JSON)."""
        data: dict[str, Any] = {"id": "1", "name": name, "type": 1, "options": []}
        resolved: dict[str, Any] = {}
        for key, value in options.items():
            if isinstance(value, dict):
                resolved.setdefault("attachments", {})[value["id"]] = value
                data["options"].append({"name": key, "type": 11, "value": value["id"]})
            else:
                kind = 5 if isinstance(value, bool) else 3
                data["options"].append({"name": key, "type": kind, "value": value})
        if resolved:
            data["resolved"] = resolved
        return await self.interact(self.fake.interaction(2, data, user_id))

    async def menu(self, name: str, user_id: str, target: dict[str, Any]) -> dict[str, Any]:
        """A message context menu used on ``target``."""
        data = {
            "id": "2",
            "name": name,
            "type": 3,
            "target_id": target["id"],
            "resolved": {"messages": {target["id"]: target}},
        }
        return await self.interact(self.fake.interaction(2, data, user_id))

    async def click(self, custom_id: str, user_id: str, message: dict[str, Any]) -> dict[str, Any]:
        """A click on a button under ``message``."""
        data = {"custom_id": custom_id, "component_type": 2}
        return await self.interact(self.fake.interaction(3, data, user_id, message=message))
