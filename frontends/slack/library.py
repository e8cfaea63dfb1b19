"""The commands about what the distillery keeps: /loras, /lora <name> (with the owner's actions), /info, /stats,
/models.

Each is answered in the slash command's ack (ephemeral, so a user's private LoRAs never show in the channel).
Two things take longer or need a second step: ``--download`` acks at once and uploads the .safetensors to the
user's DM in a task (a LoRA sent into a channel would be shared with it), and ``--delete`` acks with a question
whose Delete and Keep buttons only the owner who asked may use; the answer replaces the question through the
click's response_url.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from distillery.v1 import distillery_pb2 as pb
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError

from frontends.actions import answer_delete, lora_action, not_owner
from frontends.client import DaemonError
from frontends.commands import UsageError, parse_image_name, parse_lora
from frontends.escape import slack_mrkdwn
from frontends.platform import Attachment, Place, PlatformError
from frontends.render import image_info_text, loras_text, models_text, stats_text
from frontends.slack import blocks

if TYPE_CHECKING:
    from frontends.slack.app import SlackBot, SlashCommand

log = logging.getLogger(__name__)

INFO_USAGE = (
    "Usage: /info <image name>, e.g. /info 3f2a9c1d-1.png (each picture's comment starts with its name), "
    "or /info <lora name> for a LoRA's source picture."
)
NO_IMAGE_NAME = "That message names no picture of the distillery."
_IMAGE_NAME = re.compile(r"[\w.-]+\.png", re.ASCII)


async def on_info(bot: SlackBot, ack: blocks.Ack, request: SlashCommand) -> None:
    """/info <image name>: how a picture was made."""
    words = request.text.split()
    if not words or words[0].lower() in ("help", "-h", "--help"):
        await ack(INFO_USAGE)
        return
    try:
        name = parse_image_name(request.text)
    except UsageError as error:
        await ack(blocks.usage_error_text(str(error), INFO_USAGE))
        return
    await ack(await bot.within_ack(_info(bot, name, request.requester)))


async def _info(bot: SlackBot, name: str, requester: pb.Requester) -> str:
    return image_info_text(await bot.daemon.image_info(name, requester))


def picture_of_message(message: Mapping[str, Any]) -> str | None:
    """The name of the distillery picture a message holds: its file's name, or a name in its words."""
    names = [str(item.get("name") or "") for item in message.get("files") or []]
    names += _IMAGE_NAME.findall(str(message.get("text") or ""))
    return next((name for name in names if name.lower().endswith(".png")), None)


async def info_of_message(bot: SlackBot, requester: pb.Requester, message: Mapping[str, Any]) -> None:
    """The "Image info" message shortcut: the picture's name from the message's file (or its words)."""
    name = picture_of_message(message)
    if name is None:
        await bot.tell(requester, NO_IMAGE_NAME)
        return
    try:
        text = await _info(bot, name, requester)
    except DaemonError as error:
        text = error.message
    await bot.tell(requester, text)


async def on_loras(bot: SlackBot, ack: blocks.Ack, request: SlashCommand) -> None:
    """/loras: the user's LoRAs, then the public ones."""

    async def listing() -> str:
        return loras_text(await bot.daemon.list_loras(request.requester, include_public=True), request.requester)

    await ack(await bot.within_ack(listing()))


async def on_stats(bot: SlackBot, ack: blocks.Ack, request: SlashCommand) -> None:
    """/stats: what the user has made."""

    async def numbers() -> str:
        return stats_text(await bot.daemon.user_stats(request.requester))

    await ack(await bot.within_ack(numbers()))


async def on_models(bot: SlackBot, ack: blocks.Ack, request: SlashCommand) -> None:
    """/models: the models /serve --model may name."""

    async def listing() -> str:
        return models_text(await bot.daemon.status())

    await ack(await bot.within_ack(listing()))


async def on_lora(bot: SlackBot, ack: blocks.Ack, request: SlashCommand) -> None:
    """/lora <name> [--makepublic | --makeprivate | --showimage | --hideimage | --description ... | --delete |
    --download]: the shared actions, answered in the ack."""
    word = request.text.split(maxsplit=1)[0].lower() if request.text else ""
    if word in ("", "help", "-h", "--help"):
        await ack(blocks.lora_usage_text())
        return
    try:
        args = parse_lora(request.text)
    except UsageError as error:
        await ack(blocks.usage_error_text(str(error), blocks.lora_usage_text()))
        return
    requester = request.requester
    limit = bot.settings.max_upload_bytes
    try:
        answer = await bot.in_time(lora_action(bot.daemon, args, requester, limit))
    except DaemonError as error:
        await ack(error.message)
        return
    if answer.buttons:
        await ack(text=slack_mrkdwn(answer.text), blocks=blocks.delete_confirmation(answer.text, answer.buttons))
    elif answer.file is not None:
        bot.spawn(_send_file(bot, requester, answer.file), requester)
        name = f"{args.name}.safetensors"
        await ack(f"Sending {name} ({answer.file_size / 1e6:.1f} MB) to you in a direct message.")
    else:
        await ack(answer.text)


def _button_value(value: str) -> tuple[str, str]:
    owner, _, name = value.partition(":")
    return owner, name


async def delete_clicked(
    bot: SlackBot, requester: pb.Requester, action: str, value: str, respond: AsyncRespond
) -> None:
    """Delete or Keep, from the question's buttons: only the user who asked may use them."""
    owner, name = _button_value(value)
    if requester.user != owner or not name:
        await bot.tell(requester, not_owner(name))
        return
    try:
        text = await answer_delete(bot.daemon, action, name, requester)
    except DaemonError as error:
        text = error.message
    await _answer(bot, requester, respond, text)


async def _answer(bot: SlackBot, requester: pb.Requester, respond: AsyncRespond, text: str) -> None:
    """Replace the ephemeral question with the outcome (a new ephemeral message should that fail)."""
    if respond.response_url:
        try:
            await respond(**blocks.reply(text), replace_original=True)
            return
        except (OSError, SlackApiError) as error:
            log.info("answering through the response_url failed: %s", error)
    await bot.tell(requester, text)


async def _send_file(bot: SlackBot, requester: pb.Requester, fetch: Callable[[], Awaitable[Attachment]]) -> None:
    """The file into the user's DM: a private LoRA posted in a channel would be shared with everyone there."""
    try:
        attachment = await fetch()
    except DaemonError as error:
        await bot.tell(requester, error.message)
        return
    try:
        opened = await bot.client.conversations_open(users=requester.user)
        dm = Place(str(opened["channel"]["id"]), "")
        await bot.platform.upload(dm, [attachment])
    except (SlackApiError, PlatformError) as error:
        log.warning("uploading %s failed: %s", attachment.name, error)
        await bot.tell(requester, f"Slack did not take {attachment.name}; get it with the command line instead.")
