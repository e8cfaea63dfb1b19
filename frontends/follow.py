"""Following a job to its end, across restarts of the bot and of the daemon; the same for every chat platform.

A job lives in the daemon, never in a stream. ``follow_job`` folds the job's events into a ``JobView`` and, when
the stream breaks (the daemon restarted, a socket hiccup), watches again from the last event it applied after
a pause that grows with each failure in a row. Codes that waiting cannot heal end the following at once.

``Followers`` is what a bot runs on top: one task per job that posts (or adopts) the job's message, keeps it in
step with the events through a ``LiveMessage``, says so when the trainer has been offline for a while, turns
it into the summary at the end, and delivers the results (a generation's pictures; a new LoRA's first picture
and file) in batches of the platform's ``album``. After each change it writes the job's ``ClientState``:
the message's place, the last event shown and how many results were delivered, so a restarted bot
(``reattach``) carries on the same message and never delivers a result twice.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from distillery.v1 import distillery_pb2 as pb

from frontends.client import DaemonApi, DaemonError
from frontends.clientstate import ClientState
from frontends.live import Clock, LiveMessage, Pacer
from frontends.platform import Attachment, Button, Look, Place, Platform, PlatformError
from frontends.render import FINISHED_STATES, JobView, image_caption, progress_text, summary_text

log = logging.getLogger(__name__)
T = TypeVar("T")

# Codes after which asking again cannot help: the job is gone, or this frontend may not see it.
PERMANENT = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)
# Seconds between attempts while the daemon is away, the last one repeating: a restart takes a few seconds,
# a reboot a minute.
BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)

Sleep = Callable[[float], Awaitable[None]]
# The job's events after a sequence number (a Watch call).
Watch = Callable[[int], AsyncIterator[pb.JobEvent]]
# Told of each break before the pause: the error, or None when the stream ended before the job did.
OnBreak = Callable[[DaemonError | None], None]


def pause(failures: int, backoff: Sequence[float] = BACKOFF) -> float:
    """The pause after this many failures in a row (0 for the first)."""
    return backoff[min(failures, len(backoff) - 1)]


async def follow_job(
    view: JobView,
    watch: Watch,
    *,
    on_event: Callable[[pb.JobEvent], None],
    on_break: OnBreak,
    sleep: Sleep,
    backoff: Sequence[float] = BACKOFF,
    first: AsyncIterator[pb.JobEvent] | None = None,
) -> str:
    """Apply the job's events to view until the final one; returns "" then, or why it cannot be followed.

    ``first`` is a stream the caller already has (Distill and Generate answer with their job's events); it is
    read before any Watch. A view that is already finished is still watched once from its last event, so a job
    that ended while nobody followed it delivers its remaining events, the final one with its results.
    """
    failures = 0
    while True:
        events, first = first, None
        try:
            async for event in events if events is not None else watch(view.last_seq):
                failures = 0
                view.apply(event)
                on_event(event)
                if event.WhichOneof("detail") == "finished":
                    return ""
            if view.finished:
                return ""
            log.info("job %s: the event stream ended before the job; watching again", view.job_id)
            on_break(None)
        except DaemonError as error:
            if error.code in PERMANENT:
                log.warning("job %s: cannot follow it any more: %s", view.job_id, error.message)
                return error.message or error.code.name
            log.info(
                "job %s: watch failed (%s); retrying in %.1f s",
                view.job_id,
                error.code.name,
                pause(failures, backoff),
            )
            on_break(error)
        await sleep(pause(failures, backoff))
        failures += 1


async def when_answered(call: Callable[[], Awaitable[T]], what: str, sleep: Sleep) -> T:
    """call's result, asked again with the backoff while the daemon is away; a permanent error is raised."""
    failures = 0
    while True:
        try:
            return await call()
        except DaemonError as error:
            if error.code in PERMANENT:
                raise
            log.warning("cannot %s yet (%s); retrying in %.1f s", what, error.code.name, pause(failures))
        await sleep(pause(failures))
        failures += 1


OFFLINE_NOTE = "The trainer is offline right now; this message carries on when it is back."
NO_ANSWER = "The trainer ended the request without an answer; try again in a moment."
GONE = "The trainer no longer knows this job."
CANCEL_ACTION = "cancel"
# How far back a restarted bot looks for jobs that ended while it was down but whose chat lacks the summary.
RECENT_JOBS = 100

# A finished distill job's picture for its chat, or None when there is nothing to show.
ResultImage = Callable[[JobView], Awaitable[Attachment | None]]
# The central error handler of a bot: an unexpected failure, and the user to tell about it.
ErrorReporter = Callable[[BaseException, pb.Requester | None], None]
# One result to deliver, fetched only when its turn comes: None when it turned out to have nothing.
_Result = Callable[[], Awaitable[Attachment | None]]


async def close_stream(events: AsyncIterator[pb.JobEvent]) -> None:
    """Stop reading a stream nobody needs any more (the job goes on; only the stream ends): an abandoned gRPC
    stream would stay open until garbage collection."""
    close = getattr(events, "aclose", None)
    if close is not None:
        await close()


async def generation_accepted(
    daemon: DaemonApi, events: AsyncIterator[pb.JobEvent], requester: pb.Requester
) -> tuple[pb.JobEvent, pb.Job]:
    """The ACCEPTED event a Generate stream opens with, and the job record it names (whose client state tells a
    repeated request); the stream stays open for whoever follows the job."""
    async for event in events:
        return event, await daemon.get_job(event.job_id, requester)
    raise DaemonError(grpc.StatusCode.UNAVAILABLE, NO_ANSWER)


def platform_requester(platform: str) -> pb.Requester:
    """The bot itself (no user): may watch, list and annotate every job of its platform, as re-attaching needs."""
    return pb.Requester(platform=platform)


def preview_image(daemon: DaemonApi) -> ResultImage:
    """The first picture the daemon drew with a new LoRA (a distill job's output image)."""

    async def fetch(view: JobView) -> Attachment | None:
        job = view.job
        if job is None or view.generating or not view.images:
            return None
        name = view.images[0].name
        # Pictures are private to their owner, so the platform requester cannot read them.
        data = await daemon.get_image(name, job.owner)
        return Attachment(name, data, title=f"{view.lora_name}: its preview")

    return fetch


def source_image(daemon: DaemonApi) -> ResultImage:
    """The stored source picture the LoRA was trained on."""

    async def fetch(view: JobView) -> Attachment | None:
        job = view.job
        if job is None or not job.image_name:
            return None
        data = await daemon.get_image(job.image_name, job.owner)
        return Attachment(job.image_name, data, title=f"{view.lora_name}: the picture it was trained on")

    return fetch


def cancel_button(view: JobView, owner: str) -> Button:
    """The owner's Cancel button under a running job's message."""
    outcome = (
        "Generation stops and no picture is kept." if view.generating else "Training stops and nothing is saved."
    )
    return Button("Cancel", CANCEL_ACTION, view.job_id, owner=owner, confirm=outcome, danger=True)


class Followers:
    """The jobs one bot process follows, each in a task of its own, keyed by job id; see the module doc.

    ``bot`` tells this bot's jobs from another's on the same platform (a Telegram bot id; "" for one app).
    ``offline_after``: seconds of outage before the message says the trainer is offline. ``lora_file_limit``:
    the largest LoRA file sent to the chat after training (0: never). ``info_hint`` ends a generation's
    summary (how /info works on this platform).
    """

    def __init__(
        self,
        daemon: DaemonApi,
        platform: Platform,
        pacer: Pacer,
        *,
        platform_name: str,
        bot: str = "",
        result_image: ResultImage | None = None,
        lora_file_limit: int = 0,
        offline_after: float = 0.0,
        info_hint: str = "",
        report: ErrorReporter | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        backoff: Sequence[float] = BACKOFF,
    ) -> None:
        self.daemon = daemon
        self.platform = platform
        self.pacer = pacer
        self.watcher = platform_requester(platform_name)
        self.bot = bot
        self.result_image = result_image
        self.lora_file_limit = lora_file_limit
        self.offline_after = offline_after
        self.info_hint = info_hint
        self._report = report
        self._clock = clock
        self._sleep = sleep
        self._backoff = backoff
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._owners: dict[str, pb.Requester] = {}

    # -- what a bot calls -----------------------------------------------------------------------------------

    def is_following(self, job_id: str) -> bool:
        return job_id in self._tasks

    def owner_of(self, job_id: str) -> pb.Requester | None:
        """The owner of a job this process follows (None for jobs it does not know)."""
        return self._owners.get(job_id)

    def progress_look(self, view: JobView, owner: pb.Requester, note: str = "") -> Look:
        """A running job's message: its progress, a passing note, and the Cancel button."""
        buttons = (cancel_button(view, owner.user),) if view.job_id else ()
        return Look(progress_text(view), buttons, note=note, owner=owner.user)

    def final_look(self, view: JobView, owner: pb.Requester) -> Look:
        """A finished job's message: the summary, without buttons."""
        return Look(summary_text(view, self.info_hint), owner=owner.user)

    async def post(
        self,
        job: pb.Job,
        view: JobView,
        *,
        reply_to: str = "",
        placeholder: Place | None = None,
        events: AsyncIterator[pb.JobEvent] | None = None,
    ) -> Place:
        """Post the job's message in its owner's chat (or turn ``placeholder`` into it), note it on the job,
        and follow the job in a task. ``events`` is the stream the job came from (Generate), read first."""
        look = self.progress_look(view, job.owner)
        if placeholder is None:
            place = await self.pacer.call(
                job.owner.chat, lambda: self.platform.send(job.owner.chat, look, reply_to, owner=job.owner)
            )
            self.pacer.note_sent(place.chat)
        else:
            place = placeholder
            await self.pacer.call(place.chat, lambda: self.platform.edit(place, look), paced=True)
        state = ClientState(chat=place.chat, message=place.message, bot=self.bot)
        await self._save(job.id, state)
        self._spawn(job, lambda: self._follow(job, view, state, look, events))
        return place

    def start(self, job: pb.Job, queue_position: int = 0, generate: pb.GenerateSpec | None = None) -> None:
        """``post`` in a task of its own, for a job accepted outside any handler that could wait for it."""
        if job.id in self._tasks:
            return
        view = self._view(job)
        view.queue_position = queue_position
        if view.generate is None and generate is not None:
            view.generate = generate

        async def post() -> None:
            await self.post(job, view)

        self._spawn(job, post)

    def resume(self, job: pb.Job, state: ClientState) -> None:
        """Follow a job whose message already exists, from the last event it shows (after a restart)."""
        if job.id in self._tasks:
            return
        view = self._view(job)
        view.last_seq = state.seq
        self._spawn(job, lambda: self._follow(job, view, state, None, None))

    async def reattach(self) -> int:
        """Follow every job this bot started whose message or results are not final yet (waiting out a daemon
        that is down); a job accepted just before the bot stopped, before its message, gets one now."""
        count = await when_answered(self._reattach_once, "re-attach to running jobs", self._sleep)
        if count:
            log.info("re-attached to %d job(s)", count)
        return count

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

    # -- re-attaching ---------------------------------------------------------------------------------------

    async def _reattach_once(self) -> int:
        active = await self.daemon.list_jobs(self.watcher, active_only=True, whole_platform=True, limit=1000)
        recent = await self.daemon.list_jobs(
            self.watcher, active_only=False, whole_platform=True, limit=RECENT_JOBS
        )
        count = 0
        seen: set[str] = set()
        for job in [*active, *recent]:
            if job.id in seen or self.is_following(job.id):
                continue
            seen.add(job.id)
            if self._pick_up(job):
                count += 1
        return count

    def _pick_up(self, job: pb.Job) -> bool:
        state = ClientState.decode(job.client_state)
        if state is None:
            # Accepted, but the bot stopped before posting its message: post one now, if anyone still cares.
            if job.state in FINISHED_STATES or not job.owner.chat or self.bot:
                return False
            log.info("job %s: posting the message a previous run did not get to", job.id)
            self.start(job)
            return True
        # A note without a bot is from before bot ids were recorded; another bot's jobs are that bot's to follow.
        if state.done or (state.bot and state.bot != self.bot):
            return False
        log.info("job %s: re-attaching to %s/%s after event %d", job.id, state.chat, state.message, state.seq)
        self.resume(job, state)
        return True

    # -- the task of one job --------------------------------------------------------------------------------

    @staticmethod
    def _view(job: pb.Job) -> JobView:
        view = JobView()
        view.apply_job(job)
        return view

    def _spawn(self, job: pb.Job, work: Callable[[], Awaitable[None]]) -> None:
        owner = pb.Requester()
        owner.CopyFrom(job.owner)

        async def run() -> None:
            try:
                await work()
            finally:
                if self._tasks.get(job.id) is task:
                    self._tasks.pop(job.id, None)
                    self._owners.pop(job.id, None)

        previous = self._tasks.get(job.id)
        task = asyncio.create_task(run(), name=f"follow-{job.id}")
        if previous is None or previous.done() or previous is asyncio.current_task():
            self._tasks[job.id] = task
            self._owners[job.id] = owner
        task.add_done_callback(lambda finished: self._done(finished, owner))

    def _done(self, task: asyncio.Task[None], owner: pb.Requester) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        if self._report is not None:
            self._report(error, owner)
        else:
            log.error("following a job failed", exc_info=error)

    async def _save(self, job_id: str, state: ClientState) -> None:
        try:
            await self.daemon.set_client_state(job_id, self.watcher, state.encode())
        except DaemonError as error:
            # Only re-attaching after a restart needs the note; following goes on without it.
            log.warning("job %s: could not record the message state: %s", job_id, error.message)

    async def _follow(
        self,
        job: pb.Job,
        view: JobView,
        state: ClientState,
        shown: Look | None,
        events: AsyncIterator[pb.JobEvent] | None,
    ) -> None:
        note = state

        async def record(seq: int) -> None:
            nonlocal note
            if seq > note.seq:
                note = note.shown(seq)
                await self._save(job.id, note)

        place = Place(state.chat, state.message)
        live = LiveMessage(self.platform, self.pacer, place, shown=shown, on_shown=record)
        try:
            lost = await self._watch(job, view, live, events)
            if lost:
                await live.finish(Look(progress_text(view), note=GONE, owner=job.owner.user), view.last_seq)
                await self._save(job.id, note.finished(view.last_seq))
                return
            await self._complete(job, view)
            final = self.final_look(view, job.owner)
            await live.finish(final, view.last_seq)
            if live.lost:  # the message was deleted: the summary still gets to the chat
                try:
                    await self.pacer.call(
                        place.chat, lambda: self.platform.send(place.chat, final, owner=job.owner)
                    )
                except PlatformError as error:  # e.g. the bot was removed from the chat meanwhile
                    log.info("job %s: could not send the summary to %s: %s", job.id, place.chat, error)
            note = note.shown(view.last_seq)
            await self._save(job.id, note)
            note = await self._deliver(job, view, place, note)
            await self._save(job.id, note.finished(view.last_seq))
        finally:
            await live.close()

    async def _watch(
        self, job: pb.Job, view: JobView, live: LiveMessage, events: AsyncIterator[pb.JobEvent] | None
    ) -> bool:
        """Fold events into the view and show them; True when the job can no longer be followed."""
        offline_since: float | None = None

        def on_event(_: pb.JobEvent) -> None:
            nonlocal offline_since
            offline_since = None
            if not view.finished:
                live.show(self.progress_look(view, job.owner), view.last_seq)

        def on_break(error: DaemonError | None) -> None:
            nonlocal offline_since
            if error is None:
                return
            now = self._clock()
            offline_since = now if offline_since is None else offline_since
            if now - offline_since >= self.offline_after:
                live.show(self.progress_look(view, job.owner, note=OFFLINE_NOTE), view.last_seq)

        lost = await follow_job(
            view,
            lambda after: self.daemon.watch(job.id, self.watcher, after_seq=after),
            on_event=on_event,
            on_break=on_break,
            sleep=self._sleep,
            backoff=self._backoff,
            first=events,
        )
        return bool(lost)

    async def _complete(self, job: pb.Job, view: JobView) -> None:
        """Fill in what a view folded from the job record lacks: a job that ended while nobody followed it
        (or whose results were being delivered when the bot stopped) has no FINISHED event to read again."""
        if view.state != pb.JOB_STATE_SUCCEEDED:
            return
        try:
            if view.job is None:
                view.job = await self.daemon.get_job(job.id, self.watcher)
            if not view.generating and view.lora is None:
                view.lora = await self.daemon.get_lora(view.lora_name, job.owner)
        except DaemonError as error:
            log.warning("job %s: cannot read back its results: %s", job.id, error.message)
        for number, info in enumerate(view.images if view.generating else []):
            if info.parameters:
                continue
            try:
                view.images[number] = await self.daemon.image_info(info.name, job.owner)
            except DaemonError as error:
                log.warning("job %s: no facts about %s: %s", job.id, info.name, error.message)

    def _results(self, job: pb.Job, view: JobView) -> list[_Result]:
        """What a finished job sends to its chat after the summary, in order."""
        if view.state != pb.JOB_STATE_SUCCEEDED:
            return []
        owner = job.owner
        if view.generating:

            def picture(info: pb.ImageInfo) -> _Result:
                async def fetch() -> Attachment:
                    # Generated pictures are private to their owner, like source pictures.
                    return Attachment(
                        info.name, await self.daemon.get_image(info.name, owner), image_caption(info)
                    )

                return fetch

            return [picture(info) for info in view.images]
        results: list[_Result] = []
        if self.result_image is not None:
            result_image = self.result_image
            results.append(lambda: result_image(view))
        lora = view.lora
        if self.lora_file_limit and lora is not None and lora.size_bytes <= self.lora_file_limit:
            name = view.lora_name

            async def lora_file() -> Attachment:
                data = await self.daemon.download_lora(name, owner)
                caption = f"{name}.safetensors - load it as a LoRA in your Stable Diffusion UI."
                return Attachment(f"{name}.safetensors", data, caption, picture=False)

            results.append(lora_file)
        return results

    async def _deliver(self, job: pb.Job, view: JobView, place: Place, note: ClientState) -> ClientState:
        """Send the results not delivered yet, a batch of ``album`` at a time, counting each batch on the job."""
        results = self._results(job, view)
        album = max(self.platform.album, 1)
        for start in range(note.delivered, len(results), album):
            batch: list[Attachment] = []
            for result in results[start : start + album]:
                try:
                    attachment = await result()
                except DaemonError as error:
                    # The others may still make it; /info and the CLI keep this one available.
                    log.warning("job %s: could not fetch a result: %s", job.id, error.message)
                    continue
                if attachment is not None:
                    batch.append(attachment)
            if batch:
                try:
                    upload = functools.partial(self.platform.upload, place, batch)
                    await self.pacer.call(place.chat, upload, paced=True)
                except PlatformError as error:
                    # The summary already says how to use the result by name; the files are a convenience.
                    log.warning("job %s: could not send %d file(s): %s", job.id, len(batch), error)
            note = note.delivering(start + len(results[start : start + album]))
            await self._save(job.id, note)
        return note
