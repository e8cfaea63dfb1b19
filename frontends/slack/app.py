"""The Slack bot's listeners on a slack-bolt AsyncApp: /distill, image uploads, the Cancel button, and the
commands that use and manage LoRAs (their work is in serve.py and library.py).

Every listener answers Slack at once (a slash command within its 3 s, events and button clicks immediately)
and leaves the long work to tasks: submitting, following the job for minutes, posting results. The sync App
would run listeners on a 5-thread pool that a handful of multi-minute jobs would exhaust; AsyncApp has no
such pool. Expected mistakes (bad words, a refused file, the daemon's refusals) are answered where they
happen with a sentence for the user; anything else ends in ``SlackBot.report``, the one place that logs an
unexpected failure and tells the user something went wrong.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import grpc
from distillery.v1 import distillery_pb2 as pb
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from frontends.actions import DELETE_ACTION, KEEP_ACTION
from frontends.client import DaemonApi, DaemonClient, DaemonError
from frontends.commands import UsageError, parse_distill
from frontends.follow import Followers, ResultImage, preview_image, source_image
from frontends.live import Clock, Pacer, Sleep
from frontends.render import jobs_text
from frontends.slack import blocks, library, serve
from frontends.slack.daemon import PLATFORM, slack_requester
from frontends.slack.files import UNREADABLE, FileRefused, SlackFile, check_file, download, new_session
from frontends.slack.platform import SlackPlatform
from frontends.slack.settings import SlackSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

COMMAND = "/distill"
SLOW = "The trainer took too long to answer; try again in a moment."
# --result-image: which picture goes under a finished distill job.
RESULT_IMAGES: dict[str, Callable[[DaemonApi], ResultImage | None]] = {
    "preview": preview_image,
    "source": source_image,
    "none": lambda daemon: None,
}
# "/distill" as a word anywhere in an upload's message; Slack's composer runs a message that *starts* with a
# slash as a command, so users may put a word before it.
_DISTILL_WORD = re.compile(r"(?:^|\s)/distill(?=\s|$)", re.IGNORECASE)
# Slack wraps links in message text as <https://...> or <https://...|label>.
_SLACK_LINK = re.compile(r"<(https?://[^>|\s]+)(?:\|[^>]*)?>")
# Desktop clients' smart punctuation turns "--lora" into an em dash and quotes into curly ones.
_SMART_PUNCTUATION = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})
_DASH_OPTION = re.compile(r"(?:^|(?<=\s))[\u2014\u2013](?=[a-z])")


def plain_words(text: str) -> str:
    """Slack's message markup back to what the user typed: unwrap links, undo its three HTML escapes."""
    return html.unescape(_SLACK_LINK.sub(r"\1", text))


def command_words(text: str) -> str:
    """plain_words, with smart quotes and an em dash before an option turned back into what was meant."""
    return _DASH_OPTION.sub("--", plain_words(text).translate(_SMART_PUNCTUATION)).strip()


@dataclass(frozen=True)
class SlashCommand:
    """A slash command past the allow-lists: who asked from where, the words, and Slack's id of the request."""

    requester: pb.Requester
    text: str
    trigger_id: str = ""


CommandHandler = Callable[["SlackBot", blocks.Ack, SlashCommand], Awaitable[None]]
# The commands besides /distill, each answered in the ack by its handler (see serve.py and library.py).
COMMANDS: dict[str, CommandHandler] = {
    "/serve": serve.on_serve,
    "/upscale": serve.on_upscale,
    "/info": library.on_info,
    "/loras": library.on_loras,
    "/lora": library.on_lora,
    "/stats": library.on_stats,
    "/models": library.on_models,
}


class RecentKeys:
    """Request ids seen lately (event ids, trigger ids): Slack retries must not start the work twice.

    The daemon's idempotency keys make a retried submission return the same job; this only keeps a retry
    that arrives while the first delivery is still downloading from doing the download again.
    """

    def __init__(self, size: int = 2048, ttl: float = 3600.0, clock: Clock = time.monotonic) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._size, self._ttl, self._clock = size, ttl, clock

    def first_time(self, key: str) -> bool:
        """Record the key; False when it was seen within the time-to-live."""
        now = self._clock()
        while self._seen and (len(self._seen) >= self._size or next(iter(self._seen.values())) < now - self._ttl):
            self._seen.popitem(last=False)
        if key in self._seen:
            return False
        self._seen[key] = now
        return True


class SlackBot:
    """The AsyncApp with its listeners, the followed jobs, and the tasks doing the long work."""

    def __init__(
        self,
        settings: SlackSettings,
        daemon: DaemonApi,
        client: AsyncWebClient,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.daemon = daemon
        self.client = client
        self.platform = SlackPlatform(client, settings.update_interval)
        self.pacer = Pacer(self.platform.interval, clock, sleep)
        self.followers = Followers(
            daemon,
            self.platform,
            self.pacer,
            platform_name=PLATFORM,
            result_image=RESULT_IMAGES[settings.result_image](daemon),
            info_hint=blocks.INFO_HINT,
            report=self.report,
            clock=clock,
            sleep=sleep,
        )
        self._recent = RecentKeys(clock=clock)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        http = settings.mode == "http"
        self.app = AsyncApp(
            name="distillery-slack",
            client=client,
            # Socket Mode requests arrive over the app-token websocket and carry no signature to check.
            signing_secret=settings.signing_secret if http else "",
            request_verification_enabled=http,
        )
        self._register()

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

    def spawn(self, work: Coroutine[Any, Any, T], requester: pb.Requester | None = None) -> asyncio.Task[T]:
        """Run work in a tracked task; an unexpected failure goes to ``report`` (and to the user, if known)."""
        task = asyncio.create_task(work)
        self._tasks.add(task)

        def done(finished: asyncio.Task[T]) -> None:
            self._tasks.discard(finished)
            if finished.cancelled():
                return
            error = finished.exception()
            if error is not None:
                self.report(error, requester)

        task.add_done_callback(done)
        return task

    def report(self, error: BaseException, requester: pb.Requester | None = None) -> None:
        """The central error handler: log what nobody expected, and tell the user that it failed."""
        log.error("unexpected failure: %s", type(error).__name__, exc_info=error)
        if requester is not None and requester.user:
            task = asyncio.create_task(self.tell(requester, blocks.INTERNAL))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def tell(self, requester: pb.Requester, text: str) -> None:
        """An ephemeral message only the requester sees, in the channel they asked from (else their DM)."""
        shown = blocks.reply(text)
        try:
            await self.client.chat_postEphemeral(channel=requester.chat, user=requester.user, **shown)
            return
        except SlackApiError as error:
            log.info("ephemeral reply in %s failed (%s); using a DM", requester.chat, error.response.get("error"))
        try:
            await self.client.chat_postMessage(channel=requester.user, **shown)
        except SlackApiError as error:
            log.warning("could not reply to %s: %s", requester.user, error.response.get("error"))

    def allowed(self, team: str, channel: str, user: str) -> bool:
        """The operator's allow-lists; an empty list admits everyone, and DMs pass the channel list."""
        s = self.settings
        if s.allowed_workspaces and team not in s.allowed_workspaces:
            return False
        if s.allowed_users and user not in s.allowed_users:
            return False
        is_dm = channel.startswith("D")
        return not (s.allowed_channels and channel not in s.allowed_channels and not is_dm)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session for Slack file downloads, made on first use (inside the running loop)."""
        if self._session is None:
            self._session = new_session()
        return self._session

    # -- listeners ------------------------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.app

        @app.command(COMMAND)
        async def on_distill(ack: AsyncAck, command: dict[str, Any]) -> None:
            await self.on_command(blocks.PlainAck(ack), command)

        for name, handler in COMMANDS.items():
            app.command(name)(self._slash_listener(handler))

        @app.event("message")
        async def on_message(event: dict[str, Any], body: dict[str, Any]) -> None:
            # Every message of the channels the bot is in arrives here; only uploads with /distill matter.
            if event.get("subtype") == "file_share" and _DISTILL_WORD.search(event.get("text") or ""):
                self.on_upload(event, body)

        @app.action(blocks.CANCEL_ACTION)
        async def on_cancel(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
            await ack()
            team = (body.get("team") or {}).get("id") or body.get("user", {}).get("team_id", "")
            requester = slack_requester(team, body["user"]["id"], (body.get("channel") or {}).get("id", ""))
            self.spawn(self.cancel(str(action.get("value", "")), requester), requester)

        for action_id, answer in ((blocks.DELETE_ACTION, DELETE_ACTION), (blocks.KEEP_ACTION, KEEP_ACTION)):
            app.action(action_id)(self._question_listener(answer))

        @app.shortcut(blocks.INFO_SHORTCUT)
        async def on_info_shortcut(ack: AsyncAck, body: dict[str, Any]) -> None:
            await ack()
            requester = self._clicker(body)
            if requester is not None:
                self.spawn(library.info_of_message(self, requester, body.get("message") or {}), requester)

        @app.shortcut(blocks.UPSCALE_SHORTCUT)
        async def on_upscale_shortcut(ack: AsyncAck, body: dict[str, Any]) -> None:
            await ack()
            requester = self._clicker(body)
            if requester is not None:
                message, trigger = body.get("message") or {}, str(body.get("trigger_id") or "")
                self.spawn(serve.upscale_of_message(self, requester, message, trigger), requester)

        @app.error
        async def on_error(error: Exception, body: dict[str, Any]) -> None:
            self.report(error, _requester_of(body))

    def _question_listener(
        self, answer: str
    ) -> Callable[[AsyncAck, dict[str, Any], dict[str, Any], AsyncRespond], Awaitable[None]]:
        """Delete or Keep under a delete question: the shared answer, for the one who asked."""

        async def listener(
            ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond
        ) -> None:
            await ack()
            requester = self._clicker(body)
            if requester is not None:
                value = str(action.get("value", ""))
                self.spawn(library.delete_clicked(self, requester, answer, value, respond), requester)

        return listener

    def _slash_listener(self, handler: CommandHandler) -> Callable[[AsyncAck, dict[str, Any]], Awaitable[None]]:
        """A slash command's listener: the allow-lists exactly as for /distill, then the handler."""

        async def listener(ack: AsyncAck, command: dict[str, Any]) -> None:
            team, user = command.get("team_id", ""), command.get("user_id", "")
            channel = command.get("channel_id", "")
            if not self.allowed(team, channel, user):
                await ack(blocks.NOT_ALLOWED)
                return
            request = SlashCommand(
                requester=slack_requester(team, user, channel),
                text=command_words(command.get("text") or ""),
                trigger_id=str(command.get("trigger_id") or ""),
            )
            await handler(self, blocks.PlainAck(ack), request)

        return listener

    def _clicker(self, body: dict[str, Any]) -> pb.Requester | None:
        """Who clicked a button or shortcut, when the allow-lists admit them (else they are told so)."""
        requester = _requester_of(body)
        if requester is None:
            return None
        if not self.allowed(requester.workspace, requester.chat, requester.user):
            self.spawn(self.tell(requester, blocks.NOT_ALLOWED))
            return None
        return requester

    def track(self, task: asyncio.Task[T]) -> None:
        """Keep a task started elsewhere until it ends (close() cancels it with the others)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def within_ack(self, work: Awaitable[str]) -> str:
        """The text of an ack that needs the daemon: its answer, its refusal, or a note that it was slow."""
        try:
            return await self.in_time(work)
        except DaemonError as error:
            return error.message

    async def in_time(self, work: Awaitable[T]) -> T:
        """What ``work`` gives within the ack's time; DaemonError when the daemon refuses or is slower."""
        try:
            return await asyncio.wait_for(work, self.settings.ack_wait)
        except TimeoutError:
            raise DaemonError(grpc.StatusCode.DEADLINE_EXCEEDED, SLOW) from None

    async def on_command(self, ack: blocks.Ack, command: dict[str, Any]) -> None:
        """/distill help | jobs | <url> [--class ...] [--noflip]: answered in the ack, within Slack's 3 s."""
        team, user, channel = command.get("team_id", ""), command.get("user_id", ""), command.get("channel_id", "")
        if not self.allowed(team, channel, user):
            await ack(blocks.NOT_ALLOWED)
            return
        text = command_words(command.get("text") or "")
        word = text.split(maxsplit=1)[0].lower() if text else ""
        if word in ("", "help", "-h", "--help"):
            await ack(blocks.usage_text())
            return
        requester = slack_requester(team, user, channel)
        if word == "jobs":
            await ack(await self.within_ack(self._jobs(requester)))
            return
        try:
            args = parse_distill(text, need_url=True)
        except UsageError as error:
            await ack(blocks.usage_error_text(str(error)))
            return
        spec = DaemonClient.spec(
            requester,
            url=args.url,
            subject_class=args.subject_class,
            no_flip=args.no_flip,
            # Slack gives each invocation its own trigger id: a repeat of it is the same request.
            idempotency_key=f"slack-command:{command.get('trigger_id', '')}" if command.get("trigger_id") else "",
        )
        submitting = asyncio.create_task(self.daemon.submit(spec))
        self._tasks.add(submitting)
        submitting.add_done_callback(self._tasks.discard)
        # The daemon fetches the URL before it answers; a slow image host must not cost the 3 s ack.
        done, _ = await asyncio.wait({submitting}, timeout=self.settings.ack_wait)
        if not done:
            await ack(blocks.FETCHING)
            self.spawn(self._submitted_late(submitting, requester), requester)
            return
        try:
            reply = submitting.result()
        except DaemonError as error:
            await ack(error.message)
            return
        await ack(blocks.accepted_text(reply))
        self._follow(reply)

    async def _jobs(self, requester: pb.Requester) -> str:
        return jobs_text(await self.daemon.list_jobs(requester, limit=20))

    async def _submitted_late(self, submitting: asyncio.Task[pb.SubmitReply], requester: pb.Requester) -> None:
        try:
            reply = await submitting
        except DaemonError as error:
            await self.tell(requester, error.message)
            return
        self._follow(reply)

    def _follow(self, reply: pb.SubmitReply) -> None:
        """Start the job message, unless a repeat of the request finds its job already shown."""
        job = reply.job
        if reply.duplicate and (self.followers.is_following(job.id) or job.client_state):
            return
        self.followers.start(job, reply.queue_position)

    def on_upload(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """A file_share message with /distill: the event is acked already; download and submit in a task."""
        files = event.get("files") or []
        event_id = str(body.get("event_id") or "")
        if event_id:
            key = f"slack-event:{event_id}"
        else:
            # Never seen from Slack, but cheap to cover: the file and the message's ts identify the upload.
            key = f"slack-file:{files[0].get('id', '') if files else ''}:{event.get('ts', '')}"
        if not self._recent.first_time(key):
            log.info("ignoring a repeated delivery of %s", key)
            return
        team = str(body.get("team_id") or event.get("team") or "")
        requester = slack_requester(team, str(event.get("user", "")), str(event.get("channel", "")))
        self.spawn(self._distill_upload(event, requester, key), requester)

    async def _distill_upload(self, event: dict[str, Any], requester: pb.Requester, key: str) -> None:
        if not self.allowed(requester.workspace, requester.chat, requester.user):
            await self.tell(requester, blocks.NOT_ALLOWED)
            return
        text = plain_words(event.get("text") or "")
        match = _DISTILL_WORD.search(text)
        try:
            args = parse_distill(text[match.end() :] if match else "", need_url=False)
        except UsageError as error:
            await self.tell(requester, blocks.usage_error_text(str(error)))
            return
        files = [SlackFile.from_event(item) for item in event.get("files") or []]
        images = [file for file in files if file.is_image or not file.mimetype]
        if not files:
            await self.tell(requester, blocks.NO_IMAGE)
            return
        try:
            file = images[0] if images else files[0]
            if not file.url:
                # Events may carry a stub of the file ("file_access": "check_file_info"): ask for the rest.
                file = await self._file_info(file.id)
            check_file(file, self.settings.max_image_bytes)
            data = await download(
                self.session,
                file.url,
                self.settings.bot_token,
                allowed_prefixes=self.settings.file_url_prefixes,
                max_bytes=self.settings.max_image_bytes,
            )
        except FileRefused as error:
            await self.tell(requester, str(error))
            return
        spec = DaemonClient.spec(
            requester, upload=True, subject_class=args.subject_class, no_flip=args.no_flip, idempotency_key=key
        )
        try:
            reply = await self.daemon.submit(spec, data)
        except DaemonError as error:
            await self.tell(requester, error.message)
            return
        self._follow(reply)

    async def _file_info(self, file_id: str) -> SlackFile:
        try:
            info = await self.client.files_info(file=file_id)
        except SlackApiError as error:
            # file_not_found, missing_scope...: the same thing for the user, a file the bot cannot read.
            log.info("files.info %s failed: %s", file_id, error.response.get("error"))
            raise FileRefused(UNREADABLE) from None
        return SlackFile.from_event(info["file"])

    async def cancel(self, job_id: str, requester: pb.Requester) -> None:
        """The Cancel button: only the job's owner may use it; the job message shows the outcome."""
        owner = self.followers.owner_of(job_id)
        if owner is not None and (owner.workspace, owner.user) != (requester.workspace, requester.user):
            await self.tell(requester, blocks.NOT_OWNER)
            return
        try:
            await self.daemon.cancel(job_id, requester)
        except DaemonError as error:
            # The daemon answers NOT_FOUND for someone else's job, exactly as for a job that does not exist.
            await self.tell(
                requester, blocks.NOT_OWNER if error.code == grpc.StatusCode.NOT_FOUND else error.message
            )


def _requester_of(body: dict[str, Any]) -> pb.Requester | None:
    """Who to tell about a failure, from whatever kind of request body failed."""
    event = body.get("event") or {}
    user = body.get("user_id") or (body.get("user") or {}).get("id") or event.get("user")
    channel = body.get("channel_id") or (body.get("channel") or {}).get("id") or event.get("channel")
    team = body.get("team_id") or (body.get("team") or {}).get("id") or ""
    if not user or not channel:
        return None
    return slack_requester(str(team), str(user), str(channel))
