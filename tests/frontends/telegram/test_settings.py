"""Settings from flags, environment and credential files; the token stays out of reprs and logs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from frontends.launch import configure_logging
from frontends.sources import DEFAULT_DAEMON, SettingsError
from frontends.telegram.__main__ import QUIET
from frontends.telegram.settings import Settings, load_settings, parse_ids

TOKEN = "4242:AAH-secret_token"


def test_token_from_a_file_flag_wins(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = load_settings(["--token-file", str(token_file)], {"DISTILLERY_TELEGRAM_TOKEN": "1:other"})
    assert settings.token == TOKEN
    assert TOKEN not in repr(settings)
    assert settings.daemon == DEFAULT_DAEMON and not settings.webhook


def test_token_from_the_environment_or_a_systemd_credential(tmp_path: Path) -> None:
    assert load_settings([], {"DISTILLERY_TELEGRAM_TOKEN": TOKEN}).token == TOKEN
    (tmp_path / "telegram-token").write_text(TOKEN)
    assert load_settings([], {"CREDENTIALS_DIRECTORY": str(tmp_path)}).token == TOKEN


def test_missing_or_malformed_tokens_are_refused_without_echoing_them() -> None:
    with pytest.raises(SettingsError, match="no bot token"):
        load_settings([], {})
    with pytest.raises(SettingsError) as refused:
        load_settings([], {"DISTILLERY_TELEGRAM_TOKEN": "not-a-token-secret"})
    assert "not-a-token-secret" not in str(refused.value)


def test_daemon_address_allow_lists_and_flags() -> None:
    environ = {
        "DISTILLERY_TELEGRAM_TOKEN": TOKEN,
        "DISTILLERY_SOCKET": "/run/x.sock",
        "DISTILLERY_TELEGRAM_ALLOW_USERS": "1, 2 3",
        "DISTILLERY_TOKEN": "daemon-secret",
    }
    settings = load_settings(["--allow-chats=-1001,-1002", "--no-lora-file", "--log-level", "debug"], environ)
    assert settings.daemon == "unix:/run/x.sock" and settings.daemon_token == "daemon-secret"
    assert settings.allowed_users == {1, 2, 3} and settings.allowed_chats == {-1001, -1002}
    assert not settings.send_lora_file and settings.log_level == "DEBUG"
    assert "daemon-secret" not in repr(settings)
    flagged = load_settings(["--daemon", "127.0.0.1:50051"], environ)
    assert flagged.daemon == "127.0.0.1:50051"
    with pytest.raises(SettingsError, match="'x' is not a Telegram id"):
        parse_ids("1,x")


def test_allow_lists_let_a_listed_user_anywhere_and_anyone_in_a_listed_chat() -> None:
    open_bot = Settings(token=TOKEN)
    assert open_bot.allows(5, 5)
    closed = Settings(token=TOKEN, allowed_users=frozenset({5}), allowed_chats=frozenset({-9}))
    assert closed.allows(5, 123) and closed.allows(6, -9)
    assert not closed.allows(6, 6) and not closed.allows(None, None)


def test_webhook_settings(tmp_path: Path) -> None:
    environ = {"DISTILLERY_TELEGRAM_TOKEN": TOKEN}
    generated = load_settings(["--webhook-url", "https://bot.example.org/hooks/tg"], environ)
    assert generated.webhook and generated.webhook_path == "/hooks/tg"
    assert len(generated.webhook_secret) >= 32 and generated.webhook_secret not in repr(generated)
    secret_file = tmp_path / "secret"
    secret_file.write_text("abc_DEF-123")
    chosen = load_settings(
        [
            "--webhook-url",
            "https://bot.example.org",
            "--webhook-secret-file",
            str(secret_file),
            "--webhook-port",
            "0",
        ],
        environ,
    )
    assert chosen.webhook_secret == "abc_DEF-123" and chosen.webhook_path == "/" and chosen.webhook_port == 0
    with pytest.raises(SettingsError, match="https"):
        load_settings(["--webhook-url", "http://bot.example.org/tg"], environ)
    secret_file.write_text("spaces are not allowed")
    with pytest.raises(SettingsError, match="webhook secret"):
        load_settings(
            ["--webhook-url", "https://b.example.org", "--webhook-secret-file", str(secret_file)], environ
        )


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_logs_never_show_the_token(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(token=TOKEN, log_level="DEBUG"), QUIET)
    logging.getLogger("telegram.ext.ExtBot").debug("Set Bot API URL: https://api.telegram.org/bot%s", TOKEN)
    logging.getLogger("frontends.telegram").info("plain line %d", 1)
    logging.getLogger("httpx").info("HTTP Request: POST https://api.telegram.org/bot%s/getMe", TOKEN)
    try:
        raise ConnectionError(f"cannot reach https://api.telegram.org/bot{TOKEN}/getUpdates")
    except ConnectionError:
        logging.getLogger("frontends.telegram").exception("polling failed")
    err = capsys.readouterr().err
    assert TOKEN not in err
    assert "Set Bot API URL: https://api.telegram.org/bot<secret>" in err and "plain line 1" in err
    assert "getMe" not in err  # httpx request lines are off entirely
    assert "bot<secret>/getUpdates" in err  # tracebacks are redacted too
