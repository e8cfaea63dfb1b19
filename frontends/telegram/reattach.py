"""Following a job to its end across restarts of the bot and of the daemon.

The bot keeps what it needs to pick a job up again on the job itself (``ClientState``: which chat, which
progress message, the last event shown), so a restarted bot lists its platform's unfinished jobs and watches
each from where it left off. A watch that breaks because the daemon went away is retried with the shared backoff
(``frontends.follow``) from the last event seen; the user hears that the trainer is offline only when the outage
outlasts a restart.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from distillery.v1 import distillery_pb2 as pb

from frontends.client import DaemonError
from frontends.follow import BACKOFF, follow_job
from frontends.render import JobView, progress_text
from frontends.telegram.progress import Clock, LiveMessage, Sleep
from frontends.telegram.trainer import Trainer, requester

OFFLINE_NOTE = "The trainer is offline right now; this message carries on when it is back."
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
        # When the current outage began: the offline note waits until it outlasts a daemon restart.
        self.offline_since: float | None = None

    def _show_progress(self, note: str = "") -> None:
        text = progress_text(self.view) + (f"\n\n{note}" if note else "")
        self.live.show(text, keyboard=True, seq=self.view.last_seq)

    async def run(self) -> JobView:
        """Follow the job; returns its view, finished unless ``lost_reason`` says why it could not be."""
        self.lost_reason = await follow_job(
            self.view,
            lambda after: self.trainer.watch(self.job_id, self.watcher, after_seq=after),
            on_event=self._on_event,
            on_break=self._on_break,
            sleep=self.sleep,
            backoff=self.backoff,
            first=self.events,
        )
        self.events = None
        return self.view

    def _on_event(self, _: pb.JobEvent) -> None:
        self.offline_since = None
        if not self.view.finished:
            self._show_progress()

    def _on_break(self, error: DaemonError | None) -> None:
        if error is None:
            return
        now = self.clock()
        if self.offline_since is None:
            self.offline_since = now
        if now - self.offline_since >= self.offline_after:
            self._show_progress(OFFLINE_NOTE)
