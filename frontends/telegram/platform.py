"""Telegram as a ``frontends.platform.Platform``: messages, inline keyboards and files through the Bot API.

Messages are sent as plain text (no ``parse_mode``), so user text in them (captions, descriptions, prompts,
file names) can never format or link: ``escape`` has nothing to do. A button's callback data is
``<action>:<value>`` (``cancel:<job id>``, ``lora-delete:<name>``); the handlers check who pressed it.
Telegram's flood control is per bot, so its RetryAfter holds every chat.
"""

from __future__ import annotations

import contextlib
import datetime as dtm
import logging
import warnings
from collections.abc import Iterator, Sequence

from distillery.v1 import distillery_pb2 as pb
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputMediaPhoto, ReplyParameters
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

from frontends.platform import Attachment, Button, Look, MessageGone, Place, Refused, RetryLater, Unreachable

log = logging.getLogger(__name__)

PLATFORM = "telegram"

# Telegram's longest message; a longer text is cut rather than refused.
MAX_TEXT = 4096
# Telegram's limit for a photo upload; bigger pictures go as files. An album holds up to ten photos.
PHOTO_LIMIT = 10 * 1024 * 1024
ALBUM = 10
_GONE = ("not found", "can't be edited", "chat not found", "message to edit not found")


def retry_after_seconds(error: RetryAfter) -> float:
    """Seconds to wait from a RetryAfter, whether PTB gives them as int or timedelta (PTB_TIMEDELTA)."""
    with warnings.catch_warnings():
        # PTB 22 warns that the int form will become a timedelta; both forms are handled here.
        warnings.simplefilter("ignore")
        value = error.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


def requester(user_id: int | str = "", chat_id: int | str = "") -> pb.Requester:
    """A Telegram requester; with no user it is the platform itself (allowed to re-attach to any bot job)."""
    return pb.Requester(platform=PLATFORM, workspace="", user=str(user_id), chat=str(chat_id))


def is_group(chat: str) -> bool:
    """Telegram gives groups, supergroups and channels negative ids and private chats positive ones."""
    return chat.startswith("-")


def keyboard(buttons: Sequence[Button]) -> InlineKeyboardMarkup | None:
    """One row of inline buttons; None (which removes the keyboard from an edited message) for none."""
    if not buttons:
        return None
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(button.label, callback_data=f"{button.action}:{button.value}")
                for button in buttons
            ]
        ]
    )


def text_of(look: Look) -> str:
    """The message text: the look's text, then its note after a blank line, cut to Telegram's limit."""
    text = f"{look.text}\n\n{look.note}" if look.note else look.text
    return text[:MAX_TEXT]


@contextlib.contextmanager
def platform_errors() -> Iterator[None]:
    """Bot API errors as the core's four kinds; "message is not modified" is success (it shows that already)."""
    try:
        yield
    except RetryAfter as error:
        raise RetryLater(retry_after_seconds(error), everywhere=True) from error
    except BadRequest as error:
        message = error.message.lower()
        if "not modified" in message:
            return
        if any(words in message for words in _GONE):
            raise MessageGone(error.message) from error
        raise Refused(error.message) from error
    except Forbidden as error:  # blocked by the user, or removed from the group
        raise MessageGone(error.message) from error
    except NetworkError as error:  # includes TimedOut
        raise Unreachable(error.message) from error
    except TelegramError as error:
        raise Refused(error.message) from error


class TelegramPlatform:
    """The Bot API calls of the frontend core, for one bot."""

    album = ALBUM

    def __init__(self, bot: Bot, private_interval: float = 1.0, group_interval: float = 3.0) -> None:
        self.bot = bot
        self.private_interval = private_interval
        self.group_interval = group_interval

    def interval(self, chat: str) -> float:
        return self.group_interval if is_group(chat) else self.private_interval

    def escape(self, text: str) -> str:
        """Plain-text messages show user text literally: nothing to escape while no parse_mode is set."""
        return text

    @staticmethod
    def _reply(message: str) -> ReplyParameters | None:
        return ReplyParameters(int(message), allow_sending_without_reply=True) if message else None

    async def send(self, chat: str, look: Look, reply_to: str = "", owner: pb.Requester | None = None) -> Place:
        with platform_errors():
            sent = await self.bot.send_message(
                int(chat),
                text_of(look),
                reply_markup=keyboard(look.buttons),
                reply_parameters=self._reply(reply_to),
            )
            return Place(chat, str(sent.message_id))
        raise Refused("Telegram did not send the message.")

    async def edit(self, place: Place, look: Look) -> None:
        with platform_errors():
            await self.bot.edit_message_text(
                text_of(look),
                chat_id=int(place.chat),
                message_id=int(place.message),
                reply_markup=keyboard(look.buttons),
            )

    async def upload(self, place: Place, files: Sequence[Attachment]) -> None:
        """Pictures as photos (several as one album), anything else or too big for a photo as a file; each
        answers the message at ``place``."""
        chat, reply = int(place.chat), self._reply(place.message)
        photos = [file for file in files if file.picture and len(file.data) <= PHOTO_LIMIT]
        documents = [file for file in files if file not in photos]
        with platform_errors():
            if len(photos) == 1:
                photo = photos[0]
                await self.bot.send_photo(
                    chat, photo.data, caption=photo.caption or photo.title, reply_parameters=reply
                )
            elif photos:
                media = [InputMediaPhoto(photo.data, caption=photo.caption or photo.title) for photo in photos]
                await self.bot.send_media_group(chat, media, reply_parameters=reply)
            for document in documents:
                await self.bot.send_document(
                    chat,
                    document.data,
                    filename=document.name,
                    caption=document.caption or document.title,
                    reply_parameters=reply,
                )
