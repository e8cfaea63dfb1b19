"""Running the bot in either mode until told to stop.

Gateway mode (the default) keeps an outbound websocket to Discord: no public URL, nothing to sign, and no
privileged intent (interactions arrive to every bot). HTTP mode serves Discord's interaction POSTs on
``host:port`` + ``path`` behind a TLS-terminating proxy. Our own aiohttp handler sits in front of hikari's
``RESTBot``: it caps the body, refuses a timestamp more than five minutes away (a captured request cannot be
replayed later) and answers 401 to a bad Ed25519 signature, as Discord requires; hikari alone would answer
400 and never look at the time. ``GET /healthz`` is for probes. Either way the commands are registered per
guild at start and the bot re-attaches to the jobs a previous run left behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import hikari
import nacl.exceptions
import nacl.signing
from aiohttp import web

from frontends.client import DaemonApi, DaemonClient
from frontends.discord import commands
from frontends.discord.bot import Builder, DiscordBot
from frontends.discord.settings import DiscordSettings
from frontends.sources import SettingsError

log = logging.getLogger(__name__)

Clock = Callable[[], float]
SIGNATURE = "X-Signature-Ed25519"
TIMESTAMP = "X-Signature-Timestamp"


def verified(key: nacl.signing.VerifyKey, body: bytes, signature: str, timestamp: str) -> bool:
    """Whether Discord signed timestamp + body with the application's key."""
    try:
        key.verify(timestamp.encode() + body, bytes.fromhex(signature))
    except (nacl.exceptions.BadSignatureError, ValueError):
        return False
    return True


def web_app(
    server: hikari.impl.InteractionServer, settings: DiscordSettings, clock: Clock = time.time
) -> web.Application:
    """The HTTP-mode endpoint: checks first, then hikari dispatches to the bot's listeners."""
    key = nacl.signing.VerifyKey(bytes.fromhex(settings.public_key))

    def refuse(status: int, why: str) -> web.Response:
        log.info("refused an interaction request: %s", why)
        return web.Response(status=status, text=why + "\n")

    async def interaction(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return refuse(413, "request body too large")
        signature, timestamp = request.headers.get(SIGNATURE, ""), request.headers.get(TIMESTAMP, "")
        try:
            skew = abs(clock() - int(timestamp))
        except ValueError:
            return refuse(401, "missing or malformed timestamp")
        if skew > settings.max_clock_skew:
            return refuse(401, "timestamp too far from now")
        if not verified(key, body, signature, timestamp):
            return refuse(401, "invalid request signature")
        return await server.aiohttp_hook(request)

    async def health(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    application = web.Application(client_max_size=settings.max_body_bytes)
    application.router.add_post(settings.path, interaction)
    application.router.add_get("/healthz", health)
    return application


async def respond(interaction: hikari.PartialInteraction, builder: Builder) -> None:
    """Gateway mode: send the listener's answer through the interaction callback endpoint."""
    if not isinstance(interaction, hikari.CommandInteraction | hikari.ComponentInteraction):
        return
    # A deferral has no content; an immediate answer mentions nobody (as the builder says in HTTP mode).
    content = builder.content if isinstance(builder, hikari.api.InteractionMessageBuilder) else hikari.UNDEFINED
    await interaction.app.rest.create_interaction_response(
        interaction,
        interaction.token,
        builder.type,
        content,
        flags=builder.flags,
        mentions_everyone=False,
        user_mentions=False,
        role_mentions=False,
    )


def _quiet(settings: DiscordSettings) -> dict[str, Any]:
    """hikari's options for a bot that logs through our handlers: no banner, no logging setup of its own."""
    return {"banner": None, "logs": None, "suppress_optimization_warning": True, "rest_url": settings.api_url}


class HttpMode:
    """HTTP interactions: a RESTBot whose own server is never started; our endpoint calls it."""

    def __init__(self, settings: DiscordSettings, daemon: DaemonApi, clock: Clock = time.time) -> None:
        self.settings = settings
        self.rest_bot = hikari.RESTBot(settings.bot_token, "Bot", settings.public_key, **_quiet(settings))
        self.bot = DiscordBot(settings, daemon, self.rest_bot.rest)
        self.rest_bot.set_listener(hikari.CommandInteraction, self.bot.on_command)
        self.rest_bot.set_listener(hikari.ComponentInteraction, self.bot.on_component)
        server = self.rest_bot.interaction_server
        assert isinstance(server, hikari.impl.InteractionServer)
        self.runner = web.AppRunner(web_app(server, settings, clock))
        self.port = 0

    async def start(self) -> None:
        """Register the commands, re-attach, then listen (``port`` is the one bound: settings may say 0)."""
        rest = self.rest_bot.rest
        assert isinstance(rest, hikari.impl.RESTClientImpl)
        rest.start()
        await startup(self.bot, self.settings)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.settings.host, self.settings.port).start()
        self.port = self.runner.addresses[0][1]
        log.info("HTTP mode: listening on %s:%d%s", self.settings.host, self.port, self.settings.path)

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.bot.close()
        await self.rest_bot.rest.close()


async def run_http(settings: DiscordSettings, daemon: DaemonApi, stop: asyncio.Event) -> None:
    """HTTP mode until ``stop`` is set."""
    mode = HttpMode(settings, daemon)
    try:
        await mode.start()
        await stop.wait()
    finally:
        await mode.close()


async def run_gateway(settings: DiscordSettings, daemon: DaemonApi, stop: asyncio.Event) -> None:
    """Gateway mode: interactions arrive over the websocket; answers go through REST."""
    # GUILDS only: interactions reach every bot, so no privileged intent is needed.
    gateway = hikari.GatewayBot(settings.bot_token, intents=hikari.Intents.GUILDS, **_quiet(settings))
    bot = DiscordBot(settings, daemon, gateway.rest)

    async def on_interaction(event: hikari.InteractionCreateEvent) -> None:
        interaction = event.interaction
        if isinstance(interaction, hikari.CommandInteraction):
            await respond(interaction, await bot.on_command(interaction))
        elif isinstance(interaction, hikari.ComponentInteraction):
            await respond(interaction, await bot.on_component(interaction))

    gateway.subscribe(hikari.InteractionCreateEvent, on_interaction)
    try:
        await gateway.start(check_for_updates=False)
    except hikari.UnauthorizedError:
        raise SettingsError(REJECTED) from None
    try:
        await startup(bot, settings)
        await stop.wait()
    finally:
        await bot.close()
        await gateway.close()


REJECTED = "Discord rejected the bot token (Developer Portal > Bot > Reset Token)"


async def startup(bot: DiscordBot, settings: DiscordSettings) -> None:
    """Register the commands, then re-attach. A rejected token stops the bot with a clear sentence; Discord
    being unreachable only costs the registration (the commands of the last run stay in place)."""
    try:
        await commands.register(bot.rest, settings.guilds)
    except hikari.UnauthorizedError:
        raise SettingsError(REJECTED) from None
    except (hikari.HTTPError, aiohttp.ClientError, OSError) as error:
        log.warning("could not register the commands: %s", error)
    await bot.start()


async def run(settings: DiscordSettings, stop: asyncio.Event) -> None:
    """The whole bot: daemon client, the mode's Discord connection, serving, and an orderly stop."""
    daemon = DaemonClient(settings.daemon_target, settings.daemon_token or None)
    try:
        if settings.mode == "http":
            await run_http(settings, daemon, stop)
        else:
            await run_gateway(settings, daemon, stop)
    finally:
        await daemon.close()
