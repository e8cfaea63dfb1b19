"""Where a bot's settings come from, the same for every bot: flag > ``<PREFIX>_<KEY>`` environment variable >
default, and for secrets a file named by a flag > the platform's standard environment variable > a systemd
credential in ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``). A secret is never a flag: flags show in ``ps``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any


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
        """A secret from the file its flag names, its environment variable, or its systemd credential ("")."""
        path = self.args.get(flag_key)
        if path:
            return read_secret(path)
        if self.environ.get(env_key):
            return self.environ[env_key].strip()
        if self.credentials and (Path(self.credentials) / credential).is_file():
            return read_secret(Path(self.credentials) / credential)
        return ""


def add_common_flags(parser: argparse.ArgumentParser, daemon: str, port: int, path: str) -> None:
    """The flags every bot has: where the daemon is, the HTTP mode's address, and the log level."""
    add = parser.add_argument
    add("--daemon", help=f"daemon address: unix:/path or 127.0.0.1:PORT [{daemon}]")
    add("--daemon-token-file", help="file with the daemon's bearer token (TCP only) [env DISTILLERY_TOKEN]")
    add("--host", help="HTTP mode: address to listen on [127.0.0.1]")
    add("--port", type=int, help=f"HTTP mode: port [{port}]")
    add("--path", help=f"HTTP mode: request path [{path}]")
    add("--log-level", help="DEBUG, INFO, WARNING [INFO]")
