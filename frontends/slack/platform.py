"""Slack as a ``frontends.platform.Platform``: Block Kit messages, their updates and file uploads.

A look becomes blocks: its text in a ``plain_text`` section (nothing a user wrote can format, link or ping
there), who asked and the passing note as context, and its buttons. The message's ``text`` (what
notifications show) is the same text escaped for mrkdwn. Files go into the message's thread, one upload per
file (``album`` 1), so each is counted on its own. When the bot cannot post in a channel (a slash command
works in channels it was never invited to) the message goes to the owner's DM.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import aiohttp
from distillery.v1 import distillery_pb2 as pb
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from frontends.escape import slack_mrkdwn
from frontends.follow import CANCEL_ACTION as CORE_CANCEL
from frontends.platform import Attachment, Button, Look, MessageGone, Place, Refused, RetryLater, Unreachable

log = logging.getLogger(__name__)

Block = dict[str, Any]

CANCEL_ACTION = "distill_cancel"
# The core's button actions as Slack action ids.
ACTION_IDS = {CORE_CANCEL: CANCEL_ACTION}
# Slack refuses a section whose text is longer than 3000 characters.
SECTION_LIMIT = 3000
# Posting in a channel the bot is not in fails with these; the message then goes to the user's DM.
NO_ACCESS = ("not_in_channel", "channel_not_found", "is_archived", "restricted_action")
# An update of a message that is no longer there, or in a channel the bot has lost.
_GONE = ("message_not_found", "cant_update_message", "channel_not_found", "is_archived", "not_in_channel")


def retry_after(error: SlackApiError) -> float | None:
    """Seconds to wait when Slack rate-limited the call (HTTP 429), else None."""
    response = error.response
    if response is None or getattr(response, "status_code", None) != 429:
        return None
    headers: Mapping[str, Any] = getattr(response, "headers", None) or {}
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            try:
                return max(float(value), 0.0)
            except (TypeError, ValueError):
                break
    return 1.0


def slack_error(error: SlackApiError) -> str:
    return str(error.response.get("error") or "") if error.response is not None else ""


@contextlib.contextmanager
def platform_errors(gone: Sequence[str] = _GONE) -> Iterator[None]:
    """Web API errors as the core's four kinds."""
    try:
        yield
    except SlackApiError as error:
        wait = retry_after(error)
        if wait is not None:
            raise RetryLater(wait) from error
        if slack_error(error) in gone:
            raise MessageGone(slack_error(error)) from error
        raise Refused(slack_error(error) or str(error)) from error
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        raise Unreachable(str(error) or type(error).__name__) from error


def plain_section(text: str) -> Block:
    """A section that shows text as it is; longer than Slack allows, it is cut."""
    if len(text) > SECTION_LIMIT:
        text = text[: SECTION_LIMIT - 1] + "…"
    return {"type": "section", "text": {"type": "plain_text", "text": text, "emoji": False}}


def context(markdown: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": markdown}]}


def button_element(button: Button) -> Block:
    """A button; a ``confirm`` sentence becomes Slack's confirmation dialog."""
    element: Block = {
        "type": "button",
        "action_id": ACTION_IDS.get(button.action, button.action),
        "value": button.value,
        "text": {"type": "plain_text", "text": button.label},
    }
    if button.danger:
        element["style"] = "danger"
    if button.confirm:
        element["confirm"] = {
            "title": {"type": "plain_text", "text": f"{button.label} this job?"},
            "text": {"type": "plain_text", "text": button.confirm},
            "confirm": {"type": "plain_text", "text": f"{button.label} it"},
            "deny": {"type": "plain_text", "text": "Keep going"},
        }
    return element


def look_blocks(look: Look) -> list[Block]:
    """The blocks of a look: the text, who asked, the note, the buttons."""
    blocks = [plain_section(look.text)]
    if look.owner:
        blocks.append(context(f"Requested by <@{look.owner}>"))
    if look.note:
        blocks.append(context(slack_mrkdwn(look.note)))
    if look.buttons:
        blocks.append(
            {
                "type": "actions",
                "block_id": "distill_actions",
                "elements": [button_element(b) for b in look.buttons],
            }
        )
    return blocks


class SlackPlatform:
    """The Web API calls of the frontend core, for one Slack app."""

    album = 1

    def __init__(self, client: AsyncWebClient, interval: float = 1.0) -> None:
        self.client = client
        self._interval = interval

    def interval(self, chat: str) -> float:
        return self._interval

    def escape(self, text: str) -> str:
        return slack_mrkdwn(text)

    async def _post(self, chat: str, look: Look) -> Place:
        reply = await self.client.chat_postMessage(
            channel=chat, text=slack_mrkdwn(look.text), blocks=look_blocks(look)
        )
        return Place(str(reply["channel"]), str(reply["ts"]))

    async def send(self, chat: str, look: Look, reply_to: str = "", owner: pb.Requester | None = None) -> Place:
        """Post in the channel; where the bot may not, in the owner's DM (which always works)."""
        with platform_errors(gone=()):
            try:
                return await self._post(chat, look)
            except SlackApiError as error:
                if slack_error(error) not in NO_ACCESS or owner is None or not owner.user:
                    raise
                log.info("cannot post in %s (%s); using a DM", chat, slack_error(error))
            opened = await self.client.conversations_open(users=owner.user)
            return await self._post(str(opened["channel"]["id"]), look)
        raise Refused("Slack did not take the message.")

    async def edit(self, place: Place, look: Look) -> None:
        with platform_errors():
            await self.client.chat_update(
                channel=place.chat, ts=place.message, text=slack_mrkdwn(look.text), blocks=look_blocks(look)
            )

    async def upload(self, place: Place, files: Sequence[Attachment]) -> None:
        """Each file into the message's thread, its caption as the comment posted with it."""
        with platform_errors():
            for file in files:
                await self.client.files_upload_v2(
                    channel=place.chat,
                    thread_ts=place.message,
                    file=file.data,
                    filename=file.name,
                    title=file.title or file.name,
                    initial_comment=slack_mrkdwn(file.caption) if file.caption else None,
                )
