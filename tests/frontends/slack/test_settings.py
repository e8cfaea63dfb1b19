"""Settings: flags > environment > credential files > defaults; secrets never in flags, reprs or errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from frontends.launch import secrets_of
from frontends.slack.__main__ import main
from frontends.slack.settings import load_settings
from frontends.sources import SettingsError

BOT = "xoxb-1111-secret-bot"
APP = "xapp-1-secret-app"
SIGNING = "secret-signing-0123456789"


def test_socket_mode_from_the_standard_slack_variables() -> None:
    settings = load_settings([], {"SLACK_BOT_TOKEN": BOT, "SLACK_APP_TOKEN": APP})
    assert settings.mode == "socket"
    assert (settings.bot_token, settings.app_token) == (BOT, APP)
    assert settings.daemon_target == "unix:/run/distillery/distillery.sock"
    assert settings.update_interval >= 1.0  # Slack's per-channel pace unless a test says otherwise
    assert settings.result_image == "preview"


def test_http_mode_with_flags_overriding_the_environment(tmp_path: Path) -> None:
    secret_file = tmp_path / "signing"
    secret_file.write_text(SIGNING + "\n")
    environ = {
        "SLACK_BOT_TOKEN": BOT,
        "SLACK_SIGNING_SECRET": "from-the-environment",
        "DISTILLERY_SLACK_MODE": "socket",
        "DISTILLERY_SLACK_PORT": "4000",
        "DISTILLERY_SLACK_ALLOW_USERS": "U1, U2,,",
    }
    settings = load_settings(
        ["--mode", "http", "--signing-secret-file", str(secret_file), "--allow-channels", "C1,C2"], environ
    )
    assert settings.mode == "http" and settings.signing_secret == SIGNING
    assert settings.port == 4000
    assert settings.allowed_users == frozenset({"U1", "U2"})
    assert settings.allowed_channels == frozenset({"C1", "C2"})
    assert settings.allowed_workspaces == frozenset()


def test_systemd_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "slack-bot-token").write_text(BOT)
    (tmp_path / "slack-app-token").write_text(APP)
    (tmp_path / "distillery-token").write_text("daemon-secret")
    settings = load_settings(["--daemon", "127.0.0.1:50051"], {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert (settings.bot_token, settings.app_token, settings.daemon_token) == (BOT, APP, "daemon-secret")
    assert settings.daemon_target == "127.0.0.1:50051"


def test_secrets_stay_out_of_the_repr() -> None:
    settings = load_settings(
        ["--mode", "http"], {"SLACK_BOT_TOKEN": BOT, "SLACK_SIGNING_SECRET": SIGNING, "DISTILLERY_TOKEN": "dt"}
    )
    text = repr(settings)
    assert "mode='http'" in text
    for secret in (BOT, SIGNING, "dt'"):
        assert secret not in text
    # The same fields are what the process's log blanks out.
    assert sorted(secrets_of(settings)) == sorted([BOT, SIGNING, "dt"])


@pytest.mark.parametrize(
    ("argv", "environ", "problem"),
    [
        ([], {}, "no bot token"),
        ([], {"SLACK_BOT_TOKEN": "xoxp-user-token"}, "starts with xoxb-"),
        ([], {"SLACK_BOT_TOKEN": BOT}, "Socket Mode needs an app-level token"),
        ([], {"SLACK_BOT_TOKEN": BOT, "SLACK_APP_TOKEN": "xoxb-wrong"}, "must start with xapp-"),
        (["--mode", "http"], {"SLACK_BOT_TOKEN": BOT}, "HTTP mode needs the signing secret"),
        (["--bot-token-file", "/nonexistent/token"], {}, "cannot read the credential file /nonexistent/token"),
        ([], {"SLACK_BOT_TOKEN": BOT, "SLACK_APP_TOKEN": APP, "DISTILLERY_SLACK_PORT": "x"}, "--port must be"),
    ],
)
def test_unworkable_configurations_say_what_to_fix(argv: list[str], environ: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem) as error:
        load_settings(argv, environ)
    assert not any(value in str(error.value) for value in environ.values())


def test_main_exits_with_one_line_and_no_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxp-user-secret")
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("distillery-slack: the bot token must be a bot token") and "xoxp-user-secret" not in err
