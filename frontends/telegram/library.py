"""The commands about what the distillery holds: /info, /loras, /lora and /stats, and the delete confirmation.

Each is one daemon call and one reply written by ``frontends.render``; the bot's allow-lists apply as for
/distill. Deleting a LoRA asks first: the question replies to the /lora message, so its author is the one who
may press Delete or Keep (and the daemon deletes only its owner's LoRA).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from distillery.v1 import distillery_pb2 as pb
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters, Update
from telegram.error import TelegramError
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler, ContextTypes, filters

from frontends.client import DaemonError
from frontends.commands import LoraArgs, UsageError, parse_lora
from frontends.render import image_info_text, lora_text, loras_text, same_person, stats_text
from frontends.telegram.media import Refusal
from frontends.telegram.settings import UPLOAD_LIMIT
from frontends.telegram.trainer import requester

if TYPE_CHECKING:
    from frontends.telegram.bot import DistilleryBot

log = logging.getLogger(__name__)

INFO_USAGE = "Usage: reply /info to one of my generated pictures, or write /info <image name>."
NOT_LORA_OWNER = "Only the person who asked to delete this LoRA can answer."
# Telegram's longest text message; a long /loras list is cut there.
MESSAGE_LIMIT = 4096
_MB = 1024 * 1024


def fit(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """The text, cut at a line break to fit one Telegram message."""
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit - 2)
    return text[: cut if cut > 0 else limit - 2] + "\n…"


def delete_keyboard(name: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Delete", callback_data=f"lora-delete:{name}"),
                InlineKeyboardButton("Keep", callback_data=f"lora-keep:{name}"),
            ]
        ]
    )


def changed_text(args: LoraArgs) -> str:
    """The confirmation after an owner's change to a LoRA."""
    name = args.name
    if args.action == "makepublic":
        return f"{name} is public now: anyone here can use it with --lora {name}."
    if args.action == "makeprivate":
        return f"{name} is private now: only you can use it."
    if args.action == "showimage":
        return f"Others may now see the source picture of {name} while it is public."
    if args.action == "hideimage":
        return f"Only you can see the source picture of {name} now."
    if args.description:
        return f"The description of {name} is now: {args.description}"
    return f"{name} has no description now."


def too_big_text(lora: pb.Lora) -> str:
    """Why a LoRA file does not come through Telegram, and how to get it instead."""
    return (
        f"{lora.name}.safetensors is {lora.size_bytes / _MB:.0f} MB; Telegram lets bots send files of at most "
        f"{UPLOAD_LIMIT // _MB} MB. Fetch it on the distillery's machine instead: "
        f"distillery lora {lora.name} --download"
    )


class LoraCommands:
    """The handlers of the LoRA and image commands; they answer through the bot's paced replies."""

    def __init__(self, bot: DistilleryBot) -> None:
        self.bot = bot

    def handlers(self, messages: filters.BaseFilter) -> list[BaseHandler[Update, ContextTypes.DEFAULT_TYPE, None]]:
        return [
            CommandHandler("info", self.info, filters=messages),
            CommandHandler("loras", self.loras, filters=messages),
            CommandHandler("lora", self.lora, filters=messages),
            CommandHandler("stats", self.stats, filters=messages),
            CallbackQueryHandler(self.delete_button, pattern=r"^lora-(delete|keep):"),
        ]

    def _who(self, update: Update) -> tuple[pb.Requester, Message]:
        """The requester of an allowed user's command, and the command's message."""
        user, chat, message = self.bot.origin(update)
        self.bot.check_allowed(user, chat)
        return requester(user.id, chat.id), message

    async def info(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/info <image name>``, or /info as a reply to a generated image (its caption starts with the name)."""
        who, message = self._who(update)
        words = (message.text or "").split()[1:]
        replied = message.reply_to_message
        if words:
            name = words[0]
        elif (
            replied is not None
            and replied.caption
            and replied.from_user
            and replied.from_user.id == self.bot.bot_id
        ):
            name = replied.caption.split()[0]
        else:
            raise UsageError("Which picture?")
        info = await self.bot.trainer.image_info(name.lower(), who)
        await self.bot.reply(message, image_info_text(info))

    async def loras(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/loras: the user's LoRAs, then the public ones."""
        who, message = self._who(update)
        loras = await self.bot.trainer.list_loras(who, include_public=True)
        await self.bot.reply(message, fit(loras_text(loras, who)))

    async def stats(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/stats: the user's numbers."""
        who, message = self._who(update)
        await self.bot.reply(message, stats_text(await self.bot.trainer.user_stats(who)))

    async def lora(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/lora <name> [option]``: show a LoRA, or its owner changes, deletes or downloads it."""
        who, message = self._who(update)
        text = message.text or ""
        args = parse_lora(text.split(maxsplit=1)[1] if len(text.split(maxsplit=1)) > 1 else "")
        trainer = self.bot.trainer
        if args.action == "":
            await self.bot.reply(message, lora_text(await trainer.get_lora(args.name, who), who))
        elif args.action == "delete":
            await self._ask_to_delete(message, who, args.name)
        elif args.action == "download":
            await self._download(message, who, args.name)
        else:
            await trainer.update_lora(
                args.name,
                who,
                public={"makepublic": True, "makeprivate": False}.get(args.action),
                description=args.description if args.action == "description" else None,
                show_image={"showimage": True, "hideimage": False}.get(args.action),
            )
            await self.bot.reply(message, changed_text(args))

    async def _ask_to_delete(self, message: Message, who: pb.Requester, name: str) -> None:
        lora = await self.bot.trainer.get_lora(name, who)
        if not same_person(lora.owner, who):
            raise Refusal(f"Only the owner of {name} can delete it.")
        chat_id = message.chat.id
        question = f"Delete {name} and its source picture for good? Pictures made with it stay."
        reply = ReplyParameters(message.message_id, allow_sending_without_reply=True)
        await self.bot.pacer.call(
            chat_id,
            lambda: self.bot.application.bot.send_message(
                chat_id, question, reply_markup=delete_keyboard(name), reply_parameters=reply
            ),
        )
        self.bot.pacer.note_sent(chat_id)

    async def _download(self, message: Message, who: pb.Requester, name: str) -> None:
        lora = await self.bot.trainer.get_lora(name, who)
        if lora.size_bytes > UPLOAD_LIMIT:
            await self.bot.reply(message, too_big_text(lora))
            return
        data = await self.bot.trainer.download_lora(name, who)
        chat_id = message.chat.id
        send = functools.partial(
            self.bot.application.bot.send_document,
            chat_id,
            data,
            filename=f"{name}.safetensors",
            caption=f"{name}.safetensors - load it as a LoRA in AUTOMATIC1111 or ComfyUI.",
            reply_parameters=ReplyParameters(message.message_id, allow_sending_without_reply=True),
        )
        await self.bot.pacer.call(chat_id, send)
        self.bot.pacer.note_sent(chat_id)

    async def delete_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Delete or Keep under the question; only the author of the /lora --delete may answer it."""
        query = update.callback_query
        if query is None:
            return
        action, _, name = (query.data or "").partition(":")
        message = query.message if isinstance(query.message, Message) else None
        origin = message.reply_to_message if message is not None else None
        if origin is not None and origin.from_user is not None and origin.from_user.id != query.from_user.id:
            await query.answer(NOT_LORA_OWNER, show_alert=True)
            return
        if action == "lora-keep":
            text = f"Kept {name}."
        else:
            chat_id = message.chat.id if message is not None else ""
            try:
                deleted = await self.bot.trainer.delete_lora(name, requester(query.from_user.id, chat_id))
            except DaemonError as error:
                await query.answer(error.message[:200], show_alert=True)
                return
            text = f"Deleted {name}" + (" and its source picture." if deleted.image_deleted else ".")
        await query.answer()
        if message is not None:
            try:
                # Without reply_markup the edit removes the buttons: the question is answered.
                await self.bot.pacer.call(message.chat.id, lambda: query.edit_message_text(text))
            except TelegramError as error:
                log.info("could not edit the delete question for %s: %s", name, error)
