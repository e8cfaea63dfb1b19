"""The Telegram bot's settings: built once at start from flags, environment and credential files, then frozen.

Precedence (``frontends.sources``): command-line flag > ``DISTILLERY_TELEGRAM_*`` environment variable >
default. The bot token is never a flag (flags show up in ``ps``): it comes from ``--token-file``,
``DISTILLERY_TELEGRAM_TOKEN``, or a systemd credential named ``telegram-token``
(``LoadCredential=telegram-token:/etc/distillery/telegram-token``); the daemon token likewise from
``--daemon-token-file``, ``DISTILLERY_TOKEN`` or ``distillery-token``.
Nothing else in the bot reads the environment.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from frontends.sources import DEFAULT_DAEMON, SettingsError, Sources

TELEGRAM_API = "https://api.telegram.org/bot"
TELEGRAM_FILE_API = "https://api.telegram.org/file/bot"
# What the Bot API lets a bot download (getFile) and upload (sendDocument); bigger files fail on Telegram's side.
DOWNLOAD_LIMIT = 20 * 1024 * 1024
UPLOAD_LIMIT = 50 * 1024 * 1024
# The Bot API accepts 1-256 characters from this set in X-Telegram-Bot-Api-Secret-Token.
_SECRET_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


@dataclass(frozen=True)
class Settings:
    """Everything the bot process needs; ``token`` and ``webhook_secret`` stay out of repr (and so out of logs)."""

    token: str = field(repr=False)
    # gRPC target of the daemon: "unix:/run/distillery/distillery.sock" or "127.0.0.1:50051" (+ daemon_token).
    daemon: str = DEFAULT_DAEMON
    daemon_token: str | None = field(default=None, repr=False)
    # Empty sets mean "everyone". With either set, a request passes when its user OR its chat is listed, so a
    # group can be opened to all its members without listing each of them.
    allowed_users: frozenset[int] = frozenset()
    allowed_chats: frozenset[int] = frozenset()
    # Webhook mode when webhook_url is set (Telegram POSTs to it); long polling otherwise.
    webhook_url: str = ""
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = 8443
    webhook_path: str = "/telegram"
    webhook_secret: str = field(default="", repr=False)
    # A self-hosted Bot API server, or the loopback fake in tests.
    api_url: str = TELEGRAM_API
    api_file_url: str = TELEGRAM_FILE_API
    # Telegram allows about one edit per second in a private chat and 20 messages a minute in a group.
    private_edit_interval: float = 1.0
    group_edit_interval: float = 3.0
    # A daemon restart takes seconds; only a longer outage is worth telling the user about.
    offline_notice_after: float = 30.0
    # Send the finished .safetensors file to the chat (when it fits the Bot API's 50 MB upload limit).
    send_lora_file: bool = True
    # Long-polling timeout for getUpdates, in seconds.
    poll_timeout: int = 30
    log_level: str = "INFO"

    @property
    def webhook(self) -> bool:
        return bool(self.webhook_url)

    def allows(self, user_id: int | None, chat_id: int | None) -> bool:
        """Whether the allow-lists let this user in this chat use the bot."""
        if not self.allowed_users and not self.allowed_chats:
            return True
        return (user_id is not None and user_id in self.allowed_users) or (
            chat_id is not None and chat_id in self.allowed_chats
        )


def parse_ids(text: str) -> frozenset[int]:
    """``"123, -100456"`` -> {123, -100456}; Telegram ids are integers, group ids negative."""
    ids = set()
    for word in re.split(r"[,\s]+", text.strip()):
        if not word:
            continue
        try:
            ids.add(int(word))
        except ValueError:
            raise SettingsError(f"{word!r} is not a Telegram id (a whole number)") from None
    return frozenset(ids)


def build_parser() -> argparse.ArgumentParser:
    """Flags of ``distillery-telegram``; each also reads DISTILLERY_TELEGRAM_<NAME> from the environment."""
    parser = argparse.ArgumentParser(
        prog="distillery-telegram", description="Telegram frontend of the LoRA distillery."
    )

    def add(flag: str, help_text: str, **kwargs: object) -> None:
        env = "DISTILLERY_TELEGRAM_" + flag.lstrip("-").replace("-", "_").upper()
        parser.add_argument(flag, help=f"{help_text} [env {env}]", **kwargs)  # type: ignore[arg-type]

    add("--token-file", "file holding the bot token from BotFather")
    add("--daemon", f"daemon gRPC target (default {DEFAULT_DAEMON}, or unix:$DISTILLERY_SOCKET)")
    add("--daemon-token-file", "bearer token for a daemon on loopback TCP (or env DISTILLERY_TOKEN)")
    add("--allow-users", "comma-separated Telegram user ids allowed to use the bot (default: everyone)")
    add(
        "--allow-chats",
        "comma-separated chat ids whose members may use the bot (default: everyone); group ids are "
        "negative, so write --allow-chats=-100123,-100456",
    )
    add("--webhook-url", "public HTTPS URL Telegram posts updates to; enables webhook mode")
    add("--webhook-listen", "address the webhook server binds (default 127.0.0.1, behind a reverse proxy)")
    add("--webhook-port", "port the webhook server binds (default 8443)", type=int)
    add("--webhook-secret-file", "file holding the webhook secret token (default: a random one per start)")
    add("--api-url", "Bot API base URL, for a self-hosted Bot API server")
    add("--api-file-url", "Bot API file base URL, for a self-hosted Bot API server")
    add("--no-lora-file", "do not send the finished .safetensors to the chat", action="store_true", default=None)
    add("--log-level", "DEBUG, INFO or WARNING")
    return parser


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parse flags, read the environment and credential files, and build the frozen Settings."""
    environ = os.environ if environ is None else environ
    sources = Sources(vars(build_parser().parse_args(argv)), environ, "DISTILLERY_TELEGRAM")
    value = sources.value
    token = sources.secret("token_file", "DISTILLERY_TELEGRAM_TOKEN", "telegram-token")
    if not token:
        raise SettingsError(
            "no bot token: use --token-file, DISTILLERY_TELEGRAM_TOKEN or a systemd credential telegram-token"
        )
    if not re.fullmatch(r"\d+:[A-Za-z0-9_-]+", token):
        # Say what is wrong without echoing the secret itself.
        raise SettingsError("the bot token does not look like BotFather's <digits>:<letters> token")
    socket = environ.get("DISTILLERY_SOCKET")

    webhook_url = value("webhook_url")
    if webhook_url and not webhook_url.startswith("https://"):
        raise SettingsError("--webhook-url must be an https:// URL (Telegram only posts to HTTPS)")
    secret = sources.secret("webhook_secret_file", "DISTILLERY_TELEGRAM_WEBHOOK_SECRET", "telegram-webhook-secret")
    if webhook_url and not secret:
        # setWebhook registers whatever we pick, so a fresh random secret per start is as good as a stored one.
        secret = secrets.token_urlsafe(32)
    if secret and not _SECRET_PATTERN.match(secret):
        raise SettingsError("the webhook secret may only hold A-Z, a-z, 0-9, _ and - (1 to 256 characters)")
    path = "/" + webhook_url.split("://", 1)[-1].partition("/")[2] if webhook_url else "/telegram"
    no_lora_file = value("no_lora_file").lower() in ("1", "true")  # the flag reads as "True"

    return Settings(
        token=token,
        daemon=value("daemon") or (f"unix:{socket}" if socket else DEFAULT_DAEMON),
        daemon_token=sources.secret("daemon_token_file", "DISTILLERY_TOKEN", "distillery-token") or None,
        allowed_users=parse_ids(value("allow_users")),
        allowed_chats=parse_ids(value("allow_chats")),
        webhook_url=webhook_url,
        webhook_listen=value("webhook_listen", "127.0.0.1"),
        webhook_port=sources.number("webhook_port", 8443),
        webhook_path=path.rstrip("/") or "/",
        webhook_secret=secret,
        api_url=value("api_url", TELEGRAM_API),
        api_file_url=value("api_file_url", TELEGRAM_FILE_API),
        send_lora_file=not no_lora_file,
        log_level=value("log_level", "INFO").upper(),
    )
