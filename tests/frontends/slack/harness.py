"""The bot under test, served over loopback HTTP exactly as in HTTP mode, and Slack's side of the wire.

``BotHarness`` runs a real slack-bolt AsyncApp behind the aiohttp endpoint the bot uses in production, with
its AsyncWebClient pointed at the fake Slack Web API. Requests are signed the way Slack signs them
(``v0=HMAC-SHA256(secret, "v0:{ts}:{body}")``, built with slack_sdk's SignatureVerifier), so the app's own
verification middleware is what checks them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from frontends.client import DaemonApi
from frontends.live import Sleep
from frontends.slack.app import SlackBot
from frontends.slack.server import web_app
from frontends.slack.settings import SlackSettings
from tests.frontends.slack.fake_slack_api import BOT_TOKEN, TEAM, FakeSlack

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
_triggers = itertools.count(1)


def shown_text(message: dict[str, Any]) -> str:
    """What a user sees of a message: its plain_text sections when it has blocks, else its text."""
    sections = [
        block["text"]["text"]
        for block in message.get("blocks") or []
        if block.get("type") == "section" and block["text"].get("type") == "plain_text"
    ]
    return "\n".join(sections) if sections else str(message.get("text", ""))


def settings_for(fake: FakeSlack, **changes: Any) -> SlackSettings:
    """HTTP-mode settings aimed at the fake; fast pacing unless a test asks otherwise."""
    base = SlackSettings(
        mode="http",
        bot_token=BOT_TOKEN,
        signing_secret=SECRET,
        api_url=fake.api_url,
        file_url_prefixes=(fake.file_prefix,),
        update_interval=0.01,
        ack_wait=2.0,
    )
    return dataclasses.replace(base, **changes)


async def fast_sleep(seconds: float) -> None:
    """Backoff pauses in tests: long enough to let other tasks run, never the real seconds."""
    await asyncio.sleep(min(seconds, 0.01))


def signed_headers(body: str, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    """The two headers Slack adds to every request it sends to an app."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    assert signature is not None
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}


def slash_body(
    text: str,
    user: str = "U1",
    channel: str = "C1",
    team: str = TEAM,
    trigger: str = "",
    command: str = "/distill",
    response_url: str = "https://hooks.slack.invalid/commands/1",
) -> str:
    """A slash command (/distill unless told) as Slack form-encodes it."""
    return urlencode(
        {
            "token": "deprecated-verification-token",
            "team_id": team,
            "team_domain": "test",
            "channel_id": channel,
            "channel_name": "general",
            "user_id": user,
            "user_name": f"user-{user}",
            "command": command,
            "text": text,
            "api_app_id": "A0APP",
            "response_url": response_url,
            "trigger_id": trigger or f"trigger-{next(_triggers)}",
        }
    )


def upload_event(
    files: list[dict[str, Any]], text: str, event_id: str, user: str = "U1", channel: str = "C1"
) -> dict[str, Any]:
    """A message event with subtype file_share, in its Events API envelope."""
    return {
        "token": "deprecated-verification-token",
        "team_id": TEAM,
        "api_app_id": "A0APP",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "event": {
            "type": "message",
            "subtype": "file_share",
            "text": text,
            "user": user,
            "channel": channel,
            "channel_type": "channel",
            "ts": "1700000001.000100",
            "files": files,
            "upload": False,
        },
    }


def cancel_body(
    job_id: str,
    user: str,
    channel: str = "C1",
    ts: str = "",
    *,
    action_id: str = "distill_cancel",
    block_id: str = "distill_actions",
    response_url: str = "https://hooks.slack.invalid/actions/1",
) -> str:
    """A click on a button (the Cancel button unless told), form-encoded as payload=<json>; ``job_id`` is
    the button's value."""
    payload = {
        "type": "block_actions",
        "team": {"id": TEAM, "domain": "test"},
        "user": {"id": user, "team_id": TEAM, "username": f"user-{user}"},
        "api_app_id": "A0APP",
        "token": "deprecated-verification-token",
        "trigger_id": f"trigger-{next(_triggers)}",
        "channel": {"id": channel, "name": "general"},
        "container": {"type": "message", "message_ts": ts, "channel_id": channel},
        "response_url": response_url,
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": block_id,
                "value": job_id,
                "action_ts": str(time.time()),
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


def shortcut_body(callback_id: str, message: dict[str, Any], user: str = "U1", channel: str = "C1") -> str:
    """A message shortcut (message_action) on ``message``, form-encoded as payload=<json>."""
    payload = {
        "type": "message_action",
        "callback_id": callback_id,
        "team": {"id": TEAM, "domain": "test"},
        "user": {"id": user, "team_id": TEAM, "username": f"user-{user}"},
        "channel": {"id": channel, "name": "general"},
        "api_app_id": "A0APP",
        "token": "deprecated-verification-token",
        "trigger_id": f"trigger-{next(_triggers)}",
        "action_ts": str(time.time()),
        "message_ts": message.get("ts", "1700000000.000001"),
        "message": message,
        "response_url": "https://hooks.slack.invalid/actions/2",
    }
    return urlencode({"payload": json.dumps(payload)})


class BotHarness:
    """One bot process: start() serves it on a loopback port; post() sends Slack-signed requests."""

    def __init__(
        self, fake: FakeSlack, daemon: DaemonApi, settings: SlackSettings, sleep: Sleep = fast_sleep
    ) -> None:
        self.fake = fake
        self.settings = settings
        self.client = AsyncWebClient(token=settings.bot_token, base_url=fake.api_url)
        self.bot = SlackBot(settings, daemon, self.client, sleep=sleep)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self, reattach: bool = True) -> BotHarness:
        if reattach:
            await self.bot.start()
        self._runner = web.AppRunner(web_app(self.bot, self.settings.path))
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}{self.settings.path}"
        self._session = aiohttp.ClientSession()
        return self

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.bot.close()

    async def post(
        self, body: str, content_type: str, headers: dict[str, str] | None = None, sign: bool = True
    ) -> tuple[int, str]:
        """Send a request as Slack would; returns the HTTP status and body of the bot's answer."""
        assert self._session is not None
        all_headers = {"Content-Type": content_type, **(signed_headers(body) if sign else {}), **(headers or {})}
        async with self._session.post(self.url, data=body.encode(), headers=all_headers) as response:
            return response.status, await response.text()

    async def command(self, text: str, **fields: Any) -> tuple[int, str]:
        """/distill <text> (or ``command=``); returns the status and the text of the ack (shown only to the
        user)."""
        status, body = await self.ack_of(text, **fields)
        return status, shown_text(body)

    async def ack_of(self, text: str, **fields: Any) -> tuple[int, dict[str, Any]]:
        """A slash command; returns the status and the whole ack (text, blocks), a JSON body or plain text."""
        status, body = await self.post(slash_body(text, **fields), "application/x-www-form-urlencoded")
        if body.startswith("{"):
            reply = json.loads(body)
            assert isinstance(reply, dict)
            return status, reply
        return status, {"text": body}

    async def event(self, envelope: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, str]:
        return await self.post(json.dumps(envelope), "application/json", headers)

    async def click_cancel(self, job_id: str, user: str, channel: str = "C1") -> tuple[int, str]:
        return await self.post(cancel_body(job_id, user, channel), "application/x-www-form-urlencoded")

    async def click(self, action_id: str, value: str, user: str, channel: str = "C1") -> tuple[int, str]:
        """A click on a button of an ephemeral message; the bot answers through the fake's response_url."""
        body = cancel_body(
            value, user, channel, action_id=action_id, block_id="any", response_url=self.fake.response_url
        )
        return await self.post(body, "application/x-www-form-urlencoded")

    async def shortcut(self, callback_id: str, message: dict[str, Any], user: str = "U1") -> tuple[int, str]:
        return await self.post(shortcut_body(callback_id, message, user), "application/x-www-form-urlencoded")
