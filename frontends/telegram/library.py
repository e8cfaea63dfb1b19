"""The commands about what the distillery holds: /info, /loras, /lora, /stats and /models, and the delete
confirmation.

Each is one daemon call and one reply written by ``frontends.render``; the bot's allow-lists apply as for
/distill. Deleting a LoRA asks first: the question replies to the /lora message, so its author is the one who
may press Delete or Keep (and the daemon deletes only its owner's LoRA).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from distillery.v1 import distillery_pb2 as pb
from telegram import Message, Update
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler, ContextTypes, filters

from frontends.actions import answer_delete, lora_action
from frontends.client import DaemonError
from frontends.commands import UsageError, parse_image_name, parse_lora
from frontends.platform import Look, Place, PlatformError
from frontends.render import image_info_text, loras_text, models_text, stats_text
from frontends.telegram.platform import requester
from frontends.telegram.settings import UPLOAD_LIMIT

if TYPE_CHECKING:
    from frontends.telegram.bot import DistilleryBot

log = logging.getLogger(__name__)

INFO_USAGE = "Usage: reply /info to one of my generated pictures, or write /info <image name>."
NOT_LORA_OWNER = "Only the person who asked to delete this LoRA can answer."
# Telegram's longest text message; a long /loras list is cut there.
MESSAGE_LIMIT = 4096


def fit(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """The text, cut at a line break to fit one Telegram message."""
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit - 2)
    return text[: cut if cut > 0 else limit - 2] + "\n…"


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
            CommandHandler("models", self.models, filters=messages),
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
        words = (message.text or "").partition(" ")[2]
        replied = message.reply_to_message
        if words.strip():
            name = parse_image_name(words)
        elif (
            replied is not None
            and replied.caption
            and replied.from_user
            and replied.from_user.id == self.bot.bot_id
        ):
            name = parse_image_name(replied.caption.split()[0])
        else:
            raise UsageError("Which picture?")
        info = await self.bot.daemon.image_info(name, who)
        await self.bot.reply(message, image_info_text(info))

    async def loras(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/loras: the user's LoRAs, then the public ones."""
        who, message = self._who(update)
        loras = await self.bot.daemon.list_loras(who, include_public=True)
        await self.bot.reply(message, fit(loras_text(loras, who)))

    async def stats(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/stats: the user's numbers."""
        who, message = self._who(update)
        await self.bot.reply(message, stats_text(await self.bot.daemon.user_stats(who)))

    async def models(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/models: the models /serve --model may name."""
        _, message = self._who(update)
        await self.bot.reply(message, models_text(await self.bot.daemon.status()))

    async def lora(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/lora <name> [option]``: show a LoRA, or its owner changes, deletes or downloads it."""
        who, message = self._who(update)
        text = message.text or ""
        args = parse_lora(text.split(maxsplit=1)[1] if len(text.split(maxsplit=1)) > 1 else "")
        answer = await lora_action(self.bot.daemon, args, who, UPLOAD_LIMIT)
        if answer.text:
            await self.bot.reply(message, Look(answer.text, answer.buttons))
        if answer.file is not None:
            attachment = await answer.file()
            chat = str(message.chat.id)
            place = Place(chat, str(message.message_id))
            await self.bot.pacer.call(chat, lambda: self.bot.platform.upload(place, [attachment]))
            self.bot.pacer.note_sent(chat)

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
        chat_id = message.chat.id if message is not None else ""
        try:
            text = await answer_delete(self.bot.daemon, action, name, requester(query.from_user.id, chat_id))
        except DaemonError as error:
            await query.answer(error.message[:200], show_alert=True)
            return
        await query.answer()
        if message is not None:
            try:
                # The edit has no buttons, so it removes them: the question is answered.
                await self.bot.pacer.call(
                    str(message.chat.id),
                    lambda: self.bot.platform.edit(
                        Place(str(message.chat.id), str(message.message_id)), Look(text)
                    ),
                )
            except PlatformError as error:
                log.info("could not edit the delete question for %s: %s", name, error)
