"""Downloading a picture a user uploaded to Slack, for the daemon to distill.

Slack files are private: ``url_private_download`` answers only with the bot token in an ``Authorization``
header. When the app lacks the ``files:read`` scope (or cannot see the file) Slack does not answer 403 but
HTTP 200 with its HTML sign-in page, so the body is checked before it is treated as an image. The token is
sent only to Slack's file host (``file_url_prefixes``), also across redirects, which are followed by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import aiohttp

log = logging.getLogger(__name__)

UNREADABLE = (
    "I could not read that file from Slack. The app needs the files:read permission and must be in this "
    "channel; ask the operator to reinstall it from the manifest, or send a link with /distill <url> instead."
)
NOT_SLACK = "That file is not stored on Slack, so I will not fetch it with the bot's token."
NOT_AN_IMAGE = "That file is not a picture; upload a JPEG, PNG or WebP photo."
DOWNLOAD_FAILED = "Slack did not hand over that file (it answered HTTP {status}); please upload it again."
NETWORK = "I could not download that file from Slack just now; please try again."
MAX_REDIRECTS = 3
_HTML_STARTS = (b"<!doctype html", b"<html", b"<!--", b"<head")


class FileRefused(Exception):
    """The upload cannot be used; ``str(error)`` is the sentence for the user."""


@dataclass(frozen=True)
class SlackFile:
    """The fields of a Slack file object the bot needs."""

    id: str
    name: str
    mimetype: str
    size: int
    url: str

    @classmethod
    def from_event(cls, item: Mapping[str, Any]) -> SlackFile:
        """From a file object of a message event or of files.info."""
        return cls(
            id=str(item.get("id", "")),
            name=str(item.get("name") or item.get("title") or "upload"),
            mimetype=str(item.get("mimetype", "")),
            size=int(item.get("size") or 0),
            url=str(item.get("url_private_download") or item.get("url_private") or ""),
        )

    @property
    def is_image(self) -> bool:
        return self.mimetype.startswith("image/")


def check_file(file: SlackFile, max_bytes: int) -> None:
    """Refuse what is plainly not a usable picture before downloading a byte of it."""
    if file.mimetype and not file.is_image:
        raise FileRefused(NOT_AN_IMAGE)
    if file.size > max_bytes:
        raise FileRefused(f"That picture is larger than {max_bytes // (1024 * 1024)} MB; send a smaller one.")


def looks_like_html(head: bytes) -> bool:
    """Slack's sign-in page instead of the file (what a missing files:read scope gets)."""
    return head.lstrip()[:16].lower().startswith(_HTML_STARTS)


async def download(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    *,
    allowed_prefixes: tuple[str, ...],
    max_bytes: int,
) -> bytes:
    """The file's bytes, fetched with the bot token; FileRefused with a user-facing sentence otherwise."""
    for _ in range(MAX_REDIRECTS + 1):
        if not url.startswith(allowed_prefixes):
            raise FileRefused(NOT_SLACK)
        try:
            async with session.get(
                url, headers={"Authorization": f"Bearer {token}"}, allow_redirects=False
            ) as response:
                if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                    url = urljoin(url, response.headers["Location"])
                    continue
                if response.status in (401, 403, 404):
                    raise FileRefused(UNREADABLE)
                if response.status != 200:
                    raise FileRefused(DOWNLOAD_FAILED.format(status=response.status))
                if response.content_type == "text/html":
                    raise FileRefused(UNREADABLE)
                return await _read_capped(response, max_bytes)
        except aiohttp.ClientError as error:
            log.warning("downloading a Slack file failed: %s", type(error).__name__)
            raise FileRefused(NETWORK) from None
        except TimeoutError:
            raise FileRefused(NETWORK) from None
    raise FileRefused(UNREADABLE)


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    too_big = f"That picture is larger than {max_bytes // (1024 * 1024)} MB; send a smaller one."
    if response.content_length is not None and response.content_length > max_bytes:
        raise FileRefused(too_big)
    parts: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise FileRefused(too_big)
        parts.append(chunk)
    data = b"".join(parts)
    # Slack's sign-in page sometimes comes without a text/html type; the bytes tell.
    if looks_like_html(data[:64]):
        raise FileRefused(UNREADABLE)
    return data


def new_session() -> aiohttp.ClientSession:
    """A session for Slack file downloads: bounded in time, and blind to proxy variables in the environment."""
    timeout = aiohttp.ClientTimeout(total=120, sock_connect=10, sock_read=30)
    return aiohttp.ClientSession(timeout=timeout, trust_env=False)
