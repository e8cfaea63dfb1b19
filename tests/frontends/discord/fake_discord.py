"""A loopback fake of the Discord REST API, enough for hikari and the bot: command registration, interaction
callbacks, ``@original`` and follow-ups, channel messages (JSON and multipart), DM channels, a CDN path for
attachments, injected 429s with ``retry_after``, and 401 for an interaction token older than 15 minutes on an
injectable clock. Interactions themselves are built here and signed with a test key (``sign``).

Messages are complete message objects: hikari reads every field of what it gets back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import nacl.signing
from aiohttp import typedefs as web_types
from aiohttp import web

APPLICATION_ID = "700000000000000001"
BOT_USER_ID = APPLICATION_ID
GUILD_ID = "800000000000000001"
CHANNEL_ID = "900000000000000001"
# The interaction token's life: Discord refuses follow-ups and @original edits after it.
TOKEN_LIFETIME = 15 * 60
_IDS = itertools.count(1_000_000_000_000_000_001)
_TIMESTAMP = "2026-01-01T00:00:00.000000+00:00"


def snowflake() -> str:
    return str(next(_IDS))


def user(user_id: str, name: str = "") -> dict[str, Any]:
    return {
        "id": user_id,
        "username": name or f"user{user_id[-4:]}",
        "discriminator": "0",
        "global_name": None,
        "avatar": None,
        "public_flags": 0,
        "bot": user_id == BOT_USER_ID,
    }


def attachment(url: str, filename: str, size: int, media_type: str = "image/png") -> dict[str, Any]:
    return {
        "id": snowflake(),
        "filename": filename,
        "size": size,
        "url": url,
        "proxy_url": url,
        "content_type": media_type,
        "width": 64,
        "height": 64,
    }


def message(channel: str, content: str, author: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": snowflake(),
        "channel_id": channel,
        "author": author,
        "content": content,
        "timestamp": _TIMESTAMP,
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "type": 0,
        "flags": 0,
        "components": [],
    }
    body.update(extra)
    return body


@dataclass
class Posted:
    """One write the bot made: where, what, and the files with it (name -> bytes)."""

    method: str
    path: str
    body: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)


class FakeDiscord:
    """The fake API; ``url`` is its REST base (``rest_url``) once started, ``cdn`` the attachment host."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.signing_key = nacl.signing.SigningKey.generate()
        self.public_key = self.signing_key.verify_key.encode().hex()
        self.messages: dict[str, dict[str, dict[str, Any]]] = {}
        self.edits: dict[str, list[str]] = {}  # message id -> every content it showed, in order
        self.posted: list[Posted] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.cdn_files: dict[str, bytes] = {}
        self.forbidden_channels: set[str] = set()
        self.dm_channels: dict[str, str] = {}
        self.originals: dict[str, dict[str, Any]] = {}  # interaction token -> the @original message
        self.tokens: dict[str, float] = {}  # interaction token -> when it was issued
        self.rate_limits: list[tuple[str, float]] = []  # (path fragment, retry_after) to answer once with 429
        self.limited: list[str] = []
        self.changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.host = ""

    # -- life cycle -----------------------------------------------------------------------------------------

    async def start(self, extra: Callable[[web.Application], None] | None = None) -> FakeDiscord:
        """Serve on a free loopback port; ``extra`` adds routes (the gateway's)."""
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._limits])
        if extra is not None:
            extra(app)
        add = app.router.add_route
        add("GET", "/api/v10/oauth2/applications/@me", self._application)
        add("GET", "/api/v10/users/@me/guilds", self._guilds)
        add("PUT", "/api/v10/applications/{app}/guilds/{guild}/commands", self._set_commands)
        add("POST", "/api/v10/interactions/{id}/{token}/callback", self._callback)
        add("GET", "/api/v10/webhooks/{app}/{token}/messages/@original", self._get_original)
        add("PATCH", "/api/v10/webhooks/{app}/{token}/messages/@original", self._edit_original)
        add("POST", "/api/v10/webhooks/{app}/{token}", self._follow_up)
        add("POST", "/api/v10/channels/{channel}/messages", self._create_message)
        add("PATCH", "/api/v10/channels/{channel}/messages/{message}", self._edit_message)
        add("POST", "/api/v10/users/@me/channels", self._dm)
        add("GET", "/cdn/{name}", self._cdn)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://{self.host}/api/v10"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what tests set up and read -------------------------------------------------------------------------

    def cdn_url(self, name: str, data: bytes) -> str:
        self.cdn_files[name] = data
        return f"http://{self.host}/cdn/{name}"

    def sign(self, body: bytes, timestamp: str | None = None) -> dict[str, str]:
        """The headers Discord sends with an interaction POST, signed with the application's key."""
        stamp = timestamp if timestamp is not None else str(int(self.clock()))
        signature = self.signing_key.sign(stamp.encode() + body).signature.hex()
        return {
            "X-Signature-Ed25519": signature,
            "X-Signature-Timestamp": stamp,
            "Content-Type": "application/json",
        }

    def interaction(
        self,
        kind: int,
        data: dict[str, Any],
        user_id: str,
        *,
        channel: str = CHANNEL_ID,
        guild: str | None = GUILD_ID,
        message: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An interaction payload (2 command, 3 component) whose token this fake then honours."""
        token = f"token-{snowflake()}"
        self.tokens[token] = self.clock()
        payload: dict[str, Any] = {
            "id": snowflake(),
            "application_id": APPLICATION_ID,
            "type": kind,
            "data": data,
            "channel": {"id": channel, "type": 0, "name": "general", "permissions": "0"},
            "channel_id": channel,
            "token": token,
            "version": 1,
            "locale": "en-US",
            "app_permissions": "0",
            "entitlements": [],
            "authorizing_integration_owners": {"0": guild or "0"},
            "context": 0 if guild else 1,
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if guild:
            payload["guild_id"] = guild
            payload["guild_locale"] = "en-US"
            payload["member"] = {
                "user": user(user_id),
                "roles": [],
                "joined_at": _TIMESTAMP,
                "deaf": False,
                "mute": False,
                "permissions": "0",
                "flags": 0,
            }
        else:
            payload["user"] = user(user_id)
        if message is not None:
            payload["message"] = message
        return payload

    def channel_messages(self, channel: str) -> list[dict[str, Any]]:
        return list(self.messages.get(channel, {}).values())

    def find(self, channel: str, message_id: str) -> dict[str, Any]:
        return self.messages[channel][message_id]

    async def wait_for(self, check: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Until check() returns something truthy after a write; that value."""
        async with asyncio.timeout(timeout), self.changed:
            while not (result := check()):
                await self.changed.wait()
            return result

    # -- handlers -------------------------------------------------------------------------------------------

    @web.middleware
    async def _limits(self, request: web.Request, handler: web_types.Handler) -> web.StreamResponse:
        for number, (fragment, retry_after) in enumerate(self.rate_limits):
            if fragment in request.path and request.method != "GET":
                del self.rate_limits[number]
                self.limited.append(request.path)
                body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
                return web.json_response(body, status=429, headers={"Retry-After": str(retry_after)})
        return await handler(request)

    async def _changed(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def _application(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "id": APPLICATION_ID,
                "name": "distillery",
                "icon": None,
                "description": "",
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": user("1"),
                "verify_key": self.public_key,
                "flags": 0,
                "approximate_guild_count": 1,
                "approximate_user_install_count": 0,
            }
        )

    async def _guilds(self, request: web.Request) -> web.Response:
        guild: dict[str, Any] = {
            "id": GUILD_ID,
            "name": "test",
            "icon": None,
            "features": [],
            "owner": False,
            "permissions": "0",
            "approximate_member_count": 2,
            "approximate_presence_count": 1,
        }
        return web.json_response([guild] if "after" not in request.query else [])

    async def _set_commands(self, request: web.Request) -> web.Response:
        commands = await request.json()
        guild = request.match_info["guild"]
        for command in commands:
            command.update(id=snowflake(), application_id=APPLICATION_ID, guild_id=guild, version="1")
            command.setdefault("type", 1)
            command.setdefault("description", "")
            command.setdefault("default_member_permissions", None)
        self.commands[guild] = commands
        await self._changed()
        return web.json_response(commands)

    def _expired(self, token: str) -> bool:
        issued = self.tokens.get(token)
        return issued is None or self.clock() - issued > TOKEN_LIFETIME

    async def _callback(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if self._expired(token):
            return _unauthorized()
        body, files = await _read(request)
        self.record_initial(token, body)
        self.posted.append(Posted(request.method, request.path, body, files))
        await self._changed()
        return web.Response(status=204)

    def record_initial(self, token: str, response: dict[str, Any]) -> None:
        """The interaction's initial response (HTTP mode: what the bot answered the POST with)."""
        data = response.get("data") or {}
        self.originals[token] = message(
            CHANNEL_ID, str(data.get("content") or ""), user(BOT_USER_ID), flags=int(data.get("flags") or 0)
        )

    async def _get_original(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if self._expired(token) or token not in self.originals:
            return _unauthorized() if self._expired(token) else _unknown("Unknown Message", 10008)
        return web.json_response(self.originals[token])

    async def _edit_original(self, request: web.Request) -> web.Response:
        return await self._webhook_write(request, original=True)

    async def _follow_up(self, request: web.Request) -> web.Response:
        return await self._webhook_write(request, original=False)

    async def _webhook_write(self, request: web.Request, original: bool) -> web.Response:
        """An edit of the @original or a follow-up: both need an interaction token younger than 15 minutes."""
        token = request.match_info["token"]
        if self._expired(token):
            return _unauthorized()
        body, files = await _read(request)
        target = message(CHANNEL_ID, "", user(BOT_USER_ID))
        if original:
            target = self.originals.setdefault(token, target)
        _apply(target, body, files, self)
        self.posted.append(Posted(request.method, request.path, body, files))
        await self._changed()
        return web.json_response(target)

    async def _create_message(self, request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        if channel in self.forbidden_channels:
            return web.json_response({"message": "Missing Access", "code": 50001}, status=403)
        body, files = await _read(request)
        created = message(channel, "", user(BOT_USER_ID))
        _apply(created, body, files, self)
        self.messages.setdefault(channel, {})[created["id"]] = created
        self.edits[created["id"]] = [created["content"]]
        self.posted.append(Posted(request.method, request.path, body, files))
        await self._changed()
        return web.json_response(created)

    async def _edit_message(self, request: web.Request) -> web.Response:
        channel, message_id = request.match_info["channel"], request.match_info["message"]
        existing = self.messages.get(channel, {}).get(message_id)
        if existing is None:
            return _unknown("Unknown Message", 10008)
        body, files = await _read(request)
        _apply(existing, body, files, self)
        existing["edited_timestamp"] = _TIMESTAMP
        self.edits[message_id].append(existing["content"])
        self.posted.append(Posted(request.method, request.path, body, files))
        await self._changed()
        return web.json_response(existing)

    async def _dm(self, request: web.Request) -> web.Response:
        recipient = str((await request.json())["recipient_id"])
        channel = self.dm_channels.setdefault(recipient, snowflake())
        return web.json_response(
            {"id": channel, "type": 1, "last_message_id": None, "recipients": [user(recipient)]}
        )

    async def _cdn(self, request: web.Request) -> web.Response:
        data = self.cdn_files.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="image/png")


def _unauthorized() -> web.Response:
    return web.json_response({"message": "Invalid Webhook Token", "code": 50027}, status=401)


def _unknown(what: str, code: int) -> web.Response:
    return web.json_response({"message": what, "code": code}, status=404)


async def _read(request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A JSON body, or a multipart one (payload_json plus files[n])."""
    if not request.content_type.startswith("multipart/"):
        return (await request.json() if request.can_read_body else {}), {}
    body: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        assert isinstance(part, aiohttp.BodyPartReader)
        if part.name == "payload_json":
            body = json.loads(await part.read())
        else:
            files[part.filename or part.name or ""] = bytes(await part.read())
    return body, files


def _apply(target: dict[str, Any], body: dict[str, Any], files: dict[str, bytes], fake: FakeDiscord) -> None:
    """A create or edit body onto a stored message, with the message shape Discord answers with."""
    if "content" in body:
        target["content"] = body["content"] or ""
    if "components" in body:
        target["components"] = _components(body["components"] or [])
    if "flags" in body and body["flags"] is not None:
        target["flags"] = int(body["flags"])
    if files:
        target["attachments"] = [
            attachment(fake.cdn_url(f"{snowflake()}-{name}", data), name, len(data))
            for name, data in files.items()
        ]
    if "allowed_mentions" in body:
        target["allowed_mentions"] = body["allowed_mentions"]
    if "message_reference" in body:
        target["message_reference"] = {"type": 0, "channel_id": target["channel_id"], **body["message_reference"]}


def _components(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as Discord echoes them (buttons get the fields hikari expects)."""
    echoed = []
    for row in rows:
        buttons = [
            {"disabled": False, **button, "id": index} for index, button in enumerate(row.get("components", []))
        ]
        echoed.append({"type": 1, "id": 100, "components": buttons})
    return echoed


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Every button under a stored message."""
    return [button for row in message.get("components", []) for button in row.get("components", [])]
