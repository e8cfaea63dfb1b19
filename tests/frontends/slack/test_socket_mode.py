"""Socket Mode: the same listeners over the app-token websocket (no public endpoint, nothing to sign)."""

from __future__ import annotations

import asyncio
import dataclasses

from slack_sdk.web.async_client import AsyncWebClient

from frontends.slack.app import SlackBot
from frontends.slack.server import serve
from tests.frontends.fakes import FakeDaemon
from tests.frontends.slack.fake_slack_api import APP_TOKEN, TEAM, FakeSlack
from tests.frontends.slack.harness import fast_sleep, settings_for, upload_event


async def test_slash_command_upload_and_cancel_over_socket_mode(
    fake_slack: FakeSlack, fake_daemon: FakeDaemon
) -> None:
    settings = dataclasses.replace(settings_for(fake_slack), mode="socket", app_token=APP_TOKEN, signing_secret="")
    client = AsyncWebClient(token=settings.bot_token, base_url=fake_slack.api_url)
    bot = SlackBot(settings, fake_daemon, client, sleep=fast_sleep)
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(bot, settings, stop))
    try:
        command = {
            "team_id": TEAM,
            "channel_id": "C1",
            "user_id": "U1",
            "command": "/distill",
            "text": "https://example.org/me.jpg --class person",
            "trigger_id": "trig-socket",
            "response_url": "https://hooks.slack.invalid/commands/1",
        }
        ack = await fake_slack.send_envelope("slash_commands", command)
        assert ack["payload"]["text"].startswith("Your LoRA will be called name1.")
        await fake_slack.wait_for(lambda: fake_daemon.jobs["job1"].client_state)
        assert fake_daemon.submits[0][0].idempotency_key == "slack-command:trig-socket"

        item = fake_slack.add_file("me.png", b"\x89PNG\r\n\x1a\nfake")
        envelope = upload_event([item], "/distill", "EvSocket", user="U2")
        await fake_slack.send_envelope("events_api", envelope)
        await fake_slack.wait_for(lambda: len(fake_daemon.jobs) == 2 and fake_daemon.jobs["job2"].client_state)
        assert fake_daemon.submits[1][1] == b"\x89PNG\r\n\x1a\nfake"

        click = {
            "type": "block_actions",
            "team": {"id": TEAM},
            "user": {"id": "U1", "team_id": TEAM},
            "channel": {"id": "C1"},
            "actions": [{"action_id": "distill_cancel", "block_id": "distill_actions", "value": "job1"}],
        }
        await fake_slack.send_envelope("interactive", click)
        await bot.followers.wait("job1")
        assert fake_daemon.jobs["job1"].error == "Cancelled by its owner."
    finally:
        stop.set()
        await serving
        await bot.close()
    assert [call.params for call in fake_slack.of("apps.connections.open")]  # it asked for the socket URL
