"""A fake of Discord's gateway websocket, just enough for hikari's handshake: ``GET /gateway/bot`` names it,
it says HELLO, takes IDENTIFY, answers READY, and can then dispatch an INTERACTION_CREATE. Messages go out
zlib-stream compressed (one compressor per connection, each message ending in a sync flush), as hikari asks.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any

from aiohttp import web

from tests.frontends.discord.fake_discord import APPLICATION_ID, BOT_USER_ID, FakeDiscord, user


class FakeGateway:
    """Serves the websocket on the fake REST server's app; ``identified`` is set after READY went out."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.identify: dict[str, Any] = {}
        self.identified = asyncio.Event()
        self._socket: web.WebSocketResponse | None = None
        self._compressor = zlib.compressobj()
        self._seq = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v10/gateway/bot", self._gateway_bot)
        app.router.add_get("/gateway", self._connect)

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return web.json_response(
            {"url": f"ws://{self.fake.host}/gateway", "shards": 1, "session_start_limit": limit}
        )

    async def send(self, op: int, data: Any, event: str | None = None) -> None:
        assert self._socket is not None
        payload: dict[str, Any] = {"op": op, "d": data, "t": event, "s": None}
        if op == 0:
            self._seq += 1
            payload["s"] = self._seq
        raw = self._compressor.compress(json.dumps(payload).encode())
        await self._socket.send_bytes(raw + self._compressor.flush(zlib.Z_SYNC_FLUSH))

    async def dispatch_interaction(self, interaction: dict[str, Any]) -> None:
        await self.send(0, interaction, "INTERACTION_CREATE")

    async def _connect(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._socket, self._compressor, self._seq = socket, zlib.compressobj(), 0
        await self.send(10, {"heartbeat_interval": 45_000})
        async for message in socket:
            payload = json.loads(message.data)
            if payload["op"] == 2:
                self.identify = payload["d"]
                me = {**user(BOT_USER_ID, "distillery"), "mfa_enabled": False, "flags": 0, "bot": True}
                ready = {
                    "v": 10,
                    "user": me,
                    "guilds": [],
                    "session_id": "session-1",
                    "resume_gateway_url": f"ws://{self.fake.host}/gateway",
                    "application": {"id": APPLICATION_ID, "flags": 0},
                }
                await self.send(0, ready, "READY")
                self.identified.set()
            elif payload["op"] == 1:
                await self.send(11, None)
        return socket
