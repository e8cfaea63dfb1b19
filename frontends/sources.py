"""Where a bot's settings come from, the same for every bot: flag > ``<PREFIX>_<KEY>`` environment variable >
default, and for secrets a file named by a flag > the platform's standard environment variable > a systemd
credential in ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``). A secret is never a flag: flags show in ``ps``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Where the packaged daemon listens (its systemd unit's RuntimeDirectory).
DEFAULT_DAEMON = "unix:/run/distillery/distillery.sock"


class SettingsError(Exception):
    """The configuration cannot work; the message says what to fix (and never contains a secret)."""


def read_secret(path: str | Path) -> str:
    """A credential file's contents, stripped; if unreadable, an error naming the path (never the contents)."""
    try:
        return Path(path).read_text().strip()
    except OSError as error:
        raise SettingsError(f"cannot read the credential file {path}: {error.strerror}") from None


class Sources:
    """The parsed flags and the environment of one bot process, asked key by key."""

    def __init__(self, args: Mapping[str, Any], environ: Mapping[str, str], prefix: str) -> None:
        self.args, self.environ, self.prefix = args, environ, prefix
        self.credentials = environ.get("CREDENTIALS_DIRECTORY", "")

    def value(self, key: str, default: str = "") -> str:
        """A setting: its flag (``--some-key`` is ``some_key``), else ``<PREFIX>_SOME_KEY``, else the default."""
        flag = self.args.get(key)
        if flag is not None:
            return str(flag)
        return self.environ.get(f"{self.prefix}_{key.upper()}", default)

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        """A setting that must be one of ``choices`` (the first is the default)."""
        chosen = self.value(key, choices[0])
        if chosen not in choices:
            raise SettingsError(f"--{key.replace('_', '-')} must be one of {', '.join(choices)}, not {chosen!r}")
        return chosen

    def number(self, key: str, default: int) -> int:
        """A whole-number setting."""
        try:
            return int(self.value(key, str(default)))
        except ValueError:
            raise SettingsError(f"--{key.replace('_', '-')} must be a number") from None

    def secret(self, flag_key: str, env_key: str, credential: str) -> str:
        """A secret from the file its flag (or ``<PREFIX>_<FLAG_KEY>``) names, its environment variable, or its
        systemd credential (""); an unreadable file is an error naming it."""
        path = self.value(flag_key)
        if path:
            return read_secret(path)
        if self.environ.get(env_key):
            return self.environ[env_key].strip()
        if self.credentials and (Path(self.credentials) / credential).is_file():
            return read_secret(Path(self.credentials) / credential)
        return ""


def bot_parser(
    platform: str, modes: Mapping[str, str], http: tuple[int, str], own: Mapping[str, str]
) -> argparse.ArgumentParser:
    """A chat bot's parser. The flags every bot has: ``--mode`` (``modes``: how the platform reaches the bot ->
    what that needs; the first is the default), where the daemon is, the HTTP mode's address (``http``: default
    port and path), the channel and user allow-lists, and the log level; then the platform's ``own`` flags
    (flag -> help), each taking one word."""
    port, path = http
    parser = argparse.ArgumentParser(
        prog=f"distillery-{platform.lower()}",
        description=f"The distillery's {platform} bot: /distill a portrait, follow the job in the channel.",
    )
    add = parser.add_argument
    ways = "; ".join(f"{mode}: {why}" for mode, why in modes.items())
    add("--mode", choices=tuple(modes), help=f"{ways} [{next(iter(modes))}]")
    add("--daemon", help=f"daemon address: unix:/path or 127.0.0.1:PORT [{DEFAULT_DAEMON}]")
    add("--daemon-token-file", help="file with the daemon's bearer token (TCP only) [env DISTILLERY_TOKEN]")
    add("--host", help="HTTP mode: address to listen on [127.0.0.1]")
    add("--port", type=int, help=f"HTTP mode: port [{port}]")
    add("--path", help=f"HTTP mode: request path [{path}]")
    add("--allow-channels", help="comma-separated channel ids the bot answers in (DMs always) [all]")
    add("--allow-users", help="comma-separated user ids allowed to use the bot [all]")
    add("--log-level", help="DEBUG, INFO, WARNING [INFO]")
    for flag, help_text in own.items():
        add(flag, help=help_text)
    return parser
