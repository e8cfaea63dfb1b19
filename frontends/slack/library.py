"""The commands about what the distillery keeps: /loras, /lora <name> (with the owner's actions), /info, /stats.

Each is answered in the slash command's ack (ephemeral, so a user's private LoRAs never show in the channel).
Two things take longer or need a second step: ``--download`` acks at once and uploads the .safetensors to the
user's DM in a task (a LoRA sent into a channel would be shared with it), and ``--delete`` acks with a question
whose Delete and Keep buttons only the owner who asked may use; the answer replaces the question through the
click's response_url.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from distillery.v1 import distillery_pb2 as pb
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError

from frontends.client import DaemonError
from frontends.commands import LoraArgs, UsageError, parse_lora
from frontends.render import image_info_text, lora_text, loras_text, same_person, stats_text
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
_MIB = 1024 * 1024


def image_name(word: str) -> str:
    """An image name as users write it: a LoRA's name alone means its source picture."""
    word = word.strip()
    return word if word.lower().endswith(".png") else f"{word}.png"


async def on_info(bot: SlackBot, ack: AsyncAck, request: SlashCommand) -> None:
    """/info <image name>: how a picture was made."""
    words = request.text.split()
    if not words or words[0].lower() in ("help", "-h", "--help"):
        await ack(INFO_USAGE)
        return
    await ack(await bot.within_ack(_info(bot, image_name(words[0]), request.requester)))


async def _info(bot: SlackBot, name: str, requester: pb.Requester) -> str:
    return image_info_text(await bot.daemon.image_info(name, requester))


async def info_of_message(bot: SlackBot, requester: pb.Requester, message: Mapping[str, Any]) -> None:
    """The "Image info" message shortcut: the picture's name from the message's file (or its words)."""
    names = [str(item.get("name") or "") for item in message.get("files") or []]
    names += _IMAGE_NAME.findall(str(message.get("text") or ""))
    names = [name for name in names if name.lower().endswith(".png")]
    if not names:
        await bot.tell(requester, NO_IMAGE_NAME)
        return
    try:
        text = await _info(bot, names[0], requester)
    except DaemonError as error:
        text = error.message
    await bot.tell(requester, text)


async def on_loras(bot: SlackBot, ack: AsyncAck, request: SlashCommand) -> None:
    """/loras: the user's LoRAs, then the public ones."""

    async def listing() -> str:
        return loras_text(await bot.daemon.list_loras(request.requester, include_public=True), request.requester)

    await ack(await bot.within_ack(listing()))


async def on_stats(bot: SlackBot, ack: AsyncAck, request: SlashCommand) -> None:
    """/stats: what the user has made."""

    async def numbers() -> str:
        return stats_text(await bot.daemon.user_stats(request.requester))

    await ack(await bot.within_ack(numbers()))


async def on_lora(bot: SlackBot, ack: AsyncAck, request: SlashCommand) -> None:
    """/lora <name> [--makepublic | --makeprivate | --showimage | --hideimage | --description ... | --delete |
    --download]."""
    word = request.text.split(maxsplit=1)[0].lower() if request.text else ""
    if word in ("", "help", "-h", "--help"):
        await ack(blocks.lora_usage_text())
        return
    try:
        args = parse_lora(request.text)
    except UsageError as error:
        await ack(blocks.usage_error_text(str(error), blocks.lora_usage_text()))
        return
    if args.action == "delete":
        await _ask_before_deleting(bot, ack, args.name, request.requester)
    elif args.action == "download":
        await ack(await bot.within_ack(_start_download(bot, args.name, request.requester)))
    else:
        await ack(await bot.within_ack(_show_or_change(bot, args, request.requester)))


async def _show_or_change(bot: SlackBot, args: LoraArgs, requester: pb.Requester) -> str:
    daemon, name = bot.daemon, args.name
    if args.action == "":
        return lora_text(await daemon.get_lora(name, requester), requester)
    if args.action == "makepublic":
        await daemon.update_lora(name, requester, public=True)
        return f"{name} is public now: everyone here can use it with /serve."
    if args.action == "makeprivate":
        await daemon.update_lora(name, requester, public=False)
        return f"{name} is private now: only you can use it."
    if args.action == "showimage":
        lora = await daemon.update_lora(name, requester, show_image=True)
        later = "" if lora.public else " once you make it public"
        return f"Others can see the source picture of {name}{later}."
    if args.action == "hideimage":
        await daemon.update_lora(name, requester, show_image=False)
        return f"Only you can see the source picture of {name} now."
    if args.action == "description":
        await daemon.update_lora(name, requester, description=args.description)
        if args.description:
            return f"The description of {name} is now: {args.description}"
        return f"{name} has no description now."
    # parse_lora knows no other action; a new one must be handled above before it reaches users.
    raise AssertionError(f"unhandled /lora action {args.action!r}")


async def _ask_before_deleting(bot: SlackBot, ack: AsyncAck, name: str, requester: pb.Requester) -> None:
    async def owner_check() -> str:
        lora = await bot.daemon.get_lora(name, requester)
        return "" if same_person(lora.owner, requester) else _not_owner(name)

    refusal = await bot.within_ack(owner_check())
    if refusal:
        await ack(refusal)
        return
    question = blocks.delete_confirmation(name, requester.user)
    await ack(text=f"Delete {name}?", blocks=question)


def _not_owner(name: str) -> str:
    return f"Only the owner of {name} can delete it."


def _button_value(value: str) -> tuple[str, str]:
    owner, _, name = value.partition(":")
    return owner, name


async def delete_clicked(bot: SlackBot, requester: pb.Requester, value: str, respond: AsyncRespond) -> None:
    """Delete, from the question's buttons: only the user who asked may use them."""
    owner, name = _button_value(value)
    if requester.user != owner or not name:
        await bot.tell(requester, _not_owner(name))
        return
    try:
        reply = await bot.daemon.delete_lora(name, requester)
    except DaemonError as error:
        await _answer(bot, requester, respond, error.message)
        return
    picture = " and its source picture" if reply.image_deleted else ""
    await _answer(bot, requester, respond, f"{name}{picture} deleted.")


async def keep_clicked(bot: SlackBot, requester: pb.Requester, value: str, respond: AsyncRespond) -> None:
    """Keep: the question goes away and nothing else happens."""
    owner, name = _button_value(value)
    if requester.user != owner:
        await bot.tell(requester, _not_owner(name))
        return
    await _answer(bot, requester, respond, f"{name} stays.")


async def _answer(bot: SlackBot, requester: pb.Requester, respond: AsyncRespond, text: str) -> None:
    """Replace the ephemeral question with the outcome (a new ephemeral message should that fail)."""
    if respond.response_url:
        try:
            await respond(text=text, replace_original=True)
            return
        except (OSError, SlackApiError) as error:
            log.info("answering through the response_url failed: %s", error)
    await bot.tell(requester, text)


def _download_elsewhere(name: str, why: str) -> str:
    return f"{why} Get it with the command line instead: distillery lora {name} --download"


async def _start_download(bot: SlackBot, name: str, requester: pb.Requester) -> str:
    lora = await bot.daemon.get_lora(name, requester)
    limit = bot.settings.max_upload_bytes
    if lora.size_bytes > limit:
        return _download_elsewhere(
            name, f"{name}.safetensors is larger than the bot uploads ({limit // _MIB} MB)."
        )
    bot.spawn(_send_lora(bot, name, requester), requester)
    return f"Sending {name}.safetensors ({lora.size_bytes / 1e6:.1f} MB) to you in a direct message."


async def _send_lora(bot: SlackBot, name: str, requester: pb.Requester) -> None:
    try:
        data = await bot.daemon.download_lora(name, requester)
    except DaemonError as error:
        await bot.tell(requester, error.message)
        return
    filename = f"{name}.safetensors"
    if len(data) > bot.settings.max_upload_bytes:
        await bot.tell(requester, _download_elsewhere(name, f"{filename} is too large for the bot to upload."))
        return
    try:
        # Into the DM with the user: a private LoRA posted in a channel would be shared with everyone there.
        opened = await bot.client.conversations_open(users=requester.user)
        await bot.client.files_upload_v2(
            channel=str(opened["channel"]["id"]),
            file=data,
            filename=filename,
            title=filename,
            initial_comment=(
                f"{filename}: load it in AUTOMATIC1111 or ComfyUI and write {name} in the prompt to use it."
            ),
        )
    except SlackApiError as error:
        log.warning("uploading %s failed: %s", filename, error.response.get("error"))
        await bot.tell(requester, _download_elsewhere(name, f"Slack did not take {filename}."))
