"""The Telegram bot: messages become daemon calls, job events become edits of one progress message.

Three ways to ask for a LoRA reach one path (``_distill``): ``/distill <url>``; a photo or image file with the
caption ``/distill`` (Telegram does not treat captions as commands, so a MessageHandler matches them); and
``/distill`` as a reply to a photo. A handler only validates, downloads, submits and sends the confirmation; the
job is followed by a task of its own, so a multi-minute job never holds a handler. Expected mistakes raise
UsageError, Refusal or DaemonError and one error handler turns each into a reply.

``/serve <prompt> [options]`` takes the same road: the Generate stream's first event (ACCEPTED) names the job,
the progress message follows it (reading the rest of that stream first), and a finished generation's images go
to the chat captioned with their names; ``/upscale <picture name>`` (the hires pass over a picture made before)
goes the same way. /info, /loras, /lora, /stats and /models live in ``library``.

Redelivered updates: the idempotency key is the chat and message id, so the daemon returns the first job
(``duplicate``); a duplicate that already has a progress message (its ClientState) is left alone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
from distillery.v1 import distillery_pb2 as pb
from telegram import Chat, Message, Update, User
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ExtBot,
    JobQueue,
    MessageHandler,
    filters,
)

from frontends.client import DaemonApi, DaemonClient, DaemonError
from frontends.clientstate import ClientState
from frontends.commands import (
    DISTILL_USAGE,
    LORA_USAGE,
    SERVE_USAGE,
    UPSCALE_USAGE,
    DistillArgs,
    UsageError,
    parse_distill,
    parse_serve,
    parse_upscale,
)
from frontends.follow import Followers, ResultImage, close_stream, generation_accepted, preview_image
from frontends.live import Clock, Pacer, Sleep
from frontends.platform import Look, Place, PlatformError
from frontends.render import JobView, jobs_text
from frontends.telegram.library import INFO_USAGE, LoraCommands
from frontends.telegram.media import ImageRef, Refusal, download, image_of
from frontends.telegram.platform import PLATFORM, TelegramPlatform, requester
from frontends.telegram.settings import UPLOAD_LIMIT, Settings
from frontends.telegram.webhook import WebhookServer

log = logging.getLogger(__name__)
T = TypeVar("T")

# What ApplicationBuilder().build() makes, spelled out so that application.bot is typed.
TelegramApp = Application[
    ExtBot[None],
    ContextTypes.DEFAULT_TYPE,
    dict[Any, Any],
    dict[Any, Any],
    dict[Any, Any],
    JobQueue[ContextTypes.DEFAULT_TYPE],
]

HELP_TEXT = (
    "I distill a LoRA of a person from one portrait, and generate pictures with it.\n\n"
    f"{DISTILL_USAGE}\n\n"
    f"{SERVE_USAGE}\n\n"
    f"{UPSCALE_USAGE}\n\n"
    "/info - reply it to one of my pictures (or /info <image name>) for how it was made\n"
    "/loras - your LoRAs and the public ones\n"
    f"{LORA_USAGE}\n\n"
    "/jobs - your jobs and their state\n"
    "/stats - your numbers\n"
    "/models - the models /serve --model may name\n"
    "/help - this text\n\n"
    "While a job runs, its message shows the progress; the Cancel button under it stops the job."
)
NOT_OWNER = "Only the person who started this job can cancel it."
UNEXPECTED = "Something went wrong on my side; please try again."
FETCHING = "Fetching your picture..."
STARTING = "Sending your request to the generator..."
# Seconds of download and submit after which the user gets a placeholder reply rather than silence.
PLACEHOLDER_AFTER = 0.8
# A caption that starts with the command, optionally addressed to a bot (groups): "/distill@mybot --noflip".
CAPTION_COMMAND = re.compile(r"^/distill(?:@(\w+))?(?:\s+(.*))?$", re.DOTALL | re.IGNORECASE)
UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]
# Redelivered updates this process has already taken; the daemon's idempotency covers the rest.
_RECENT_KEYS = 10_000


def usage_for(update: object) -> str:
    """The usage text of the command an update carries (that of /distill when it is none of the others)."""
    message = update.effective_message if isinstance(update, Update) else None
    text = (message.text or message.caption or "") if message is not None else ""
    command = text.split(maxsplit=1)[0].split("@")[0].lower() if text.strip() else ""
    usages = {"/serve": SERVE_USAGE, "/upscale": UPSCALE_USAGE, "/lora": LORA_USAGE, "/info": INFO_USAGE}
    return usages.get(command, DISTILL_USAGE)


def command_words(text: str) -> str:
    """What follows ``/distill`` (or ``/distill@bot``) in a message."""
    parts = text.split(maxsplit=1)
    return parts[1] if len(parts) > 1 else ""


class DistilleryBot:
    """Handlers, job followers and the process lifecycle (polling or webhook) of one bot."""

    def __init__(
        self,
        settings: Settings,
        daemon: DaemonApi,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        preview: ResultImage | None = None,
    ) -> None:
        """``preview`` is the picture sent with a new LoRA (by default the daemon's first picture with it)."""
        self.settings, self.daemon, self.clock, self.sleep = settings, daemon, clock, sleep
        self.library = LoraCommands(self)
        self.application: TelegramApp = self._build_application()
        self.platform = TelegramPlatform(
            self.application.bot, settings.private_edit_interval, settings.group_edit_interval
        )
        self.pacer = Pacer(self.platform.interval, clock, sleep)
        self._preview = preview or preview_image(daemon)
        self.followers: Followers | None = None
        self.webhook: WebhookServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._recent_keys: OrderedDict[str, None] = OrderedDict()
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------------------------

    def _build_application(self) -> TelegramApp:
        builder = (
            ApplicationBuilder()
            .token(self.settings.token)
            .base_url(self.settings.api_url)
            .base_file_url(self.settings.api_file_url)
            # Handlers wait on downloads and the daemon; one slow chat must not hold up the others.
            .concurrent_updates(True)
        )
        if self.settings.webhook:
            builder = builder.updater(None)  # updates come from our own webhook server instead
        application: TelegramApp = builder.build()
        messages = filters.UpdateType.MESSAGE  # not edited messages: editing a /distill must not start a job
        application.add_handler(CommandHandler(["start", "help"], self.help, filters=messages))
        application.add_handler(CommandHandler("distill", self.distill_command, filters=messages))
        application.add_handler(
            MessageHandler(
                messages & filters.ATTACHMENT & filters.CaptionRegex(r"(?i)^/distill(@\w+)?(\s|$)"),
                self.distill_caption,
            )
        )
        application.add_handler(CommandHandler("jobs", self.jobs, filters=messages))
        application.add_handler(CommandHandler("serve", self.serve, filters=messages))
        application.add_handler(CommandHandler("upscale", self.upscale, filters=messages))
        for handler in self.library.handlers(messages):
            application.add_handler(handler)
        application.add_handler(CallbackQueryHandler(self.cancel_button, pattern=r"^cancel:"))
        application.add_error_handler(self.on_error)
        return application

    @property
    def bot_id(self) -> int:
        return int(self.application.bot.id)

    async def start(self) -> None:
        """Connect to Telegram, start taking updates, and re-attach to unfinished jobs in the background."""
        application = self.application
        await application.initialize()  # getMe: the bot's id and @username
        self._started = True
        await application.start()
        if self.settings.webhook:
            self.webhook = WebhookServer(
                application,
                secret=self.settings.webhook_secret,
                path=self.settings.webhook_path,
                host=self.settings.webhook_listen,
                port=self.settings.webhook_port,
            )
            await self.webhook.start()
            await application.bot.set_webhook(
                self.settings.webhook_url, secret_token=self.settings.webhook_secret, allowed_updates=UPDATES
            )
        else:
            assert application.updater is not None
            await application.updater.start_polling(
                timeout=self.settings.poll_timeout, allowed_updates=UPDATES, drop_pending_updates=False
            )
        log.info("bot @%s is up (%s)", application.bot.username, "webhook" if self.webhook else "polling")
        self._spawn(self.jobs_followed.reattach(), "reattach")

    @property
    def jobs_followed(self) -> Followers:
        """The jobs this bot follows; made once the bot knows its own id (each Telegram bot follows its own)."""
        if self.followers is None:
            self.followers = Followers(
                self.daemon,
                self.platform,
                self.pacer,
                platform_name=PLATFORM,
                bot=str(self.bot_id),
                result_image=self._preview,
                lora_file_limit=UPLOAD_LIMIT if self.settings.send_lora_file else 0,
                offline_after=self.settings.offline_notice_after,
                clock=self.clock,
                sleep=self.sleep,
            )
        return self.followers

    async def stop(self) -> None:
        """Stop taking updates and following jobs; jobs keep their notes, so the next start picks them up."""
        if not self._started:
            return
        self._started = False
        application = self.application
        if application.updater is not None and application.updater.running:
            await application.updater.stop()
        if self.webhook is not None:
            # The webhook stays registered: Telegram keeps updates for us until we are back.
            await self.webhook.stop()
        if application.running:
            await application.stop()  # lets handlers in progress finish (and start their followers)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.followers is not None:
            await self.followers.close()
        await application.shutdown()

    def _spawn(self, coroutine: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- handlers -------------------------------------------------------------------------------------------

    async def help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/start and /help."""
        if update.effective_message is not None:
            await self.reply(update.effective_message, HELP_TEXT)

    async def jobs(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/jobs: the user's jobs, newest first."""
        user, chat, message = self.origin(update)
        self.check_allowed(user, chat)
        jobs = await self.daemon.list_jobs(requester(user.id, chat.id), limit=15)
        await self.reply(message, jobs_text(jobs))

    async def distill_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/distill <url> [flags]``, or ``/distill [flags]`` as a reply to a photo."""
        _, _, message = self.origin(update)
        replied = message.reply_to_message
        source = image_of(replied)
        if replied is not None and source is None and not command_words(message.text or ""):
            raise Refusal("The message you replied to has no picture; reply /distill to a photo.")
        await self._distill(update, context, command_words(message.text or ""), source)

    async def distill_caption(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A photo or file whose caption is ``/distill [flags]``."""
        _, _, message = self.origin(update)
        match = CAPTION_COMMAND.match(message.caption or "")
        if match is None:
            return
        mention = match.group(1)
        if mention and mention.lower() != (context.bot.username or "").lower():
            return  # "/distill@otherbot": a command for another bot in the same group
        source = image_of(message)
        if source is None:
            raise Refusal("Send the portrait as a photo or as an image file.")
        await self._distill(update, context, match.group(2) or "", source)

    async def _distill(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, words: str, source: ImageRef | None
    ) -> None:
        user, chat, message = self.origin(update)
        self.check_allowed(user, chat)
        args = parse_distill(words, need_url=source is None)
        key = self._first_delivery(chat, message)
        if key is None:
            return
        who = requester(user.id, chat.id)
        work = asyncio.ensure_future(self._fetch_and_submit(context.bot, who, args, source, key))
        answered = await self._answer_soon(message, work, FETCHING)
        if answered is None:
            return
        reply, placeholder = answered
        job = reply.job
        view = JobView(
            job_id=job.id,
            lora_name=job.lora_name,
            state=job.state or pb.JOB_STATE_QUEUED,
            stage=job.stage or pb.STAGE_QUEUED,
            queue_position=reply.queue_position,
        )
        await self._confirm_and_follow(chat, message, who, job, view, placeholder, key)

    async def serve(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/serve <prompt> [options]``: generate images, follow the job like a distillation, send the images."""
        _, _, message = self.origin(update)
        await self._generate(update, parse_serve, command_words(message.text or ""))

    async def upscale(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """``/upscale <picture name> [options]``, or /upscale as a reply to one of the bot's pictures (its caption
        starts with the name): the hires pass over a picture made before, followed as /serve."""
        _, _, message = self.origin(update)
        replied = message.reply_to_message
        name = ""
        if replied is not None and replied.caption and replied.from_user and replied.from_user.id == self.bot_id:
            name = replied.caption.split()[0]
        parse = functools.partial(parse_upscale, replied_to=name)
        await self._generate(update, parse, command_words(message.text or ""))

    async def _generate(self, update: Update, parse: Callable[[str], pb.GenerateSpec], words: str) -> None:
        user, chat, message = self.origin(update)
        self.check_allowed(user, chat)
        spec = parse(words)
        key = self._first_delivery(chat, message)
        if key is None:
            return
        who = requester(user.id, chat.id)
        events = self.daemon.generate(spec, who, key)
        work = asyncio.ensure_future(generation_accepted(self.daemon, events, who))
        answered = await self._answer_soon(message, work, STARTING)
        if answered is None:
            await close_stream(events)
            return
        (accepted, job), placeholder = answered
        view = JobView(job_id=job.id, kind=pb.JOB_KIND_GENERATE, generate=spec)
        view.apply(accepted)
        if not await self._confirm_and_follow(chat, message, who, job, view, placeholder, key, events):
            await close_stream(events)

    def _first_delivery(self, chat: Chat, message: Message) -> str | None:
        """A command's idempotency key (chat and message id), or None when this process already took it."""
        key = f"tg:{chat.id}:{message.message_id}"
        if key in self._recent_keys:
            log.info("update for %s delivered again while handled here; ignored", key)
            return None
        self._recent_keys[key] = None
        while len(self._recent_keys) > _RECENT_KEYS:
            self._recent_keys.popitem(last=False)
        return key

    async def _answer_soon(
        self, message: Message, work: asyncio.Future[T], waiting: str
    ) -> tuple[T, Place | None] | None:
        """Await ``work``, replying ``waiting`` when it takes long; None when its refusal went into that reply."""
        placeholder: Place | None = None
        try:
            # Fetching a slow link or a big photo can take seconds: answer within one anyway.
            done, _ = await asyncio.wait({work}, timeout=PLACEHOLDER_AFTER)
            if not done:
                placeholder = await self.reply(message, waiting)
            return await work, placeholder
        except (Refusal, DaemonError) as error:
            if placeholder is None:
                raise  # the error handler replies
            text = error.message if isinstance(error, DaemonError) else str(error)
            await self._edit_now(placeholder, text)
            log.info("refused: %s", text)
            return None
        finally:
            work.cancel()  # only does something when this handler itself is cancelled (the bot is stopping)

    async def _confirm_and_follow(
        self,
        chat: Chat,
        message: Message,
        who: pb.Requester,
        job: pb.Job,
        view: JobView,
        placeholder: Place | None,
        key: str,
        events: AsyncIterator[pb.JobEvent] | None = None,
    ) -> bool:
        """Show the progress message (or say a redelivered command is in hand) and follow the job."""
        if ClientState.decode(job.client_state) is not None:
            log.info("job %s: the update for %s came again; it already has its message", job.id, key)
            if placeholder is not None:
                await self._edit_now(placeholder, "Already on it: see my first answer to this message.")
            return False
        # The confirmation answers the command, so its author is the job's owner (the Cancel button checks).
        await self.jobs_followed.post(
            job, view, reply_to=str(message.message_id), placeholder=placeholder, events=events
        )
        log.info("job %s (%s): accepted for user %s in chat %s", job.id, job.lora_name, who.user, chat.id)
        return True

    async def _fetch_and_submit(
        self, bot: ExtBot[None], who: pb.Requester, args: DistillArgs, source: ImageRef | None, key: str
    ) -> pb.SubmitReply:
        """Download the picture from Telegram (when the message has one) and submit the job."""
        image = await download(bot, source) if source is not None else None
        spec = DaemonClient.spec(
            who,
            url=args.url,
            upload=image is not None,
            subject_class=args.subject_class,
            no_flip=args.no_flip,
            idempotency_key=key,
        )
        return await self.daemon.submit(spec, image)

    async def _edit_now(self, place: Place, text: str) -> None:
        """Edit one of the bot's own messages at the chat's next slot (placeholders, not progress)."""
        await self.pacer.call(place.chat, lambda: self.platform.edit(place, Look(text)), paced=True)

    async def cancel_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The Cancel button: only the job's owner may press it (the daemon checks too)."""
        query = update.callback_query
        if query is None:
            return
        job_id = (query.data or "").removeprefix("cancel:")
        message = query.message if isinstance(query.message, Message) else None
        # The progress message replies to the /distill message, so its author is the owner.
        origin = message.reply_to_message if message is not None else None
        if origin is not None and origin.from_user is not None and origin.from_user.id != query.from_user.id:
            await query.answer(NOT_OWNER, show_alert=True)
            return
        chat_id = message.chat.id if message is not None else ""
        try:
            await self.daemon.cancel(job_id, requester(query.from_user.id, chat_id))
        except DaemonError as error:
            # The daemon answers NOT_FOUND for another user's job, exactly as for a missing one.
            text = NOT_OWNER if error.code == grpc.StatusCode.NOT_FOUND else error.message
            await query.answer(text[:200], show_alert=True)
            return
        await query.answer("Cancelling...")

    # -- errors ---------------------------------------------------------------------------------------------

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The one place errors become replies: usage, refusals and daemon errors say what went wrong."""
        error = context.error
        if isinstance(error, UsageError):
            text = f"{error}\n\n{usage_for(update)}"
        elif isinstance(error, (Refusal, DaemonError)):
            text = error.message if isinstance(error, DaemonError) else str(error)
            log.info("refused: %s", text)
        else:
            log.error("unexpected error while handling an update", exc_info=error)
            text = UNEXPECTED
        if not isinstance(update, Update):
            return
        try:
            if update.callback_query is not None:
                await update.callback_query.answer(text[:200], show_alert=True)
            elif update.effective_message is not None:
                await self.reply(update.effective_message, text)
        except (PlatformError, TelegramError) as send_error:
            log.warning("could not tell the chat about an error: %s", send_error)

    # -- helpers --------------------------------------------------------------------------------------------

    async def reply(self, message: Message, look: Look | str) -> Place:
        """Answer a message as a reply (quoted in groups, so it is clear whom the bot answers), paced."""
        chat = str(message.chat.id)
        shown = Look(look) if isinstance(look, str) else look
        sent = await self.pacer.call(chat, lambda: self.platform.send(chat, shown, str(message.message_id)))
        self.pacer.note_sent(chat)
        return sent

    @staticmethod
    def origin(update: Update) -> tuple[User, Chat, Message]:
        user, chat, message = update.effective_user, update.effective_chat, update.effective_message
        if user is None or chat is None or message is None:
            raise Refusal("I can only take this from a person in a chat.")
        return user, chat, message

    def check_allowed(self, user: User, chat: Chat) -> None:
        if not self.settings.allows(user.id, chat.id):
            raise Refusal(
                "You are not allowed to use this bot. Ask its operator to add your "
                f"user id {user.id} (or this chat, {chat.id}) to the allow-list."
            )
