"""Webhook mode: a small aiohttp server that takes Telegram's POSTs and feeds them to the Application.

Anyone who learns the URL can POST to it, so every request must carry the secret registered with setWebhook in
the ``X-Telegram-Bot-Api-Secret-Token`` header; anything else is answered 403 and never reaches a handler.
Run it behind a reverse proxy that terminates TLS (Telegram only posts to HTTPS).
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from aiohttp import web
from telegram import Update
from telegram.ext import Application

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class WebhookServer:
    """Accepts updates at ``path`` on ``host:port`` (port 0 picks a free one; see ``port`` after start)."""

    def __init__(
        self, application: Application[Any, Any, Any, Any, Any, Any], secret: str, path: str, host: str, port: int
    ) -> None:
        if not secret:
            raise ValueError("a webhook needs a secret token")
        self.application = application
        self.secret = secret.encode()
        self.path = path
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(self.path, self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self._runner.addresses:  # with port 0, the port the OS picked
            self.port = int(self._runner.addresses[0][1])
        log.info("webhook listening on %s:%d%s", self.host, self.port, self.path)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self.secret):
            log.warning("webhook request from %s without the right secret token", request.remote)
            return web.Response(status=403, text="forbidden")
        try:
            data = await request.json()
            update = Update.de_json(data, self.application.bot)
        except (json.JSONDecodeError, ValueError, TypeError, KeyError) as error:
            log.warning("webhook request with an unreadable update: %s", error)
            return web.Response(status=400, text="bad update")
        await self.application.update_queue.put(update)
        return web.Response(text="ok")
