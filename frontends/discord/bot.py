"""The Discord bot's interactions: slash commands, the two message menus and the buttons, in either bot mode.

Every interaction is answered at once (Discord allows 3 s): a refusal or usage text right away, otherwise a
deferral, and the work runs in a task that edits the deferred answer when it is done. Long jobs then live in
a normal channel message that the frontend core keeps up to date with the bot token (``frontends.follow``).
The interaction id is the daemon's idempotency key, so a repeated delivery never starts a second job. Answers
about a user's own things are ephemeral: only they see them. Expected mistakes are answered where they happen;
anything else ends in ``report``, the one place that logs an unexpected failure and tells the user.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aiohttp
import grpc
import hikari
from distillery.v1 import distillery_pb2 as pb

from frontends.actions import DELETE_ACTION, KEEP_ACTION, answer_delete, lora_action, not_owner
from frontends.client import DaemonApi, DaemonClient, DaemonError
from frontends.commands import (
    DISTILL_USAGE,
    LORA_USAGE,
    SERVE_USAGE,
    UsageError,
    parse_distill,
    parse_lora,
    parse_serve,
)
from frontends.discord.commands import DISTILL_THIS
from frontends.discord.fetch import ImageRefused, attachment_image, download
from frontends.discord.platform import DiscordPlatform, clip, escape, parse_custom_id
from frontends.discord.settings import DiscordSettings
from frontends.follow import CANCEL_ACTION, Followers, preview_image
from frontends.live import Clock, Pacer, Sleep
from frontends.platform import Button, Look
from frontends.render import JobView, image_info_text, loras_text, stats_text

log = logging.getLogger(__name__)
T = TypeVar("T")

PLATFORM = "discord"
NOT_ALLOWED = "Sorry, this bot is not open to you here. Ask the people who run it to let you in."
NOT_OWNER = "Only the person who started this job can cancel it."
INTERNAL = "Something went wrong on my side; it has been logged. Please try again."
NO_IMAGE = "That message has no picture I can use (attach a PNG, JPEG or WebP)."
NO_IMAGE_NAME = "That message names no picture of the distillery."
CANCELLING = "Cancelling; the job's message will say when it has stopped."
INFO_HINT = 'Use "Image info" on a picture (right-click > Apps) for all its parameters.'
INFO_USAGE = "Usage: /info prompt:<image name>, e.g. 3f2a9c1d-1.png (each picture's comment starts with it)."
HELP = (
    "/distill image:<portrait> [class] [noflip] makes a LoRA of the person (or url:<link> instead of the image); "
    '"Distill this" (right-click a message > Apps) does it for a picture already posted.\n'
    "/serve, /lora, /loras, /info and /stats take one prompt holding the words and --options you would type "
    "after the command in the other chats:\n"
    f"{SERVE_USAGE}\n{LORA_USAGE}"
)
# Answers only the asker sees; the job messages themselves are public in the channel.
EPHEMERAL = hikari.MessageFlag.EPHEMERAL
_IMAGE_NAMES = (".png",)
# The largest file Discord takes anywhere (a boosted server); each channel's own limit is checked on upload.
MAX_LORA_FILE = 100 * 1024 * 1024

Builder = hikari.api.InteractionMessageBuilder | hikari.api.InteractionDeferredBuilder
Reply = Callable[[str], Coroutine[Any, Any, None]]


Interaction = hikari.CommandInteraction | hikari.ComponentInteraction


def requester_of(interaction: Interaction) -> pb.Requester:
    """Who asks from where: (platform, guild, user) owns jobs and LoRAs; the channel is where answers go."""
    return pb.Requester(
        platform=PLATFORM,
        workspace=str(interaction.guild_id or ""),
        user=str(interaction.user.id),
        chat=str(interaction.channel.id),
    )


def _option(interaction: hikari.CommandInteraction, name: str) -> Any:
    for option in interaction.options or ():
        if option.name == name:
            return option.value
    return None


class DiscordBot:
    """The interaction handlers over one REST client, the followed jobs, and the tasks doing the long work."""

    def __init__(
        self,
        settings: DiscordSettings,
        daemon: DaemonApi,
        rest: hikari.api.RESTClient,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.daemon = daemon
        self.rest = rest
        self.platform = DiscordPlatform(rest, settings.update_interval)
        self.pacer = Pacer(self.platform.interval, clock, sleep)
        self.followers = Followers(
            daemon,
            self.platform,
            self.pacer,
            platform_name=PLATFORM,
            result_image=preview_image(daemon),
            lora_file_limit=MAX_LORA_FILE,
            info_hint=INFO_HINT,
            report=self.report,
            clock=clock,
            sleep=sleep,
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None

    # -- life cycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Re-attach to the jobs a previous run left behind (in the background: the daemon may be down)."""
        self.spawn(self.followers.reattach())

    async def close(self) -> None:
        """Stop every task; the jobs go on in the daemon and the next start re-attaches to them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.followers.close()
        if self._session is not None:
            await self._session.close()

    def spawn(self, work: Coroutine[Any, Any, T], reply: Reply | None = None) -> asyncio.Task[T]:
        """Run work in a tracked task; an unexpected failure goes to ``report`` (and to the user, if known)."""
        task = asyncio.create_task(work)
        self._tasks.add(task)

        def done(finished: asyncio.Task[T]) -> None:
            self._tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                self.report(finished.exception() or RuntimeError(), None, reply)

        task.add_done_callback(done)
        return task

    def report(
        self, error: BaseException, requester: pb.Requester | None = None, reply: Reply | None = None
    ) -> None:
        """The central error handler: log what nobody expected, and tell the user that it failed."""
        log.error("unexpected failure: %s", type(error).__name__, exc_info=error)
        if reply is not None:
            task = asyncio.create_task(reply(INTERNAL))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session for attachment downloads, made on first use (inside the running loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False, timeout=aiohttp.ClientTimeout(total=60))
        return self._session

    def allowed(self, interaction: Interaction) -> bool:
        """The operator's allow-lists; an empty list admits everyone, and DMs pass the guild and channel lists."""
        s, guild = self.settings, interaction.guild_id
        requester = requester_of(interaction)
        if s.allowed_users and int(requester.user) not in s.allowed_users:
            return False
        if guild is None:
            return True
        if s.guilds and int(guild) not in s.guilds:
            return False
        return not (s.allowed_channels and int(interaction.channel.id) not in s.allowed_channels)

    # -- answering ------------------------------------------------------------------------------------------

    @staticmethod
    def say(interaction: Interaction, text: str) -> Builder:
        """An immediate answer only the asker sees."""
        if isinstance(interaction, hikari.ComponentInteraction):
            builder = interaction.build_response(hikari.ResponseType.MESSAGE_CREATE)
        else:
            builder = interaction.build_response()
        return (
            builder.set_content(clip(escape(text)))
            .set_flags(EPHEMERAL)
            .set_mentions_everyone(False)
            .set_user_mentions(False)
            .set_role_mentions(False)
        )

    def replier(self, interaction: Interaction) -> Reply:
        """Edits the deferred answer (within the interaction token's 15 minutes)."""

        async def reply(text: str) -> None:
            await self.rest.edit_interaction_response(
                interaction.application_id,
                interaction.token,
                clip(escape(text)),
                mentions_everyone=False,
                user_mentions=False,
                role_mentions=False,
            )

        return reply

    def later(
        self,
        interaction: Interaction,
        work: Callable[[Reply], Awaitable[str | None]],
    ) -> Builder:
        """Defer now (ephemeral) and edit the answer with what ``work`` returns, or the daemon's refusal."""
        reply = self.replier(interaction)

        async def run() -> None:
            try:
                text = await work(reply)
            except DaemonError as error:
                text = error.message
            except UsageError as error:
                text = str(error)
            if text:
                await reply(text)

        self.spawn(run(), reply)
        if isinstance(interaction, hikari.ComponentInteraction):
            deferred = interaction.build_deferred_response(hikari.ResponseType.DEFERRED_MESSAGE_CREATE)
        else:
            deferred = interaction.build_deferred_response()
        return deferred.set_flags(EPHEMERAL)

    # -- commands -------------------------------------------------------------------------------------------

    async def on_command(self, interaction: hikari.CommandInteraction) -> Builder:
        """Every slash command and message menu lands here."""
        self.platform.upload_limits[str(interaction.channel.id)] = interaction.attachment_size_limit
        if not self.allowed(interaction):
            return self.say(interaction, NOT_ALLOWED)
        name = interaction.command_name
        if interaction.command_type == hikari.CommandType.MESSAGE:
            message = (interaction.resolved.messages if interaction.resolved else {}).get(
                interaction.target_id or hikari.Snowflake(0)
            )
            if message is None:
                return self.say(interaction, NO_IMAGE)
            if name == DISTILL_THIS:
                return self.distill_message(interaction, message)
            return self.later(interaction, lambda _: self.image_info(message, requester_of(interaction)))
        prompt = str(_option(interaction, "prompt") or "").strip()
        if name == "distill":
            return self.distill_command(interaction)
        if name == "help" or prompt.lower() in ("help", "-h", "--help"):
            return self.say(interaction, HELP)
        handlers: dict[str, Callable[[str, pb.Requester], Awaitable[str | None]]] = {
            "serve": lambda words, who: self.serve(interaction, words, who),
            "lora": lambda words, who: self.lora(interaction, words, who),
            "loras": self._loras,
            "info": self._info,
            "stats": self._stats,
        }
        handler = handlers.get(name)
        if handler is None:
            return self.say(interaction, HELP)
        requester = requester_of(interaction)
        return self.later(interaction, lambda _: handler(prompt, requester))

    async def _loras(self, _: str, who: pb.Requester) -> str:
        return loras_text(await self.daemon.list_loras(who, include_public=True), who)

    async def _stats(self, _: str, who: pb.Requester) -> str:
        return stats_text(await self.daemon.user_stats(who))

    async def _info(self, words: str, who: pb.Requester) -> str:
        word = words.split()[0] if words.split() else ""
        if not word:
            return INFO_USAGE
        name = word if word.lower().endswith(".png") else f"{word}.png"
        return image_info_text(await self.daemon.image_info(name, who))

    async def image_info(self, message: hikari.Message, who: pb.Requester) -> str:
        """The "Image info" menu: the parameters of the distillery picture attached to the message."""
        names = [item.filename for item in message.attachments if item.filename.lower().endswith(_IMAGE_NAMES)]
        if not names:
            return NO_IMAGE_NAME
        return image_info_text(await self.daemon.image_info(names[0], who))

    # -- distill --------------------------------------------------------------------------------------------

    def distill_command(self, interaction: hikari.CommandInteraction) -> Builder:
        """/distill image:<attachment> | url:<link> [class] [noflip]."""
        image = _option(interaction, "image")
        url = str(_option(interaction, "url") or "").strip()
        words = " ".join(
            part
            for part in (
                url,
                f"--class {_option(interaction, 'class')}" if _option(interaction, "class") else "",
                "--noflip" if _option(interaction, "noflip") else "",
            )
            if part
        )
        attachment = None
        if image is not None and interaction.resolved is not None:
            attachment = interaction.resolved.attachments.get(hikari.Snowflake(image))
        try:
            args = parse_distill(words, need_url=attachment is None)
        except UsageError as error:
            return self.say(interaction, f"{error}\n{DISTILL_USAGE}")
        return self.later(
            interaction,
            lambda reply: self._distill(interaction, attachment, args.url, args.subject_class, args.no_flip),
        )

    def distill_message(self, interaction: hikari.CommandInteraction, message: hikari.Message) -> Builder:
        """The "Distill this" menu: the first picture attached to the message it is used on."""
        attachment = next((item for item in message.attachments if attachment_image(item)), None)
        if attachment is None:
            return self.say(interaction, NO_IMAGE)
        return self.later(interaction, lambda reply: self._distill(interaction, attachment, "", "", False))

    async def _distill(
        self,
        interaction: hikari.CommandInteraction,
        attachment: hikari.Attachment | None,
        url: str,
        subject_class: str,
        no_flip: bool,
    ) -> str:
        requester = requester_of(interaction)
        data = None
        if attachment is not None:
            try:
                # CDN links are signed and expire: the picture is fetched now, not when the job runs.
                data = await download(self.session, attachment, self.settings)
            except ImageRefused as error:
                return str(error)
        spec = DaemonClient.spec(
            requester,
            url=url,
            upload=data is not None,
            subject_class=subject_class,
            no_flip=no_flip,
            idempotency_key=f"discord:{interaction.id}",
        )
        reply = await self.daemon.submit(spec, data)
        job = reply.job
        if reply.duplicate and (self.followers.is_following(job.id) or job.client_state):
            return f"Already on it: {job.lora_name}."
        view = JobView()
        view.apply_job(job)
        view.queue_position = reply.queue_position
        place = await self.followers.post(job, view)
        return f"Distilling {job.lora_name}: {self._link(interaction, place.chat, place.message)}"

    @staticmethod
    def _link(interaction: Interaction, channel: str, message: str) -> str:
        guild = (
            str(interaction.guild_id) if interaction.guild_id and channel == str(interaction.channel.id) else "@me"
        )
        return f"https://discord.com/channels/{guild}/{channel}/{message}"

    # -- serve and lora -------------------------------------------------------------------------------------

    async def serve(self, interaction: hikari.CommandInteraction, words: str, who: pb.Requester) -> str:
        """/serve prompt:<prompt and --options>: the pictures follow in a job message like a /distill."""
        if not words:
            return SERVE_USAGE
        try:
            spec = parse_serve(words)
        except UsageError as error:
            return f"{error}\n{SERVE_USAGE}"
        stream = self.daemon.generate(spec, who, f"discord:{interaction.id}")
        accepted = await anext(aiter(stream), None)
        if accepted is None:
            raise DaemonError(grpc.StatusCode.UNAVAILABLE, "The trainer did not take the request; try again.")
        job = await self.daemon.get_job(accepted.job_id, who)
        if self.followers.is_following(job.id) or job.client_state:
            return "Already on it."
        view = JobView()
        view.apply_job(job)
        view.apply(accepted)
        view.generate = view.generate or spec
        place = await self.followers.post(job, view, events=stream)
        return f"Drawing: {self._link(interaction, place.chat, place.message)}"

    async def lora(self, interaction: hikari.CommandInteraction, words: str, who: pb.Requester) -> str | None:
        """/lora prompt:<name> [--action]: the answer's text, its Delete/Keep buttons, or the file."""
        if not words:
            return LORA_USAGE
        try:
            args = parse_lora(words)
        except UsageError as error:
            return f"{error}\n{LORA_USAGE}"
        answer = await lora_action(self.daemon, args, who, interaction.attachment_size_limit)
        if answer.file is not None:
            file = await answer.file()
            await self.rest.edit_interaction_response(
                interaction.application_id,
                interaction.token,
                clip(escape(file.caption)),
                attachment=hikari.Bytes(file.data, file.name),
                user_mentions=False,
            )
            return None
        await self.rest.edit_interaction_response(
            interaction.application_id,
            interaction.token,
            clip(escape(answer.text)),
            components=self._buttons(answer.buttons),
            user_mentions=False,
        )
        return None

    def _buttons(self, buttons: tuple[Button, ...]) -> list[hikari.api.ComponentBuilder]:
        return self.platform.components(Look("", buttons))

    # -- buttons --------------------------------------------------------------------------------------------

    async def on_component(self, interaction: hikari.ComponentInteraction) -> Builder:
        """Cancel under a job message; Delete and Keep under a /lora question. Only their owner's clicks count."""
        if not self.allowed(interaction):
            return self.say(interaction, NOT_ALLOWED)
        action, owner, value = parse_custom_id(interaction.custom_id)
        who = requester_of(interaction)
        if action == CANCEL_ACTION:
            if owner and owner != who.user:
                return self.say(interaction, NOT_OWNER)
            return self.later(interaction, lambda _: self._cancel(value, who))
        if action in (DELETE_ACTION, KEEP_ACTION):
            if owner != who.user:
                return self.say(interaction, not_owner(value))
            return self.later(interaction, lambda _: answer_delete(self.daemon, action, value, who))
        return self.say(interaction, "That button no longer does anything.")

    async def _cancel(self, job_id: str, who: pb.Requester) -> str:
        try:
            await self.daemon.cancel(job_id, who)
        except DaemonError as error:
            # The daemon answers NOT_FOUND for someone else's job, exactly as for a job that does not exist.
            return NOT_OWNER if error.code == grpc.StatusCode.NOT_FOUND else error.message
        return CANCELLING
