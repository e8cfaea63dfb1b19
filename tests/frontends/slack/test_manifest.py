"""The Slack app manifests: valid YAML that grants exactly what the bot uses, in both modes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from frontends.slack import blocks
from frontends.slack.app import COMMAND, COMMANDS
from frontends.slack.settings import SlackSettings

FOLDER = Path(__file__).resolve().parents[3] / "frontends" / "slack"
NEEDED_SCOPES = {
    "commands",  # the slash commands and the message shortcut
    "chat:write",  # post and update the job message, ephemeral replies
    "chat:write.public",  # post in public channels the bot was not invited to
    "im:write",  # the DM fallback (conversations.open)
    "files:read",  # download uploads (Slack serves a login page without it)
    "files:write",  # files_upload_v2 of a finished job's picture
    "channels:history",
    "groups:history",
    "im:history",
    "mpim:history",
}
NEEDED_EVENTS = {"message.channels", "message.groups", "message.im", "message.mpim"}


def _load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((FOLDER / name).read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("name", ["manifest.yaml", "manifest-http.yaml"])
def test_manifest_grants_what_the_bot_uses(name: str) -> None:
    manifest = _load(name)
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == NEEDED_SCOPES
    commands = {command["command"]: command for command in manifest["features"]["slash_commands"]}
    # Every command the bot listens to is in the app, and nothing the bot would not answer.
    expected = {"/distill", "/serve", "/upscale", "/info", "/loras", "/lora", "/stats", "/models"}
    assert set(commands) == {COMMAND, *COMMANDS} == expected
    assert all(command["should_escape"] is False and command["description"] for command in commands.values())
    assert "--class man|woman|person" in commands[COMMAND]["usage_hint"]
    assert "--lora" in commands["/serve"]["usage_hint"] and "--delete" in commands["/lora"]["usage_hint"]
    assert "--upscalemethod latent|lanczos" in commands["/upscale"]["usage_hint"]
    shortcuts = {(shortcut["type"], shortcut["callback_id"]) for shortcut in manifest["features"]["shortcuts"]}
    assert shortcuts == {("message", blocks.INFO_SHORTCUT), ("message", blocks.UPSCALE_SHORTCUT)}
    settings = manifest["settings"]
    assert set(settings["event_subscriptions"]["bot_events"]) == NEEDED_EVENTS
    assert settings["interactivity"]["is_enabled"] is True  # the Cancel button
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True  # photos by DM
    assert manifest["features"]["bot_user"]["display_name"]


def test_socket_mode_manifest_needs_no_public_url() -> None:
    manifest = _load("manifest.yaml")
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert all("url" not in command for command in manifest["features"]["slash_commands"])
    assert "request_url" not in manifest["settings"]["event_subscriptions"]


def test_http_manifest_points_every_request_at_the_bots_path() -> None:
    manifest = _load("manifest-http.yaml")
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is False
    path = SlackSettings(mode="http", bot_token="xoxb-x").path
    urls = [
        *(command["url"] for command in manifest["features"]["slash_commands"]),
        settings["event_subscriptions"]["request_url"],
        settings["interactivity"]["request_url"],
    ]
    assert all(url.startswith("https://") and url.endswith(path) for url in urls)
    # Apart from the mode and the URLs, the two manifests are the same app.
    socket = _load("manifest.yaml")
    assert socket["oauth_config"] == manifest["oauth_config"]
    assert socket["display_information"] == manifest["display_information"]
