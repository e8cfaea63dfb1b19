"""Attachments from Discord's CDN: checked, then downloaded at once under the size cap.

Attachment links are signed and expire within hours, so the bot fetches the picture while it handles the
interaction and sends the daemon the bytes (an upload), never the link. Only the configured CDN hosts are
contacted: a link anywhere else is refused without a request, and redirects are not followed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp
import hikari

from frontends.discord.settings import DiscordSettings

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_MB = 1024 * 1024
UNREADABLE = "I could not download that picture from Discord; try attaching it again."


class ImageRefused(Exception):
    """The attachment cannot be used; ``str(error)`` says why, for the user."""


def attachment_image(attachment: hikari.Attachment) -> bool:
    """Whether an attachment is a picture the distillery reads (by its media type, else its name)."""
    if attachment.media_type:
        return attachment.media_type.lower() in ("image/png", "image/jpeg", "image/webp")
    return attachment.filename.lower().endswith(_IMAGE_SUFFIXES)


def on_cdn(url: str, settings: DiscordSettings) -> bool:
    """Whether the link points at one of the configured CDN hosts, over the configured scheme."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts.scheme == settings.cdn_scheme and "@" not in parts.netloc and host in settings.cdn_hosts


async def download(
    session: aiohttp.ClientSession, attachment: hikari.Attachment, settings: DiscordSettings
) -> bytes:
    """The attachment's bytes; ImageRefused for what is not a picture, too big, or not on Discord's CDN."""
    cap = settings.max_image_bytes
    if not attachment_image(attachment):
        raise ImageRefused(f"{attachment.filename} is not a picture I can read (PNG, JPEG or WebP).")
    if attachment.size > cap:
        raise ImageRefused(f"That picture is {attachment.size / _MB:.1f} MB; the limit is {cap // _MB} MB.")
    if not on_cdn(attachment.url, settings):
        raise ImageRefused(UNREADABLE)
    try:
        async with session.get(attachment.url, allow_redirects=False) as response:
            if response.status != 200:
                raise ImageRefused(UNREADABLE)
            data = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > cap:
                    raise ImageRefused(f"That picture is larger than {cap // _MB} MB.")
    except (aiohttp.ClientError, TimeoutError) as error:
        raise ImageRefused(UNREADABLE) from error
    return bytes(data)
