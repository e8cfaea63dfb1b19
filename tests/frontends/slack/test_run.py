"""The process as ``distillery-slack --mode http`` runs it: settings -> run() -> a listening endpoint."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from pathlib import Path

import aiohttp
import pytest

from frontends.client import OFFLINE
from frontends.slack.server import run
from frontends.sources import SettingsError
from tests.frontends.slack.fake_slack_api import FakeSlack
from tests.frontends.slack.harness import settings_for, shown_text, signed_headers, slash_body


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_http_mode_serves_until_stopped_and_tolerates_a_missing_daemon(
    fake_slack: FakeSlack, tmp_path: Path
) -> None:
    port = _free_port()
    settings = dataclasses.replace(
        settings_for(fake_slack), port=port, daemon_target=f"unix:{tmp_path / 'no-daemon.sock'}"
    )
    stop = asyncio.Event()
    running = asyncio.create_task(run(settings, stop))
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):  # until it listens
                try:
                    async with session.get(f"{url}/healthz") as health:
                        assert await health.text() == "ok\n"
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)
            body = slash_body("https://example.org/me.jpg")
            headers = {"Content-Type": "application/x-www-form-urlencoded", **signed_headers(body)}
            async with session.post(f"{url}/slack/events", data=body, headers=headers) as response:
                assert response.status == 200
                assert shown_text(json.loads(await response.text())) == OFFLINE
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
    assert fake_slack.of("auth.test")  # the token was checked at start


async def test_a_token_slack_rejects_stops_the_start(fake_slack: FakeSlack) -> None:
    settings = dataclasses.replace(settings_for(fake_slack), bot_token="xoxb-revoked")
    with pytest.raises(SettingsError, match=r"Slack rejected the bot token \(invalid_auth\)"):
        await run(settings, asyncio.Event())
