"""Finding the picture in a message and fetching it from Telegram, refusing what bots cannot download.

The Bot API lets a bot download files up to 20 MB. Telegram tells us each file's size with the message, so an
oversized file is refused before any download starts, with a reply that says what to do instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from telegram import Bot, Message
from telegram.error import BadRequest, TelegramError

from frontends.telegram.settings import DOWNLOAD_LIMIT

_MB = 1024 * 1024


class Refusal(Exception):
    """A request the bot turns down itself; ``str(error)`` is the reply for the chat."""


@dataclass(frozen=True)
class ImageRef:
    """A file in Telegram that should hold the portrait."""

    file_id: str
    file_size: int | None
    kind: str  # "photo" or "document"


def image_of(message: Message | None) -> ImageRef | None:
    """The largest size of a photo, or a file sent as a document; None when the message carries neither."""
    if message is None:
        return None
    if message.photo:
        largest = max(message.photo, key=lambda size: (size.width * size.height, size.file_size or 0))
        return ImageRef(largest.file_id, largest.file_size, "photo")
    if message.document is not None:
        # Any document: a file that is not an image gets the daemon's own "not an image" answer.
        return ImageRef(message.document.file_id, message.document.file_size, "document")
    return None


def too_big(size: int | None, limit: int = DOWNLOAD_LIMIT) -> str:
    """The reply for a file over the Bot API's download limit."""
    what = f"That file is {size / _MB:.1f} MB" if size else "That file is too big"
    return (
        f"{what}; Telegram lets bots download files of at most {limit // _MB} MB. "
        "Send it as a photo (Telegram shrinks photos) or send a link to it instead."
    )


async def download(bot: Bot, image: ImageRef, limit: int = DOWNLOAD_LIMIT) -> bytes:
    """The file's bytes; Refusal when it is over ``limit`` or Telegram will not hand it out."""
    if image.file_size is not None and image.file_size > limit:
        raise Refusal(too_big(image.file_size, limit))
    try:
        file = await bot.get_file(image.file_id)
    except BadRequest as error:
        # A file whose size the message did not say fails here: "Bad Request: file is too big".
        if "too big" in error.message.lower():
            raise Refusal(too_big(None, limit)) from error
        raise Refusal(f"Telegram would not give me that file ({error.message}); please send it again.") from error
    if file.file_size is not None and file.file_size > limit:
        raise Refusal(too_big(file.file_size, limit))
    try:
        data = await file.download_as_bytearray()
    except TelegramError as error:
        raise Refusal("I could not download that file from Telegram; please send it again.") from error
    return bytes(data)
