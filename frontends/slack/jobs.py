"""Following jobs: one task per job posts (or adopts) its Slack message and keeps it in step with the events.

A job lives in the daemon, never in a stream: the follower watches it from the last event it showed, and when
the stream breaks (the daemon restarted, a network hiccup) it watches again from there with the shared backoff
(``frontends.follow``), showing a "reconnecting" line meanwhile. After each edit it writes its re-attach note
(channel, message ts, sequence shown) onto the job, which is all a restarted bot needs to pick the message up
again. A finished
generation's pictures go into the message's thread, one upload each, counted in the note as they go.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence

from distillery.v1 import distillery_pb2 as pb
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from frontends.client import DaemonError
from frontends.follow import BACKOFF, follow_job
from frontends.render import JobView, image_caption
from frontends.slack.blocks import Content, job_content
from frontends.slack.daemon import ClientState, Daemon, platform_requester
from frontends.slack.progress import ChannelPacer, LiveMessage, Sleep, paced_call

log = logging.getLogger(__name__)

RECONNECTING = "The trainer is not answering; following again as soon as it is back."
GONE = "The trainer no longer knows this job."
# Posting in a channel the bot is not in fails with these; the job message then goes to the user's DM.
_NO_ACCESS = ("not_in_channel", "channel_not_found", "is_archived", "restricted_action")

# A finished job's picture for the channel: (file name, bytes), or None when there is nothing to show.
# A finished distill job's picture for its thread: (file name, bytes, title), or None.
ResultImage = Callable[[JobView], Awaitable[tuple[str, bytes, str] | None]]
# The central error handler: an unexpected failure, and the user to tell about it.
ErrorReporter = Callable[[BaseException, pb.Requester | None], None]


def source_image(daemon: Daemon) -> ResultImage:
    """The stored source picture the LoRA was trained on."""

    async def fetch(view: JobView) -> tuple[str, bytes, str] | None:
        job = view.job
        if job is None or not job.image_name:
            return None
        # Source images are private to their owner, so the platform requester cannot read them.
        data = await daemon.get_image(job.image_name, job.owner)
        return job.image_name, data, f"{view.lora_name}: the picture it was trained on"

    return fetch


def preview_image(daemon: Daemon) -> ResultImage:
    """The first picture the daemon drew with the new LoRA (the distill job's output image)."""

    async def fetch(view: JobView) -> tuple[str, bytes, str] | None:
        job = view.job
        if job is None or not view.images:
            return None
        name = view.images[0].name
        return name, await daemon.get_image(name, job.owner), f"{view.lora_name}: a first picture"

    return fetch


class Followers:
    """The jobs this bot process follows, each in its own task, keyed by job id."""

    def __init__(
        self,
        daemon: Daemon,
        client: AsyncWebClient,
        pacer: ChannelPacer,
        *,
        result_image: ResultImage | None = None,
        report: ErrorReporter | None = None,
        sleep: Sleep = asyncio.sleep,
        backoff: Sequence[float] = BACKOFF,
    ) -> None:
        self.daemon = daemon
        self.client = client
        self.pacer = pacer
        self.result_image = result_image
        self._report = report
        self._sleep = sleep
        self._backoff = backoff
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._owners: dict[str, pb.Requester] = {}

    def is_following(self, job_id: str) -> bool:
        return job_id in self._tasks

    def owner_of(self, job_id: str) -> pb.Requester | None:
        """The owner of a job this process follows (None for jobs it does not know)."""
        return self._owners.get(job_id)

    def start(self, job: pb.Job, queue_position: int = 0, generate: pb.GenerateSpec | None = None) -> None:
        """Post a new job message in the owner's channel (their DM if the bot cannot post there) and follow.

        ``generate`` is the request as sent, for a generation job whose record does not carry it.
        """
        if job.id in self._tasks:
            return
        view = JobView()
        view.apply_job(job)
        view.queue_position = queue_position
        if view.generate is None and generate is not None:
            view.generate = generate
        self._spawn(job, self._post_and_follow(job, view))

    def resume(self, job: pb.Job, state: ClientState) -> None:
        """Follow a job whose message already exists, from the last event it shows (after a restart)."""
        if job.id in self._tasks:
            return
        view = JobView()
        view.apply_job(job)
        view.last_seq = state.seq
        self._spawn(job, self._follow(job, view, state, shown=None))

    async def wait(self, job_id: str) -> None:
        """Until this process stops following the job (tests, and shutdown ordering)."""
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        """Stop following (the jobs go on in the daemon; the next start re-attaches to them)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the task of one job --------------------------------------------------------------------------------

    def _spawn(self, job: pb.Job, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            finally:
                self._tasks.pop(job.id, None)
                self._owners.pop(job.id, None)

        owner = pb.Requester()
        owner.CopyFrom(job.owner)
        self._owners[job.id] = owner
        task = asyncio.create_task(run(), name=f"follow-{job.id}")
        self._tasks[job.id] = task
        task.add_done_callback(lambda finished: self._done(finished, owner))

    def _done(self, task: asyncio.Task[None], owner: pb.Requester) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and self._report is not None:
            self._report(error, owner)
        elif error is not None:
            log.error("following a job failed", exc_info=error)

    async def _post_and_follow(self, job: pb.Job, view: JobView) -> None:
        content = job_content(view, job.owner.user)
        place = await self._post(job.owner, content)
        if place is None:
            return
        state = ClientState(channel=place[0], ts=place[1], seq=0)
        await self._save(job.id, state)
        await self._follow(job, view, state, shown=content)

    async def _post(self, owner: pb.Requester, content: Content) -> tuple[str, str] | None:
        """Post the job message; (channel, ts) of where it went."""
        channel = owner.chat
        try:
            reply = await paced_call(
                self.pacer,
                channel,
                lambda: self.client.chat_postMessage(channel=channel, text=content.text, blocks=content.blocks),
            )
        except SlackApiError as error:
            if error.response.get("error") not in _NO_ACCESS:
                raise
            # Slash commands work in channels the bot was never invited to; the user's DM always works.
            log.info("cannot post in %s (%s); using a DM", channel, error.response.get("error"))
            opened = await self.client.conversations_open(users=owner.user)
            channel = str(opened["channel"]["id"])
            reply = await paced_call(
                self.pacer,
                channel,
                lambda: self.client.chat_postMessage(channel=channel, text=content.text, blocks=content.blocks),
            )
        return str(reply["channel"]), str(reply["ts"])

    async def _save(self, job_id: str, state: ClientState) -> None:
        try:
            await self.daemon.set_client_state(job_id, platform_requester(), state.encode())
        except DaemonError as error:
            # Only re-attaching after a restart needs the note; following goes on without it.
            log.warning("job %s: could not record the message state: %s", job_id, error.message)

    async def _follow(self, job: pb.Job, view: JobView, state: ClientState, shown: Content | None) -> None:
        owner = job.owner.user

        async def record(seq: int) -> None:
            await self._save(job.id, ClientState(state.channel, state.ts, seq))

        live = LiveMessage(self.client, self.pacer, state.channel, state.ts, shown=shown, on_shown=record)
        try:
            if await self._watch_until_finished(job.id, view, live, owner):
                if view.generating and not view.images and job.output_images:
                    # Resumed from the job record (it ended while the bot was away): no FINISHED event.
                    view.images = await self._image_infos(job)
                live.show(job_content(view, owner), view.last_seq)
                await live.flush()
                images = 0
                if view.generating:
                    images = await self._post_images(job, view, state)
                else:
                    await self._post_result_image(view, state)
                final = ClientState(state.channel, state.ts, view.last_seq, done=True, images=images)
                await self._save(job.id, final)
            else:
                await live.flush()
        finally:
            await live.close()

    async def _watch_until_finished(self, job_id: str, view: JobView, live: LiveMessage, owner: str) -> bool:
        """Fold events into the view and show them; False when the job can no longer be followed."""

        def on_break(_: DaemonError | None) -> None:
            live.show(job_content(view, owner, note=RECONNECTING), view.last_seq)

        lost = await follow_job(
            view,
            lambda after: self.daemon.watch(job_id, platform_requester(), after_seq=after),
            on_event=lambda _: live.show(job_content(view, owner), view.last_seq),
            on_break=on_break,
            sleep=self._sleep,
            backoff=self._backoff,
        )
        if lost:
            live.show(job_content(view, owner, note=GONE), view.last_seq)
            return False
        return True

    async def _post_images(self, job: pb.Job, view: JobView, state: ClientState) -> int:
        """Upload a finished generation's pictures into the job message's thread, each with its caption;
        returns how many are done with."""
        if view.state != pb.JOB_STATE_SUCCEEDED:
            return 0
        # The note counts uploads already made: a job resumed after a restart continues after them.
        for number in range(state.images, len(view.images)):
            info = view.images[number]
            name = info.name
            try:
                # Generated images are private to their owner, like source images.
                data = await self.daemon.get_image(name, job.owner)
                upload = functools.partial(
                    self.client.files_upload_v2,
                    channel=state.channel,
                    thread_ts=state.ts,
                    file=data,
                    filename=name,
                    title=name,
                    initial_comment=image_caption(info),
                )
                await paced_call(self.pacer, state.channel, upload)
            except (DaemonError, SlackApiError) as error:
                # The other pictures may still make it; /info and GetImage keep this one available.
                log.warning("job %s: could not post %s: %s", view.job_id, name, error)
            await self._save(job.id, ClientState(state.channel, state.ts, view.last_seq, images=number + 1))
        return max(len(view.images), state.images)

    async def _image_infos(self, job: pb.Job) -> list[pb.ImageInfo]:
        infos = []
        for name in job.output_images:
            try:
                infos.append(await self.daemon.image_info(name, job.owner))
            except DaemonError as error:
                log.warning("job %s: no facts about %s: %s", job.id, name, error.message)
                infos.append(pb.ImageInfo(name=name))
        return infos

    async def _post_result_image(self, view: JobView, state: ClientState) -> None:
        if self.result_image is None or view.state != pb.JOB_STATE_SUCCEEDED:
            return
        try:
            image = await self.result_image(view)
            if image is None:
                return
            name, data, title = image
            await self.client.files_upload_v2(
                channel=state.channel, thread_ts=state.ts, file=data, filename=name, title=title
            )
        except (DaemonError, SlackApiError) as error:
            # The LoRA is ready either way; a missing picture is not worth failing the job message for.
            log.warning("job %s: could not post its picture: %s", view.job_id, error)
