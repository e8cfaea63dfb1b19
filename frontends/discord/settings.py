"""The Discord bot's settings: built once at start from flags, environment and credential files, then frozen.

Precedence (``frontends.sources``): command-line flag > environment variable > credential file > default. The
bot token is never a flag (flags show in ``ps``): it comes from ``--bot-token-file``, ``DISCORD_BOT_TOKEN``, or a
systemd credential named ``discord-bot-token``, like the daemon token (``distillery-token``). The
application's public key is not a secret (Discord shows it on the General Information page) and may be a flag.
Nothing else in the bot reads the environment, and the secrets stay out of the settings' ``repr``.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from frontends.sources import DEFAULT_DAEMON, SettingsError, Sources, bot_parser

Mode = Literal["gateway", "http"]

DISCORD_API = "https://discord.com/api/v10"
# Where Discord serves attachments; nothing is downloaded from any other host.
CDN_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")
_MIB = 1024 * 1024
_PUBLIC_KEY = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class DiscordSettings:
    """Everything the Discord bot process needs, decided once at start."""

    mode: Mode
    bot_token: str = field(repr=False)
    # Commands are registered in these guilds (instantly, unlike global commands); empty: every guild the bot
    # is in. A non-empty set is also the guild allow-list.
    guilds: frozenset[int] = frozenset()
    # Empty means "everyone"; a non-empty set admits only the listed channel or user ids.
    allowed_channels: frozenset[int] = frozenset()
    allowed_users: frozenset[int] = frozenset()
    daemon_target: str = DEFAULT_DAEMON
    daemon_token: str = field(default="", repr=False)
    # HTTP interactions: the application's Ed25519 public key (hex) checks each request's signature; the bot
    # listens on host:port + path behind a TLS-terminating reverse proxy. A body is a few KiB: anything much
    # bigger is not Discord; a request signed further than max_clock_skew from now is refused (no replays).
    public_key: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/discord/interactions"
    max_body_bytes: int = 256 * 1024
    max_clock_skew: float = 300.0
    # The REST API's base URL and the attachment hosts (with their scheme); only tests point them elsewhere.
    api_url: str = DISCORD_API
    cdn_hosts: tuple[str, ...] = CDN_HOSTS
    cdn_scheme: str = "https"
    # Discord's limits are per route and unpublished; about one edit a second per channel stays clear of them.
    update_interval: float = 1.0
    # Same cap as the daemon's image limit; bigger attachments are refused before they are downloaded.
    max_image_bytes: int = 20 * _MIB
    log_level: str = "INFO"


def build_parser() -> argparse.ArgumentParser:
    """The bot's flags; each non-secret one also reads a DISTILLERY_DISCORD_* environment variable."""
    modes = {"gateway": "the bot connects out, no public URL", "http": "Discord posts interactions to --path"}
    own = {
        "--bot-token-file": "file with the bot token [env DISCORD_BOT_TOKEN]",
        "--public-key": "HTTP mode: the application's public key (hex) [env DISCORD_PUBLIC_KEY]",
        "--guilds": "comma-separated guild ids: register the commands there and answer only there [all]",
    }
    return bot_parser("Discord", modes, (8080, "/discord/interactions"), own)


def _ids(text: str, flag: str) -> frozenset[int]:
    try:
        return frozenset(int(part) for part in (word.strip() for word in text.split(",")) if part)
    except ValueError:
        raise SettingsError(f"{flag} takes comma-separated numeric ids (Developer Mode > Copy ID)") from None


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> DiscordSettings:
    """Parse flags, read the environment and credential files, check the combination, and freeze it."""
    environ = os.environ if environ is None else environ
    sources = Sources(vars(build_parser().parse_args(argv)), environ, "DISTILLERY_DISCORD")
    value, secret = sources.value, sources.secret
    settings = DiscordSettings(
        mode="http" if sources.choice("mode", ("gateway", "http")) == "http" else "gateway",
        bot_token=secret("bot_token_file", "DISCORD_BOT_TOKEN", "discord-bot-token"),
        public_key=value("public_key") or environ.get("DISCORD_PUBLIC_KEY", ""),
        daemon_target=value("daemon", DEFAULT_DAEMON),
        daemon_token=secret("daemon_token_file", "DISTILLERY_TOKEN", "distillery-token"),
        host=value("host", "127.0.0.1"),
        port=sources.number("port", 8080),
        path=value("path", "/discord/interactions"),
        guilds=_ids(value("guilds"), "--guilds"),
        allowed_channels=_ids(value("allow_channels"), "--allow-channels"),
        allowed_users=_ids(value("allow_users"), "--allow-users"),
        log_level=value("log_level", "INFO").upper(),
    )
    check(settings)
    return settings


def check(settings: DiscordSettings) -> None:
    """Refuse a combination that cannot work, saying what is missing or malformed (the first such thing)."""
    http, key = settings.mode == "http", settings.public_key
    problems = (
        (not settings.bot_token, "no bot token: set DISCORD_BOT_TOKEN or --bot-token-file (Developer Portal)"),
        (http and not key, "HTTP mode needs the application's public key: --public-key or DISCORD_PUBLIC_KEY"),
        (http and key and not _PUBLIC_KEY.fullmatch(key), "the public key is 64 hex digits (General Information)"),
        (not settings.path.startswith("/"), "--path must start with /"),
    )
    for failed, why in problems:
        if failed:
            raise SettingsError(why)
