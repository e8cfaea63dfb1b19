"""The Discord bot's interactions: slash commands, the two message menus and the buttons, in either bot mode.

Every interaction is answered at once (Discord allows 3 s): a refusal or usage text right away, otherwise a
deferral, and the work runs in a task that edits the deferred answer when it is done. Long jobs then live in a
normal channel message that the frontend core keeps up to date with the bot token (``frontends.follow``). The
interaction id is the daemon's idempotency key, so a repeated delivery never starts a second job. Answers are
ephemeral: only the asker sees them. Expected mistakes are answered where they happen; anything else ends in
``report``, the one place that logs an unexpected failure (and the user reads that something went wrong).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import aiohttp
import grpc
import hikari
from distillery.v1 import distillery_pb2 as pb

from frontends import commands as grammar
from frontends.actions import DELETE_ACTION, KEEP_ACTION, answer_delete, lora_action, not_owner
from frontends.client import DaemonApi, DaemonClient, DaemonError
from frontends.commands import SERVE_USAGE, UPSCALE_USAGE, LoraArgs, UsageError
from frontends.discord.commands import DISTILL_THIS, UPSCALE_THIS
from frontends.discord.fetch import ImageRefused, attachment_image, download
from frontends.discord.platform import DiscordPlatform, clip, escape, parse_custom_id
from frontends.discord.settings import DiscordSettings
from frontends.follow import CANCEL_ACTION, Followers, close_stream, generation_accepted, preview_image
from frontends.live import Clock, Pacer, Sleep
from frontends.platform import Attachment, Button, Look
from frontends.render import JobView, image_info_text, loras_text, models_text, stats_text

log = logging.getLogger(__name__)

PLATFORM = "discord"
NOT_ALLOWED = "Sorry, this bot is not open to you here. Ask the people who run it to let you in."
NOT_OWNER = "Only the person who started this job can cancel it."
INTERNAL = "Something went wrong on my side; it has been logged. Please try again."
NO_IMAGE = "That message has no picture I can use (attach a PNG, JPEG or WebP)."
NO_IMAGE_NAME = "That message names no picture of the distillery."
CANCELLING = "Cancelling; the job's message will say when it has stopped."
INFO_HINT = 'Use "Image info" on a picture (right-click > Apps) for all its parameters.'
INFO_USAGE = "Usage: /info prompt:<picture name>, e.g. 3f2a9c1d-1.png (each picture's comment starts with it)."
HELP = (
    "/distill image:<portrait> [class] [noflip] makes a LoRA of the person (or url:<link> instead of the image); "
    '"Distill this" (right-click a message > Apps) does it for a picture already posted.\n'
    "/serve, /upscale, /lora, /loras, /info, /stats and /models take one prompt option holding the words and "
    f"--options, for example /serve prompt: a cat --n 2.\n{SERVE_USAGE}\n"
    "/upscale prompt: <picture name> [--power=1.5..2] [--upscalemethod latent|lanczos] makes a /serve picture "
    f"larger and draws its details again.\n{grammar.LORA_USAGE}"
)
DISTILL_USAGE = (
    'Usage: /distill image:<portrait> [class] [noflip], or url:<link> instead of the image; "Distill this" on a '
    "posted picture (right-click > Apps). class says who is in the picture when the guess would be wrong; "
    "noflip turns off mirror augmentation (for off-centre or asymmetric subjects)."
)
EPHEMERAL = hikari.MessageFlag.EPHEMERAL
# The largest file Discord takes anywhere (a boosted server); each channel's own limit is applied on upload.
MAX_LORA_FILE = 100 * 1024 * 1024

Builder = hikari.api.InteractionMessageBuilder | hikari.api.InteractionDeferredBuilder
Interaction = hikari.CommandInteraction | hikari.ComponentInteraction


def requester_of(interaction: Interaction) -> pb.Requester:
    """Who asks from where: (platform, guild, user) owns jobs and LoRAs; the channel is where answers go."""
    guild, user, channel = interaction.guild_id or "", interaction.user.id, interaction.channel.id
    return pb.Requester(platform=PLATFORM, workspace=str(guild), user=str(user), chat=str(channel))


def picture_name(message: hikari.Message) -> str | None:
    """The name of the distillery picture attached to ``message`` (it keeps its name as the file's), if any."""
    for item in message.attachments:
        if not item.filename.lower().endswith(".png"):
            continue
        try:
            return grammar.parse_image_name(item.filename)
        except UsageError:
            continue
    return None


def _option(interaction: hikari.CommandInteraction, name: str) -> Any:
    return next((option.value for option in interaction.options or () if option.name == name), None)


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
        self.settings, self.daemon, self.rest = settings, daemon, rest
        self.platform = DiscordPlatform(rest, settings.update_interval)
        self.followers = Followers(
            daemon,
            self.platform,
            Pacer(self.platform.interval, clock, sleep),
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

    async def start(self) -> None:
        """Re-attach to the jobs a previous run left behind (in the background: the daemon may be down)."""
        self._spawn(self.followers.reattach())

    async def close(self) -> None:
        """Stop every task; the jobs go on in the daemon and the next start re-attaches to them."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.followers.close()
        if self._session is not None:
            await self._session.close()

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def report(self, error: BaseException, requester: pb.Requester | None = None) -> None:
        """The central error handler: log what nobody expected; a job's owner also reads it in their DMs (an
        interaction's asker reads it in the answer instead, see ``later``)."""
        log.error("unexpected failure: %s", type(error).__name__, exc_info=error)
        if requester is not None and requester.user.isdigit():
            self._spawn(self._tell(int(requester.user), INTERNAL))

    async def _tell(self, user: int, text: str) -> None:
        try:
            dm = await self.rest.create_dm_channel(user)
            await self.rest.create_message(dm, escape(text), user_mentions=False, role_mentions=False)
        except (hikari.HTTPError, aiohttp.ClientError, OSError) as error:
            log.warning("could not tell user %d that something failed: %s", user, error)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session for attachment downloads, made on first use (inside the running loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False, timeout=aiohttp.ClientTimeout(total=60))
        return self._session

    def allowed(self, interaction: Interaction) -> bool:
        """The operator's allow-lists; an empty list admits everyone, and DMs pass the guild and channel lists."""
        s, guild = self.settings, interaction.guild_id
        if s.allowed_users and int(interaction.user.id) not in s.allowed_users:
            return False
        if guild is None:
            return True
        in_channel = not s.allowed_channels or int(interaction.channel.id) in s.allowed_channels
        return (not s.guilds or int(guild) in s.guilds) and in_channel

    # -- answering ------------------------------------------------------------------------------------------

    @staticmethod
    def say(interaction: Interaction, text: str) -> Builder:
        """An immediate answer only the asker sees, that can mention nobody."""
        if isinstance(interaction, hikari.ComponentInteraction):
            builder = interaction.build_response(hikari.ResponseType.MESSAGE_CREATE)
        else:
            builder = interaction.build_response()
        builder.set_content(clip(escape(text))).set_flags(EPHEMERAL).set_mentions_everyone(False)
        return builder.set_user_mentions(False).set_role_mentions(False)

    async def answer(
        self, interaction: Interaction, text: str, buttons: tuple[Button, ...] = (), file: Attachment | None = None
    ) -> None:
        """Edit the deferred answer (the interaction token allows that for 15 minutes)."""
        await self.rest.edit_interaction_response(
            interaction.application_id,
            interaction.token,
            clip(escape(text)),
            components=self.platform.components(Look("", buttons)),
            attachment=hikari.Bytes(file.data, file.name) if file is not None else hikari.UNDEFINED,
            mentions_everyone=False,
            user_mentions=False,
            role_mentions=False,
        )

    def later(self, interaction: Interaction, work: Awaitable[str | None]) -> Builder:
        """Defer now and edit the answer with what ``work`` returns, the daemon's refusal, or an apology."""

        async def run() -> None:
            try:
                text = await work
            except DaemonError as error:
                text = error.message
            except Exception as error:
                self.report(error)
                text = INTERNAL
            if text:
                await self.answer(interaction, text)

        self._spawn(run())
        if isinstance(interaction, hikari.ComponentInteraction):
            deferred = interaction.build_deferred_response(hikari.ResponseType.DEFERRED_MESSAGE_CREATE)
        else:
            deferred = interaction.build_deferred_response()
        return deferred.set_flags(EPHEMERAL)

    @staticmethod
    def _link(interaction: Interaction, channel: str, message: str) -> str:
        here = interaction.guild_id and channel == str(interaction.channel.id)
        return f"https://discord.com/channels/{interaction.guild_id if here else '@me'}/{channel}/{message}"

    # -- commands and menus ---------------------------------------------------------------------------------

    async def on_command(self, interaction: hikari.CommandInteraction) -> Builder:
        """Every slash command and message menu lands here."""
        self.platform.upload_limits[str(interaction.channel.id)] = interaction.attachment_size_limit
        if not self.allowed(interaction):
            return self.say(interaction, NOT_ALLOWED)
        name, who = interaction.command_name, requester_of(interaction)
        if interaction.command_type == hikari.CommandType.MESSAGE:
            messages = interaction.resolved.messages if interaction.resolved else {}
            message = messages.get(interaction.target_id or hikari.Snowflake(0))
            if message is None:
                return self.say(interaction, NO_IMAGE)
            if name == UPSCALE_THIS:
                picture = picture_name(message)
                if picture is None:
                    return self.say(interaction, NO_IMAGE_NAME)
                spec = grammar.parse_upscale("", replied_to=picture)
                return self.later(interaction, self.serve(interaction, spec, who))
            if name != DISTILL_THIS:
                return self.later(interaction, self.image_info(message, who))
            image = next((item for item in message.attachments if attachment_image(item)), None)
            if image is None:
                return self.say(interaction, NO_IMAGE)
            return self.later(interaction, self.distill(interaction, image, "", "", False))
        if name == "distill":
            return self.distill_command(interaction)
        prompt = str(_option(interaction, "prompt") or "").strip()
        if name == "help" or prompt.lower() in ("help", "-h", "--help"):
            return self.say(interaction, HELP)
        usage = {"serve": SERVE_USAGE, "upscale": UPSCALE_USAGE, "lora": grammar.LORA_USAGE, "info": INFO_USAGE}
        try:
            if name == "serve":
                return self.later(interaction, self.serve(interaction, grammar.parse_serve(prompt), who))
            if name == "upscale":
                return self.later(interaction, self.serve(interaction, grammar.parse_upscale(prompt), who))
            if name == "lora":
                return self.later(interaction, self.lora(interaction, grammar.parse_lora(prompt), who))
            if name == "info":
                picture = grammar.parse_image_name(prompt)
                return self.later(interaction, self._text(image_info_text, self.daemon.image_info(picture, who)))
        except UsageError as error:
            return self.say(interaction, f"{error}\n{usage[name]}")
        if name == "loras":
            return self.later(interaction, self._text(loras_text, self.daemon.list_loras(who), who))
        if name == "stats":
            return self.later(interaction, self._text(stats_text, self.daemon.user_stats(who)))
        if name == "models":
            return self.later(interaction, self._text(models_text, self.daemon.status()))
        return self.say(interaction, HELP)

    @staticmethod
    async def _text(render: Any, call: Awaitable[Any], *more: Any) -> str:
        return str(render(await call, *more))

    async def image_info(self, message: hikari.Message, who: pb.Requester) -> str:
        """The "Image info" menu: the parameters of the distillery picture attached to the message."""
        name = picture_name(message)
        if name is None:
            return NO_IMAGE_NAME
        return image_info_text(await self.daemon.image_info(name, who))

    def distill_command(self, interaction: hikari.CommandInteraction) -> Builder:
        """/distill image:<attachment> | url:<link> [class] [noflip]: the same checks as the other bots."""
        image, subject = _option(interaction, "image"), _option(interaction, "class")
        words = [str(_option(interaction, "url") or "").strip()]
        words += [f"--class {subject}" if subject else "", "--noflip" if _option(interaction, "noflip") else ""]
        resolved = interaction.resolved.attachments if interaction.resolved else {}
        attachment = resolved.get(hikari.Snowflake(image)) if image else None
        if attachment is None and not words[0]:
            return self.say(interaction, f"Attach the portrait, or give its link.\n{DISTILL_USAGE}")
        try:
            args = grammar.parse_distill(" ".join(word for word in words if word), need_url=attachment is None)
        except UsageError as error:
            return self.say(interaction, f"{error}\n{DISTILL_USAGE}")
        work = self.distill(interaction, attachment, args.url, args.subject_class, args.no_flip)
        return self.later(interaction, work)

    async def distill(
        self, interaction: Interaction, image: hikari.Attachment | None, url: str, subject: str, no_flip: bool
    ) -> str:
        """Download the picture now (CDN links expire), submit it, and post the job's message."""
        data = None
        if image is not None:
            try:
                data = await download(self.session, image, self.settings)
            except ImageRefused as error:
                return str(error)
        key = f"discord:{interaction.id}"
        who = requester_of(interaction)
        spec = DaemonClient.spec(
            who, url=url, upload=data is not None, subject_class=subject, no_flip=no_flip, idempotency_key=key
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

    async def serve(self, interaction: Interaction, spec: pb.GenerateSpec, who: pb.Requester) -> str:
        """/serve prompt:<prompt and --options> (or /upscale): the pictures follow in a job message like a
        /distill."""
        stream = self.daemon.generate(spec, who, f"discord:{interaction.id}")
        accepted, job = await generation_accepted(self.daemon, stream, who)
        if self.followers.is_following(job.id) or job.client_state:
            await close_stream(stream)  # a repeated interaction: the job's message exists already
            return "Already on it."
        view = JobView()
        view.apply_job(job)
        view.apply(accepted)
        view.generate = view.generate or spec
        place = await self.followers.post(job, view, events=stream)
        return f"Drawing: {self._link(interaction, place.chat, place.message)}"

    async def lora(self, interaction: hikari.CommandInteraction, args: LoraArgs, who: pb.Requester) -> None:
        """/lora prompt:<name> [--action]: the answer's text, its Delete/Keep buttons, or the file."""
        answer = await lora_action(self.daemon, args, who, interaction.attachment_size_limit)
        file = await answer.file() if answer.file is not None else None
        await self.answer(interaction, file.caption if file else answer.text, answer.buttons, file)

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
            return self.later(interaction, self._cancel(value, who))
        if action in (DELETE_ACTION, KEEP_ACTION):
            if owner != who.user:
                return self.say(interaction, not_owner(value))
            return self.later(interaction, answer_delete(self.daemon, action, value, who))
        return self.say(interaction, "That button no longer does anything.")

    async def _cancel(self, job_id: str, who: pb.Requester) -> str:
        try:
            await self.daemon.cancel(job_id, who)
        except DaemonError as error:
            # The daemon answers NOT_FOUND for someone else's job, exactly as for a job that does not exist.
            return NOT_OWNER if error.code == grpc.StatusCode.NOT_FOUND else error.message
        return CANCELLING
