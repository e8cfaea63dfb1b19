"""Following a job to its end across restarts of the bot and of the daemon.

The bot keeps what it needs to pick a job up again on the job itself (``ClientState``: which chat, which
progress message, the last event shown), so a restarted bot lists its platform's unfinished jobs and watches
each from where it left off. A watch that breaks because the daemon went away is retried with backoff from the
last event seen; the user hears that the trainer is offline only when the outage outlasts a restart.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

import grpc
from distillery.v1 import distillery_pb2 as pb

from frontends.client import DaemonError
from frontends.render import JobView, progress_text
from frontends.telegram.progress import Clock, LiveMessage, Sleep
from frontends.telegram.trainer import Trainer, requester

log = logging.getLogger(__name__)

OFFLINE_NOTE = "The trainer is offline right now; this message carries on when it is back."
# Codes after which watching again cannot help: the job is gone, or the bot may not see it.
PERMANENT = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)
# Seconds between watch attempts while the daemon is away; a restart takes a few seconds, a reboot a minute.
BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
# How far back a restarted bot looks for jobs that ended while it was down but whose chat has no summary yet.
RECENT_JOBS = 100


@dataclass(frozen=True)
class ClientState:
    """The bot's note on a job: its bot, chat, progress message, last event shown, and whether it is done."""

    bot: int
    chat: int
    message: int
    seq: int = 0
    done: bool = False

    def encode(self) -> bytes:
        data = {"bot": self.bot, "chat": self.chat, "message": self.message, "seq": self.seq, "done": self.done}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> ClientState | None:
        """The note, or None when there is none or another frontend wrote something else there."""
        if not data:
            return None
        try:
            raw = json.loads(data)
            state = cls(
                bot=int(raw.get("bot", 0)),
                chat=int(raw["chat"]),
                message=int(raw["message"]),
                seq=int(raw.get("seq", 0)),
                done=bool(raw.get("done", False)),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        return state

    def shown(self, seq: int) -> ClientState:
        return replace(self, seq=seq)

    def finished(self, seq: int) -> ClientState:
        return replace(self, seq=seq, done=True)


async def unfinished_jobs(trainer: Trainer, bot_id: int) -> list[tuple[pb.Job, ClientState]]:
    """Jobs this bot started whose chat has not had its final message: active ones, and recently ended ones."""
    platform = requester()
    active = await trainer.list_jobs(platform, active_only=True, whole_platform=True, limit=1000)
    recent = await trainer.list_jobs(platform, active_only=False, whole_platform=True, limit=RECENT_JOBS)
    found: dict[str, tuple[pb.Job, ClientState]] = {}
    for job in [*active, *recent]:
        state = ClientState.decode(job.client_state)
        # bot 0: a note from before bot ids were recorded; another bot's jobs are that bot's to follow.
        if state is not None and not state.done and state.bot in (0, bot_id) and job.id not in found:
            found[job.id] = (job, state)
    return list(found.values())


class Follower:
    """Watches one job until its final event, re-watching from the last event after a broken stream."""

    def __init__(
        self,
        trainer: Trainer,
        job_id: str,
        watcher: pb.Requester,
        view: JobView,
        live: LiveMessage,
        *,
        offline_after: float,
        clock: Clock,
        sleep: Sleep,
        backoff: Sequence[float] = BACKOFF,
        events: AsyncIterator[pb.JobEvent] | None = None,
    ) -> None:
        self.trainer = trainer
        # The stream the job came from (Generate follows its job): read first, then Watch after a break.
        self.events = events
        self.job_id = job_id
        self.watcher = watcher
        self.view = view
        self.live = live
        self.offline_after = offline_after
        self.clock = clock
        self.sleep = sleep
        self.backoff = backoff
        # Set when the job can no longer be followed (e.g. the daemon's store was wiped): why, for the chat.
        self.lost_reason = ""

    def _show_progress(self, note: str = "") -> None:
        text = progress_text(self.view) + (f"\n\n{note}" if note else "")
        self.live.show(text, keyboard=True, seq=self.view.last_seq)

    async def run(self) -> JobView:
        """Follow the job; returns its view, finished unless ``lost_reason`` says why it could not be."""
        failures = 0
        offline_since: float | None = None
        while True:
            try:
                events, self.events = self.events, None
                if events is None:
                    events = self.trainer.watch(self.job_id, self.watcher, after_seq=self.view.last_seq)
                async for event in events:
                    failures, offline_since = 0, None
                    self.view.apply(event)
                    if event.WhichOneof("detail") == "finished":
                        return self.view
                    if not self.view.finished:
                        self._show_progress()
                # The stream ended without the final event. For a job that ended before we (re)attached and whose
                # final event we already passed, that is all there is; otherwise the daemon is stopping.
                if self.view.finished:
                    return self.view
            except DaemonError as error:
                if error.code in PERMANENT:
                    log.warning("job %s: cannot follow it any more: %s", self.job_id, error.message)
                    self.lost_reason = error.message
                    return self.view
                if offline_since is None:
                    offline_since = self.clock()
                    log.info("job %s: watch broke (%s); retrying", self.job_id, error.code.name)
                if self.clock() - offline_since >= self.offline_after:
                    self._show_progress(OFFLINE_NOTE)
            await self.sleep(self.backoff[min(failures, len(self.backoff) - 1)])
            failures += 1
