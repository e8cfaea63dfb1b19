"""A loopback fake of the parts of Slack the bot talks to, recording every call.

Web API methods under ``/api/<method>`` (auth.test, chat.postMessage, chat.update, chat.postEphemeral,
conversations.open, files.info, files.getUploadURLExternal, files.completeUploadExternal,
apps.connections.open), the upload URLs files_upload_v2 posts to, private files under ``/files-pri/`` that
need the bot token (and answer Slack's HTML sign-in page otherwise, with HTTP 200 as Slack does), public
images under ``/images/`` for the daemon to fetch, a response_url under ``/respond`` (recorded in
``responses``), and a Socket Mode websocket under ``/socket``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
TEAM = "T0TEAM"
BOT_USER = "U0BOT"
LOGIN_PAGE = b"<!DOCTYPE html>\n<html><head><title>Slack</title></head><body>Sign in to Slack</body></html>"


@dataclass
class Call:
    """One Web API call as the fake received it: the method and its merged parameters."""

    method: str
    params: dict[str, Any]


@dataclass
class Upload:
    file_id: str
    filename: str
    data: bytes = b""
    completed: dict[str, Any] = field(default_factory=dict)


class FakeSlack:
    """Start with ``await FakeSlack().start()``; ``url`` is its base, ``api_url`` goes to AsyncWebClient."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.file_data: dict[str, bytes] = {}
        self.unreadable: set[str] = set()
        self.public: dict[str, tuple[bytes, str]] = {}
        self.uploads: dict[str, Upload] = {}
        self.no_access: set[str] = set()
        self.rate_limits: list[float] = []
        # method -> Slack error code it answers with (ok: false), to drive the bot's failure paths.
        self.failures: dict[str, str] = {}
        self.downloads: list[tuple[str, str]] = []
        self.responses: list[dict[str, Any]] = []
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.changed = asyncio.Event()
        # Socket Mode: the bot's websocket and the acks it sent, by envelope id.
        self.socket: web.WebSocketResponse | None = None
        self.socket_connected = asyncio.Event()
        self.socket_acks: dict[str, asyncio.Future[dict[str, Any]]] = {}

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    @property
    def response_url(self) -> str:
        return f"{self.url}/respond"

    @property
    def file_prefix(self) -> str:
        return f"{self.url}/files-pri/"

    async def start(self) -> FakeSlack:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # files.info is a GET
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files-pri/{path:.*}", self._private_file)
        app.router.add_get("/images/{name}", self._public_file)
        app.router.add_post("/respond", self._respond)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what tests set up and look at ----------------------------------------------------------------------

    def add_file(
        self,
        name: str,
        data: bytes,
        mimetype: str = "image/png",
        *,
        readable: bool = True,
        size: int | None = None,
    ) -> dict[str, Any]:
        """A private file as a file_share event carries it."""
        file_id = f"F{next(self._ids):04d}"
        item = {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "size": len(data) if size is None else size,
            "url_private": f"{self.file_prefix}{TEAM}-{file_id}/{name}",
            "url_private_download": f"{self.file_prefix}{TEAM}-{file_id}/download/{name}",
        }
        self.files[file_id] = item
        self.file_data[file_id] = data
        if not readable:
            self.unreadable.add(file_id)
        return item

    def add_public(self, name: str, data: bytes, content_type: str = "image/png") -> str:
        """An image anyone may fetch (for /distill <url>); returns its URL."""
        self.public[name] = (data, content_type)
        return f"{self.url}/images/{name}"

    def of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        return self.messages[(channel, ts)]

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Until predicate() is true: re-checked after every call the fake answers, and every 20 ms (for
        conditions on the daemon's side)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.02)

    # -- the Web API ----------------------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            params.update(await request.json())
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            params.update({key: value for key, value in (await request.post()).items() if isinstance(value, str)})
        for key in ("blocks", "files"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        return params

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.calls.append(Call(method, params))
        try:
            expected = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
            if token != expected:
                return web.json_response({"ok": False, "error": "invalid_auth"})
            if method in ("chat.update", "chat.postMessage") and self.rate_limits:
                wait = self.rate_limits.pop(0)
                return web.json_response(
                    {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": f"{wait:g}"}
                )
            if method in self.failures:
                return web.json_response({"ok": False, "error": self.failures[method]})
            handler = getattr(self, "_" + method.replace(".", "_"), None)
            if handler is None:
                return web.json_response({"ok": False, "error": "unknown_method"})
            return web.json_response(handler(params))
        finally:
            self.changed.set()

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://test.slack.com/",
            "team": "Test",
            "user": "distillery",
            "team_id": TEAM,
            "user_id": BOT_USER,
            "bot_id": "B0BOT",
            "is_enterprise_install": False,
        }

    def _chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel", ""))
        if channel in self.no_access:
            return {"ok": False, "error": "not_in_channel"}
        if channel.startswith("U"):
            channel = "D" + channel[1:]  # posting to a user id lands in the DM with the bot
        ts = f"1700000000.{next(self._ts):06d}"
        self.messages[(channel, ts)] = {"text": params.get("text", ""), "blocks": params.get("blocks", [])}
        return {"ok": True, "channel": channel, "ts": ts, "message": {"text": params.get("text", "")}}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        key = (str(params.get("channel", "")), str(params.get("ts", "")))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        self.messages[key] = {"text": params.get("text", ""), "blocks": params.get("blocks", [])}
        return {"ok": True, "channel": key[0], "ts": key[1]}

    def _chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("channel") in self.no_access:
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "message_ts": f"1700000000.{next(self._ts):06d}"}

    def _conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "channel": {"id": "D" + str(params.get("users", ""))[1:]}}

    def _files_info(self, params: dict[str, Any]) -> dict[str, Any]:
        item = self.files.get(str(params.get("file", "")))
        return {"ok": True, "file": item} if item else {"ok": False, "error": "file_not_found"}

    def _files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = f"F{next(self._ids):04d}"
        self.uploads[file_id] = Upload(file_id=file_id, filename=str(params.get("filename", "")))
        return {"ok": True, "upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    def _files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        done = []
        for item in params.get("files", []):
            upload = self.uploads.get(item["id"])
            if upload is None or not upload.data:
                return {"ok": False, "error": "file_not_found"}
            upload.completed = {**params, "title": item.get("title", "")}
            done.append({"id": upload.file_id, "name": upload.filename, "title": item.get("title", "")})
        return {"ok": True, "files": done}

    def _apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"{self.url.replace('http', 'ws', 1)}/socket"}

    # -- files ----------------------------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["file_id"])
        if upload is None:
            return web.Response(status=404)
        upload.data = await request.read()
        self.changed.set()
        return web.Response(text=f"OK - {len(upload.data)}")

    async def _private_file(self, request: web.Request) -> web.Response:
        file_id = request.match_info["path"].split("/", 1)[0].removeprefix(f"{TEAM}-")
        authorization = request.headers.get("Authorization", "")
        self.downloads.append((file_id, authorization))
        if file_id not in self.file_data:
            return web.Response(status=404)
        if authorization != f"Bearer {BOT_TOKEN}" or file_id in self.unreadable:
            # What Slack does without a token or without files:read: a 200 with its sign-in page.
            return web.Response(body=LOGIN_PAGE, content_type="text/html")
        item = self.files[file_id]
        return web.Response(body=self.file_data[file_id], content_type=item["mimetype"])

    async def _respond(self, request: web.Request) -> web.Response:
        self.responses.append(await request.json())
        self.changed.set()
        return web.Response(text="ok")

    async def _public_file(self, request: web.Request) -> web.Response:
        found = self.public.get(request.match_info["name"])
        if found is None:
            return web.Response(status=404, text="no such image")
        data, content_type = found
        return web.Response(body=data, content_type=content_type)

    # -- Socket Mode ----------------------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self.socket = socket
        await socket.send_json({"type": "hello", "num_connections": 1, "debug_info": {"host": "fake"}})
        self.socket_connected.set()
        async for message in socket:
            if message.type != WSMsgType.TEXT:
                continue
            reply = json.loads(message.data)
            future = self.socket_acks.get(reply.get("envelope_id", ""))
            if future is not None and not future.done():
                future.set_result(reply)
        return socket

    async def send_envelope(self, kind: str, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Deliver a request over Socket Mode the way Slack does; returns the bot's acknowledgement."""
        await asyncio.wait_for(self.socket_connected.wait(), timeout)
        assert self.socket is not None
        envelope_id = f"env-{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.socket_acks[envelope_id] = future
        await self.socket.send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": 0,
                "retry_reason": "",
            }
        )
        return await asyncio.wait_for(future, timeout)
