"""Discord as the frontend core sees it: channel messages written with the bot token, buttons, attachments.

Job messages are normal channel messages, not interaction responses: an interaction token expires after 15
minutes and a training job can outlast it. Discord renders markdown in every message, so all text is escaped
(``escape``) and no message may ping anyone but its owner (``allowed_mentions``). hikari itself waits out a
429 shorter than its ``max_rate_limit``; what reaches here is mapped onto the core's four errors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import aiohttp
import hikari
from distillery.v1 import distillery_pb2 as pb

from frontends.escape import discord_markdown
from frontends.platform import (
    Attachment,
    Look,
    MessageGone,
    Place,
    PlatformError,
    Refused,
    RetryLater,
    Unreachable,
)

log = logging.getLogger(__name__)

# Discord caps a message's content at 2000 characters and a button's custom id at 100.
MAX_CONTENT = 2000
# Without a server boost a channel takes files up to 10 MiB; each interaction tells the real limit.
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
_MB = 1024 * 1024


# User text made literal: no markdown, no masked links, no mentions (``<@id>``, @everyone and @here).
escape = discord_markdown


def clip(text: str, limit: int = MAX_CONTENT) -> str:
    """Text cut to Discord's length limit without leaving a dangling escape."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rstrip("\\")
    return cut + "\u2026"


def custom_id(action: str, owner: str, value: str) -> str:
    """A button's id: what it does, whose click counts, and its argument (a job id, a LoRA name)."""
    return f"{action}:{owner}:{value}"[:100]


def parse_custom_id(text: str) -> tuple[str, str, str]:
    """(action, owner, value) of a button id made by ``custom_id``."""
    action, _, rest = text.partition(":")
    owner, _, value = rest.partition(":")
    return action, owner, value


def map_error(error: Exception) -> PlatformError:
    """hikari's and aiohttp's failures as the core's errors."""
    if isinstance(error, hikari.RateLimitTooLongError):
        return RetryLater(error.retry_after, everywhere=error.is_global)
    if isinstance(error, hikari.NotFoundError | hikari.ForbiddenError):
        return MessageGone(str(error.message or error.status))
    if isinstance(error, hikari.InternalServerError):
        return Unreachable(str(error.status))
    if isinstance(error, hikari.ClientHTTPResponseError):
        return Refused(str(error.message or error.status))
    return Unreachable(type(error).__name__)


_ERRORS = (hikari.HTTPError, aiohttp.ClientError, TimeoutError, OSError)


class DiscordPlatform:
    """The core's ``Platform`` over hikari's REST client (either bot mode has one)."""

    # One picture per message, each with its own caption (its name and seed).
    album = 1

    def __init__(self, rest: hikari.api.RESTClient, interval: float = 1.0) -> None:
        self.rest = rest
        self._interval = interval
        # The upload limit Discord reported for each channel's guild (boosts raise it), learnt from interactions.
        self.upload_limits: dict[str, int] = {}

    def interval(self, chat: str) -> float:
        return self._interval

    def escape(self, text: str) -> str:
        return escape(text)

    def components(self, look: Look) -> list[hikari.api.ComponentBuilder]:
        """The look's buttons in one action row (none: the row goes away)."""
        if not look.buttons:
            return []
        row = self.rest.build_message_action_row()
        for button in look.buttons:
            # ButtonStyle.DANGER or SECONDARY by value: hikari types the style argument as literals.
            style: Literal[2, 4] = 4 if button.danger else 2
            row.add_interactive_button(
                style, custom_id(button.action, button.owner, button.value), label=button.label
            )
        return [row]

    @staticmethod
    def content(look: Look) -> str:
        """The look as message content: the owner mentioned first, then the escaped text and note."""
        text = escape(look.text) + (f"\n_{escape(look.note)}_" if look.note else "")
        return clip((f"<@{look.owner}> " if look.owner.isdigit() else "") + text)

    async def send(self, chat: str, look: Look, reply_to: str = "", owner: pb.Requester | None = None) -> Place:
        """Post in the channel; when the bot cannot (not a member, no permission), in the owner's DM."""
        # Only the owner is ever pinged, and only when the message first appears.
        ping = [int(look.owner)] if look.owner.isdigit() else False
        try:
            return await self._post(chat, self.content(look), reply_to, ping, self.components(look))
        except MessageGone:
            if owner is None or not owner.user.isdigit():
                raise
            log.info("cannot post in channel %s; using a DM", chat)
        try:
            dm = await self.rest.create_dm_channel(int(owner.user))
        except _ERRORS as error:
            raise map_error(error) from None
        return await self._post(str(dm.id), self.content(look), "", ping, self.components(look))

    async def _post(
        self,
        chat: str,
        content: str,
        reply_to: str = "",
        ping: list[int] | bool = False,
        components: Sequence[hikari.api.ComponentBuilder] = (),
        attachments: Sequence[hikari.Resourceish] = (),
    ) -> Place:
        try:
            message = await self.rest.create_message(
                int(chat),
                content,
                components=components,
                attachments=attachments,
                reply=int(reply_to) if reply_to.isdigit() else hikari.UNDEFINED,
                reply_must_exist=False,
                mentions_everyone=False,
                mentions_reply=False,
                role_mentions=False,
                user_mentions=ping,
            )
        except _ERRORS as error:
            raise map_error(error) from None
        return Place(str(message.channel_id), str(message.id))

    async def edit(self, place: Place, look: Look) -> None:
        try:
            await self.rest.edit_message(
                int(place.chat),
                int(place.message),
                self.content(look),
                components=self.components(look),
                mentions_everyone=False,
                role_mentions=False,
                user_mentions=False,
            )
        except _ERRORS as error:
            raise map_error(error) from None

    async def upload(self, place: Place, files: Sequence[Attachment]) -> None:
        """Each file in a message of its own answering the job's message; one over the channel's upload limit
        (learnt from the interactions there) is replaced by a sentence saying how to fetch it."""
        limit = self.upload_limits.get(place.chat, DEFAULT_UPLOAD_LIMIT)
        for file in files:
            if len(file.data) <= limit:
                attachment = hikari.Bytes(file.data, file.name)
                caption = clip(escape(file.caption or file.title))
                await self._post(place.chat, caption, place.message, attachments=[attachment])
                continue
            name = file.name.removesuffix(".safetensors")
            too_big = (
                f"{file.name} is {len(file.data) / _MB:.1f} MB, more than this channel takes ({limit // _MB} MB). "
                f"Fetch it with the command line: distillery lora {name} --download"
            )
            await self._post(place.chat, escape(too_big), place.message)
