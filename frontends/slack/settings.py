"""The Slack bot's settings: built once at start from flags, environment and credential files, then frozen.

Precedence (``frontends.sources``): command-line flag > environment variable > credential file > default.
Secrets never come from a flag (they would show in ``ps``): the bot token, app token and signing secret are read
from the standard Slack variables (``SLACK_BOT_TOKEN``, ``SLACK_APP_TOKEN``, ``SLACK_SIGNING_SECRET``), from a
file named by ``--bot-token-file`` and friends, or from systemd's ``$CREDENTIALS_DIRECTORY``
(``LoadCredential=``) as ``slack-bot-token``, ``slack-app-token``, ``slack-signing-secret`` and
``distillery-token``. Nothing else in the bot reads the environment, and the secrets are kept out of the
settings' ``repr`` so a logged settings object never leaks one.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from frontends.sources import DEFAULT_DAEMON, SettingsError, Sources, bot_parser

Mode = Literal["socket", "http"]
ResultImage = Literal["preview", "source", "none"]
RESULT_IMAGES = ("preview", "source", "none")
# Where Slack serves private files; the bot token is only ever sent to URLs under these prefixes.
SLACK_FILE_PREFIXES = ("https://files.slack.com/",)
_MIB = 1024 * 1024


@dataclass(frozen=True)
class SlackSettings:
    """Everything the Slack bot process needs, decided once at start."""

    mode: Mode
    bot_token: str = field(repr=False)
    app_token: str = field(default="", repr=False)
    signing_secret: str = field(default="", repr=False)
    daemon_target: str = DEFAULT_DAEMON
    daemon_token: str = field(default="", repr=False)
    # HTTP mode listens here; put a TLS-terminating reverse proxy in front of it.
    host: str = "127.0.0.1"
    port: int = 3000
    path: str = "/slack/events"
    # Empty means "everyone"; a non-empty set admits only the listed team, channel or user ids.
    allowed_workspaces: frozenset[str] = frozenset()
    allowed_channels: frozenset[str] = frozenset()
    allowed_users: frozenset[str] = frozenset()
    # The Slack Web API's base URL; only tests point it elsewhere (a loopback fake).
    api_url: str = "https://slack.com/api/"
    file_url_prefixes: tuple[str, ...] = SLACK_FILE_PREFIXES
    # Slack allows about one message write per second per channel; progress edits never go faster than this.
    update_interval: float = 1.0
    # A slash command must be answered within 3 s: wait this long for the daemon before acking "working on it".
    ack_wait: float = 2.0
    # Same cap as the daemon's image limit; bigger uploads are refused before they are downloaded.
    max_image_bytes: int = 20 * _MIB
    # /lora <name> --download uploads at most this much. Slack takes files up to 1 GB, but the bot holds the
    # whole file in memory to upload it; an SD 1.5 LoRA is tens of MB, and bigger ones go through the CLI.
    max_upload_bytes: int = 200 * _MIB
    # What to upload under a finished distill job: the daemon's first picture with the new LoRA, the stored
    # source picture it was trained on, or nothing.
    result_image: ResultImage = "preview"
    log_level: str = "INFO"


_OWN_FLAGS = {
    "--bot-token-file": "file with the xoxb- bot token [env SLACK_BOT_TOKEN]",
    "--app-token-file": "file with the xapp- app-level token, Socket Mode [env SLACK_APP_TOKEN]",
    "--signing-secret-file": "file with the signing secret, HTTP mode [env SLACK_SIGNING_SECRET]",
    "--allow-workspaces": "comma-separated team ids allowed to use the bot [all]",
}


def build_parser() -> argparse.ArgumentParser:
    """The bot's flags; each non-secret one also reads a DISTILLERY_SLACK_* environment variable."""
    modes = {"socket": "Socket Mode, with the app token and no public endpoint", "http": "Slack posts to --path"}
    parser = bot_parser("Slack", modes, (3000, "/slack/events"), _OWN_FLAGS)
    parser.add_argument(
        "--result-image",
        choices=RESULT_IMAGES,
        help="picture posted under a finished job: the LoRA's first picture, its source, or none [preview]",
    )
    return parser


def _ids(text: str) -> frozenset[str]:
    return frozenset(part.strip() for part in text.split(",") if part.strip())


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> SlackSettings:
    """Parse flags, read the environment and credential files, check the combination, and freeze it."""
    environ = os.environ if environ is None else environ
    sources = Sources(vars(build_parser().parse_args(argv)), environ, "DISTILLERY_SLACK")
    value, secret = sources.value, sources.secret
    result_image = sources.choice("result_image", RESULT_IMAGES)
    settings = SlackSettings(
        mode="http" if sources.choice("mode", ("socket", "http")) == "http" else "socket",
        bot_token=secret("bot_token_file", "SLACK_BOT_TOKEN", "slack-bot-token"),
        app_token=secret("app_token_file", "SLACK_APP_TOKEN", "slack-app-token"),
        signing_secret=secret("signing_secret_file", "SLACK_SIGNING_SECRET", "slack-signing-secret"),
        daemon_target=value("daemon", DEFAULT_DAEMON),
        daemon_token=secret("daemon_token_file", "DISTILLERY_TOKEN", "distillery-token"),
        host=value("host", "127.0.0.1"),
        port=sources.number("port", 3000),
        path=value("path", "/slack/events"),
        allowed_workspaces=_ids(value("allow_workspaces")),
        allowed_channels=_ids(value("allow_channels")),
        allowed_users=_ids(value("allow_users")),
        result_image="source" if result_image == "source" else "none" if result_image == "none" else "preview",
        log_level=value("log_level", "INFO").upper(),
    )
    check(settings)
    return settings


def check(settings: SlackSettings) -> None:
    """Refuse a combination that cannot work, saying which credential is missing or malformed."""
    if not settings.bot_token:
        raise SettingsError("no bot token: set SLACK_BOT_TOKEN or --bot-token-file (OAuth & Permissions page)")
    if not settings.bot_token.startswith("xoxb-"):
        raise SettingsError("the bot token must be a bot token (it starts with xoxb-)")
    if settings.mode == "socket":
        if not settings.app_token:
            raise SettingsError("Socket Mode needs an app-level token: set SLACK_APP_TOKEN or --app-token-file")
        if not settings.app_token.startswith("xapp-"):
            raise SettingsError("the app-level token must start with xapp- (Basic Information > App-Level Tokens)")
    elif not settings.signing_secret:
        raise SettingsError(
            "HTTP mode needs the signing secret: set SLACK_SIGNING_SECRET or --signing-secret-file"
        )
    if not settings.path.startswith("/"):
        raise SettingsError("--path must start with /")
