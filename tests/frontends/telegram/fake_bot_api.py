"""A loopback fake of the Telegram Bot API that records every call, for tests of the real python-telegram-bot.

The bot runs with ``base_url``/``base_file_url`` pointed here. Tests push updates (messages, photos, files,
button presses) that the bot receives through getUpdates (or POST them to its webhook), then read the recorded
calls. It keeps the messages it has seen or sent, so editMessageText behaves like Telegram's: an unknown
message is "not found" and an edit that changes nothing is "message is not modified". ``fail`` injects errors
such as a 429 with retry_after.

Delivery differs from Telegram on purpose: each push is delivered once, whatever offset the bot confirms, so
pushing the same update twice is how a test models Telegram redelivering an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

TOKEN = "123456789:TEST-token_for_the_fake_api"
BOT_USER = {"id": 123456789, "is_bot": True, "first_name": "Distillery", "username": "distillery_test_bot"}
DOWNLOAD_LIMIT = 20 * 1024 * 1024
# Telegram gives private chats the user's (positive) id and supergroups ids below -100 * 10^10.
GROUP_ID = -1001234567890
# Message ids come from one counter for the whole test process: tests that share a daemon must not reuse an
# idempotency key (chat, message id), just as Telegram never reuses a message id within a chat.
_MESSAGE_IDS = itertools.count(1)


@dataclass
class Call:
    """One request the bot made: method, decoded parameters, uploaded files, and when (monotonic seconds)."""

    method: str
    params: dict[str, Any]
    at: float
    files: dict[str, bytes] = field(default_factory=dict)
    # The file name of each uploaded part ("document": "x.safetensors").
    filenames: dict[str, str] = field(default_factory=dict)
    # What the fake answered: the "result" on success, None after an error.
    result: Any = None

    @property
    def chat_id(self) -> int | None:
        value = self.params.get("chat_id")
        return int(value) if value is not None else None

    @property
    def text(self) -> str:
        return str(self.params.get("text", ""))


def user(user_id: int, first_name: str = "Ann") -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": first_name}


def private_chat(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "type": "private", "first_name": "Ann"}


def group_chat(chat_id: int = GROUP_ID) -> dict[str, Any]:
    return {"id": chat_id, "type": "supergroup", "title": "Portraits"}


def _decode(value: str) -> Any:
    """PTB sends nested objects (reply_markup, reply_parameters) as JSON strings in form fields."""
    if value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class FakeBotApi:
    """The fake server; ``await start()``, then use ``base_url`` and ``base_file_url`` in the bot."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.files: dict[str, tuple[bytes, int]] = {}
        self._pending: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1000)
        self._file_ids = itertools.count(1)
        self._failures: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- server ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # -- what tests push ------------------------------------------------------------------------------------

    def _new_message(self, chat: dict[str, Any], sender: dict[str, Any], **fields: Any) -> dict[str, Any]:
        message = {
            "message_id": next(_MESSAGE_IDS),
            "date": int(time.time()),
            "chat": chat,
            "from": sender,
            **fields,
        }
        self.messages[(int(chat["id"]), message["message_id"])] = message
        return message

    def add_file(self, data: bytes, size: int | None = None) -> dict[str, Any]:
        """Store a file; ``size`` lets a test claim a size (e.g. over 20 MB) without sending that many bytes."""
        number = next(self._file_ids)
        file_id = f"file-{number}"
        self.files[file_id] = (data, len(data) if size is None else size)
        return {"file_id": file_id, "file_unique_id": f"unique-{number}", "file_size": self.files[file_id][1]}

    def text(
        self, sender: dict[str, Any], chat: dict[str, Any], text: str, reply_to: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A text message; a leading /command gets its bot_command entity as Telegram sets it."""
        fields: dict[str, Any] = {"text": text}
        if text.startswith("/"):
            fields["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        if reply_to is not None:
            fields["reply_to_message"] = reply_to
        return self._new_message(chat, sender, **fields)

    def photo(
        self,
        sender: dict[str, Any],
        chat: dict[str, Any],
        data: bytes,
        caption: str | None = None,
        size: int | None = None,
        width: int = 512,
        height: int = 512,
    ) -> dict[str, Any]:
        """A photo as Telegram sends it: several sizes, smallest first; only the largest holds ``data``."""
        thumbnail = self.add_file(b"not the full picture")
        full = self.add_file(data, size)
        sizes = [
            {**thumbnail, "width": 90, "height": 90},
            {**full, "width": width, "height": height},
        ]
        fields: dict[str, Any] = {"photo": sizes}
        if caption is not None:
            fields["caption"] = caption
        return self._new_message(chat, sender, **fields)

    def document(
        self,
        sender: dict[str, Any],
        chat: dict[str, Any],
        data: bytes,
        caption: str | None = None,
        mime_type: str = "image/png",
        file_name: str = "portrait.png",
        size: int | None = None,
    ) -> dict[str, Any]:
        """A file sent as a document (uncompressed)."""
        stored = self.add_file(data, size)
        fields: dict[str, Any] = {"document": {**stored, "mime_type": mime_type, "file_name": file_name}}
        if caption is not None:
            fields["caption"] = caption
        return self._new_message(chat, sender, **fields)

    def update_for(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"update_id": next(self._update_ids), "message": message}

    def press(self, sender: dict[str, Any], message: dict[str, Any], data: str) -> dict[str, Any]:
        """A callback query update: ``sender`` pressed a button with ``data`` under ``message``."""
        query = {
            "id": f"query-{next(self._update_ids)}",
            "from": sender,
            "message": message,
            "chat_instance": "instance-1",
            "data": data,
        }
        return {"update_id": next(self._update_ids), "callback_query": query}

    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for the bot's next getUpdates (pushing one twice models a redelivery)."""
        self._pending.append(update)
        asyncio.get_running_loop().create_task(self._notify())
        return update

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        """Push a message as a new update; returns the update."""
        return self.push(self.update_for(message))

    def fail(self, method: str, status: int, description: str, **parameters: Any) -> None:
        """Answer the next call of ``method`` with an error, e.g. 429 with retry_after=2."""
        self._failures.setdefault(method, []).append((status, description, parameters))

    # -- what tests read ------------------------------------------------------------------------------------

    def calls_of(self, method: str, chat_id: int | None = None) -> list[Call]:
        return [
            call for call in self.calls if call.method == method and (chat_id is None or call.chat_id == chat_id)
        ]

    async def wait_for(self, predicate: Callable[[Call], bool], timeout: float = 60.0) -> Call:
        """The first recorded call (past or future) that satisfies ``predicate``."""

        def found() -> Call | None:
            return next((call for call in self.calls if predicate(call)), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), timeout)
        call = found()
        assert call is not None
        return call

    def message(self, chat_id: int, message_id: int) -> dict[str, Any]:
        return self.messages[(chat_id, message_id)]

    # -- handlers -------------------------------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        params: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        filenames: dict[str, str] = {}
        if request.method == "POST" and request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue  # PTB sends no nested multipart
                if part.filename:
                    files[str(part.name)] = bytes(await part.read())
                    filenames[str(part.name)] = part.filename
                else:
                    params[str(part.name)] = _decode(await part.text())
        elif request.method == "POST":
            if request.content_type == "application/json":
                params = dict(await request.json())
            else:
                params = {key: _decode(str(value)) for key, value in (await request.post()).items()}
        call = Call(method, params, time.monotonic(), files, filenames)
        response = await self._answer(request, call)
        if method != "getUpdates":
            # Recorded once answered, so a test that sees the call also sees its result.
            self.calls.append(call)
            await self._notify()
        return response

    async def _answer(self, request: web.Request, call: Call) -> web.Response:
        failures = self._failures.get(call.method)
        if failures:
            status, description, parameters = failures.pop(0)
            body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
            if parameters:
                body["parameters"] = parameters
            return web.json_response(body, status=status)
        handler = getattr(self, f"_method_{call.method}", None)
        if handler is None:
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        try:
            if call.method == "getUpdates":
                result = await self._get_updates(request, call.params)
            else:
                result = await handler(call.params, call.files)
        except _BadRequest as error:
            body = {"ok": False, "error_code": 400, "description": f"Bad Request: {error}"}
            return web.json_response(body, status=400)
        call.result = result
        return web.json_response({"ok": True, "result": result})

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        file_id = request.match_info["path"].rsplit("/", 1)[-1]
        self.calls.append(Call("download", {"file_id": file_id}, time.monotonic()))
        if file_id not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[file_id][0], content_type="application/octet-stream")

    async def _method_getMe(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return BOT_USER

    async def _method_deleteWebhook(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return True

    async def _method_setWebhook(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return True

    async def _method_getUpdates(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        raise AssertionError("answered by _get_updates")

    async def _get_updates(self, request: web.Request, params: dict[str, Any]) -> Any:
        timeout = min(float(params.get("timeout", 0) or 0), 0.25)  # short polls: a stopping bot waits less
        if not self._pending and timeout:
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(lambda: bool(self._pending)), timeout)
        if request.transport is None or request.transport.is_closing():
            # A stopped bot's long poll: Telegram would keep these updates for the next poll, and so do we.
            return []
        delivered, self._pending = self._pending, []
        return delivered

    def _chat(self, chat_id: Any) -> dict[str, Any]:
        chat_id = int(chat_id)
        for (known, _), message in self.messages.items():
            if known == chat_id:
                return dict(message["chat"])
        return private_chat(chat_id) if chat_id > 0 else group_chat(chat_id)

    def _bot_message(self, params: dict[str, Any], **fields: Any) -> dict[str, Any]:
        chat = self._chat(params["chat_id"])
        reply = params.get("reply_parameters")
        if isinstance(reply, dict) and (int(chat["id"]), int(reply["message_id"])) in self.messages:
            original = dict(self.messages[(int(chat["id"]), int(reply["message_id"]))])
            original.pop("reply_to_message", None)  # Telegram nests replies one level deep only
            fields["reply_to_message"] = original
        if isinstance(params.get("reply_markup"), dict):
            fields["reply_markup"] = params["reply_markup"]
        return self._new_message(chat, BOT_USER, **fields)

    async def _method_sendMessage(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return self._bot_message(params, text=params["text"])

    async def _method_editMessageText(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        key = (int(params["chat_id"]), int(params["message_id"]))
        message = self.messages.get(key)
        if message is None:
            raise _BadRequest("message to edit not found")
        markup = params.get("reply_markup")
        if message.get("text") == params["text"] and message.get("reply_markup") == markup:
            raise _BadRequest(
                "message is not modified: specified new message content and reply markup are exactly the same "
                "as a current content and reply markup of the message"
            )
        message["text"] = params["text"]
        message["edit_date"] = int(time.time())
        if markup is None:
            message.pop("reply_markup", None)
        else:
            message["reply_markup"] = markup
        return message

    async def _method_answerCallbackQuery(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return True

    @staticmethod
    def _caption(params: dict[str, Any]) -> dict[str, Any]:
        return {"caption": str(params["caption"])} if params.get("caption") else {}

    async def _method_sendPhoto(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        stored = self.add_file(files.get("photo", b""))
        photo = [{**stored, "width": 512, "height": 512}]
        return self._bot_message(params, photo=photo, **self._caption(params))

    async def _method_sendDocument(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        stored = self.add_file(files.get("document", b""))
        return self._bot_message(params, document={**stored, "file_name": "file"}, **self._caption(params))

    async def _method_sendMediaGroup(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        """One message per item; an uploaded item's ``media`` is ``attach://<part name>``."""
        media = params["media"]
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise _BadRequest("wrong number of media in the group")
        sent = []
        for item in media:
            data = files.get(str(item["media"]).removeprefix("attach://"), b"")
            photo = [{**self.add_file(data), "width": 512, "height": 512}]
            sent.append(self._bot_message(params, photo=photo, media_group_id="group-1", **self._caption(item)))
        return sent

    async def _method_getFile(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        file_id = str(params["file_id"])
        if file_id not in self.files:
            raise _BadRequest("invalid file_id")
        size = self.files[file_id][1]
        if size > DOWNLOAD_LIMIT:
            raise _BadRequest("file is too big")
        return {
            "file_id": file_id,
            "file_unique_id": f"unique-{file_id}",
            "file_size": size,
            "file_path": f"photos/{file_id}",
        }


class _BadRequest(Exception):
    """Answered as HTTP 400 "Bad Request: <message>", as Telegram does."""
