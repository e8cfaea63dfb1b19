"""Running the bot in either mode until told to stop.

Socket Mode opens an outbound websocket with the app-level token: no public endpoint, nothing to sign.
HTTP mode serves Slack's requests on ``host:port`` + ``path`` (behind a TLS-terminating proxy); bolt's
request verification checks each request's signing-secret HMAC and refuses timestamps more than five
minutes away, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from frontends.client import DaemonClient
from frontends.slack.app import SlackBot
from frontends.slack.settings import SlackSettings
from frontends.sources import SettingsError

log = logging.getLogger(__name__)


def web_app(bot: SlackBot, path: str) -> web.Application:
    """The HTTP-mode endpoint: Slack's POSTs go through bolt (signature check first); GET /healthz for probes."""

    async def slack_request(request: web.Request) -> web.StreamResponse:
        bolt_response = await bot.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def health(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    application = web.Application()
    application.router.add_post(path, slack_request)
    application.router.add_get("/healthz", health)
    return application


async def check_token(client: AsyncWebClient) -> None:
    """Fail at start, with a clear sentence, when Slack rejects the bot token; tolerate Slack being unreachable."""
    try:
        identity = await client.auth_test()
    except SlackApiError as error:
        raise SettingsError(f"Slack rejected the bot token ({error.response.get('error')})") from None
    except (OSError, TimeoutError) as error:
        log.warning("cannot reach Slack to check the bot token yet: %s", error)
        return
    log.info("signed in to Slack workspace %s as %s", identity.get("team"), identity.get("user"))


async def serve(bot: SlackBot, settings: SlackSettings, stop: asyncio.Event) -> None:
    """Take Slack's requests in the configured mode until ``stop`` is set, then close the endpoint."""
    if settings.mode == "http":
        runner = web.AppRunner(web_app(bot, settings.path))
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port).start()
        log.info("HTTP mode: listening on %s:%d%s", settings.host, settings.port, settings.path)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
        return
    handler = AsyncSocketModeHandler(bot.app, app_token=settings.app_token)
    # slack-bolt leaves these two unannotated.
    await handler.connect_async()  # type: ignore[no-untyped-call]
    log.info("Socket Mode: connected")
    try:
        await stop.wait()
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]


async def run(settings: SlackSettings, stop: asyncio.Event) -> None:
    """The whole bot: daemon client, Slack client, listeners, re-attach, serving, and an orderly stop."""
    daemon = DaemonClient(settings.daemon_target, settings.daemon_token or None)
    client = AsyncWebClient(token=settings.bot_token, base_url=settings.api_url)
    bot = SlackBot(settings, daemon, client)
    try:
        await check_token(client)
        await bot.start()
        await serve(bot, settings, stop)
    finally:
        await bot.close()
        await daemon.close()
