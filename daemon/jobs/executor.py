"""Where queued jobs run: the executor interface, and what every executor shares.

Two executors implement it: ``local`` (daemon.jobs.worker: one thread in the daemon, the default) and ``ray``
(daemon.cluster: one actor per GPU across machines). Both take job ids from the one durable ``JobQueue`` and
record every change through the ``Journal``; ``JobRun`` is one attempt at a job as the daemon records it, so
a job starts, reports and ends the same way whichever executor runs it.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from daemon.errors import DistilleryError
from daemon.jobs.contract import Ending, JobInputs, Outcome, Stoppable
from daemon.jobs.journal import Journal
from daemon.jobs.model import Job, JobState, Stage, SubjectClass
from daemon.jobs.queue import JobQueue

log = logging.getLogger(__name__)

# A progress event is saved (and fsynced) at most this often; the last step is always saved.
PROGRESS_INTERVAL_S = 0.5


class WorkerState(enum.StrEnum):
    STARTING = "starting"  # loading its models
    IDLE = "idle"
    BUSY = "busy"
    LOST = "lost"  # died; its executor is bringing it back
    STOPPING = "stopping"


@dataclass(frozen=True)
class WorkerStatus:
    """One worker as GetStatus lists it."""

    id: str
    device: str
    state: WorkerState
    job_id: str = ""
    stage: Stage | None = None
    node: str = ""  # the machine it runs on
    pid: int = 0


class Executor(Protocol):
    """Runs queued jobs; the service asks it to cancel, to announce queue positions, and who is doing what."""

    def start(self) -> None:
        """Begin taking jobs from the queue."""
        ...

    def stop(self, timeout: float) -> bool:
        """Stop taking jobs; running ones stop at their next step and go back to the queue. False on timeout.

        Blocking: called off the event loop.
        """
        ...

    def cancel(self, job_id: str) -> str | None:
        """ "removed" (was queued), "stopping" (running; stops at its next step) or None (neither)."""
        ...

    def note_position(self, job_id: str, position: int) -> None:
        """The position a job was told when it was accepted, so it is not announced twice."""
        ...

    def announce_positions(self) -> None:
        """Tell every queued job whose place changed where it now stands."""
        ...

    def workers(self) -> list[WorkerStatus]:
        """Every worker, in a stable order."""
        ...


class Positions:
    """Queue positions as the chat was told them; both the dispatching side and cancels announce them."""

    def __init__(self, queue: JobQueue, journal: Journal) -> None:
        self._queue = queue
        self._journal = journal
        self._announced: dict[str, int] = {}
        # One announcement round at a time, so no position is told twice.
        self._lock = threading.Lock()

    def note(self, job_id: str, position: int) -> None:
        """Remember what a job was told when it was accepted."""
        self._announced[job_id] = position

    def forget(self, job_id: str) -> None:
        """The job left the queue (it runs, or it was cancelled)."""
        self._announced.pop(job_id, None)

    def announce(self) -> None:
        """Tell every queued job whose place changed where it now stands."""
        with self._lock:
            for position, job_id in enumerate(self._queue.snapshot(), start=1):
                if self._announced.get(job_id) == position:
                    continue
                self._announced[job_id] = position
                text = f"You are number {position} in the queue."
                if position == 1:
                    text = "You are next in the queue."
                try:
                    self._journal.change(job_id, None, text, "queue", queue_position=position)
                except DistilleryError:
                    log.warning("queued job %s vanished before its position was announced", job_id)


class JournalContext(Stoppable):
    """The daemon's JobContext: every report is a journal change, saved and then announced to watchers."""

    def __init__(
        self,
        journal: Journal,
        job: Job,
        should_stop: Callable[[], bool],
        inputs: JobInputs[bytes] | None = None,
    ) -> None:
        super().__init__(should_stop)
        self._journal = journal
        self.job = job
        self.inputs: JobInputs[bytes] = inputs if inputs is not None else JobInputs()
        self._stage_started = journal.now()
        self._last_progress = 0.0
        self._progress_started = 0.0

    def stage(self, stage: Stage, text: str) -> None:
        """Enter a stage: closes the previous stage's timer and tells the chat what happens now."""
        self.check()
        now = self._journal.now()
        previous = self.job.stage.value
        elapsed = now - self._stage_started
        self._stage_started = now
        self._progress_started = now

        def mutate(job: Job) -> None:
            if previous != Stage.QUEUED.value:
                job.stage_seconds[previous] = round(job.stage_seconds.get(previous, 0.0) + elapsed, 3)
            job.stage = stage

        self.job, _ = self._journal.change(self.job.id, mutate, text)

    def close_stage(self) -> None:
        """Stop the current stage's timer; the job's final event saves the figures."""
        stage = self.job.stage.value
        if stage != Stage.QUEUED.value:
            elapsed = self._journal.now() - self._stage_started
            self.job.stage_seconds[stage] = round(self.job.stage_seconds.get(stage, 0.0) + elapsed, 3)

    def captioned(self, caption: str) -> None:
        def mutate(job: Job) -> None:
            job.caption = caption

        self.job, _ = self._journal.change(
            self.job.id, mutate, f"Caption: {caption}", "captioned", caption=caption
        )

    def classified(self, subject_class: SubjectClass, from_user: bool) -> None:
        def mutate(job: Job) -> None:
            job.subject_class = subject_class

        how = "as you asked" if from_user else "from the picture"
        self.job, _ = self._journal.change(
            self.job.id,
            mutate,
            f"Subject class: {subject_class.value} ({how}).",
            "classified",
            subject_class=subject_class,
            from_user=from_user,
        )

    def note(self, text: str) -> None:
        """A plain sentence for the chat, e.g. that a cached regularization set is used."""
        self.job, _ = self._journal.change(self.job.id, None, text)

    def progress(self, step: int, total: int, loss: float = 0.0, what: str = "Step") -> None:
        """Step progress within the current stage; saved at most every PROGRESS_INTERVAL_S and at the end."""
        now = self._journal.now()
        if step < total and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        elapsed = max(now - self._progress_started, 1e-6)
        rate = step / elapsed
        eta = (total - step) / rate if rate > 0 else 0.0
        fields: dict[str, Any] = {"step": step, "total": total, "loss": loss, "eta_seconds": eta, "rate": rate}
        text = f"{what} {step}/{total}"
        self.job, _ = self._journal.change(self.job.id, None, text, "progress", **fields)


class JobRun:
    """One attempt at a job as the daemon records it: started, reported on, and ended exactly once."""

    def __init__(
        self, journal: Journal, job_id: str, should_stop: Callable[[], bool], cancelled: Callable[[], bool]
    ) -> None:
        self._journal = journal
        self.job_id = job_id
        self._should_stop = should_stop
        self._cancelled = cancelled
        self.started = 0.0
        self.ctx: JournalContext | None = None

    def begin(self) -> JournalContext:
        """Mark the job RUNNING (one more attempt) and give the context its stages report through."""
        self.started = self._journal.now()
        started = self.started

        def start(job: Job) -> None:
            job.state = JobState.RUNNING
            job.attempts += 1
            job.started_at = started
            job.error = ""

        job, _ = self._journal.change(self.job_id, start, "Your job is running.")
        log.info("job %s (%s): started, attempt %d", job.id, job.label, job.attempts)
        self.ctx = JournalContext(self._journal, job, self._should_stop)
        return self.ctx

    @property
    def job(self) -> Job:
        assert self.ctx is not None, "begin() first"
        return self.ctx.job

    def succeed(self, outcome: Outcome) -> None:
        """Store the outcome with the job's final event."""
        assert self.ctx is not None
        self.ctx.close_stage()
        elapsed = self._journal.now() - self.started
        stage_seconds = dict(self.ctx.job.stage_seconds)

        def succeed(job: Job) -> None:
            job.state = JobState.SUCCEEDED
            job.stage = Stage.DONE
            job.stage_seconds = stage_seconds
            job.outputs = [image.name for image in outcome.images]
            if outcome.lora is not None:
                job.likeness = outcome.lora.likeness

        self._journal.finish(self.job_id, succeed, f"{outcome.summary} ({elapsed:.0f} s)", outcome)
        log.info("job %s (%s): succeeded in %.1f s %s", self.job_id, self.job.label, elapsed, stage_seconds)

    def end(self, ending: Ending) -> None:
        """A run that raised: cancelled, interrupted by a stop (back in the queue), or failed."""
        assert self.ctx is not None
        self.ctx.close_stage()
        if not ending.stopped:
            self._fail(ending.reason)
        elif self._cancelled():
            self._journal.finish(self.job_id, self._with_stages(_cancelled), "Cancelled.", ending.kept)
            log.info("job %s (%s): cancelled while running", self.job_id, self.job.label)
        else:
            # A graceful stop: the job did nothing wrong, so this run does not count towards its attempts.
            self._journal.change(
                self.job_id,
                self._with_stages(_interrupted),
                "The distillery is restarting; your job will run again shortly.",
            )
            log.info("job %s (%s): interrupted by shutdown, back in the queue", self.job_id, self.job.label)

    def lost(self, max_attempts: int) -> bool:
        """Its worker died mid-job: back to the queue (True, the caller puts it first) or, after
        ``max_attempts`` such runs, failed: the same rule as a daemon that crashes while running it."""
        job = self.job
        if job.attempts >= max_attempts:
            self._fail(f"Its worker stopped {job.attempts} times while running this job.")
            return False
        self._journal.change(
            self.job_id, self._with_stages(_requeued), "Its worker stopped; your job is first in the queue again."
        )
        log.warning("job %s (%s): its worker died, back at the front of the queue", self.job_id, job.label)
        return True

    def not_started(self) -> None:
        """Its worker was gone before the job's first step: back to the queue (the caller puts it first),
        and this run does not count towards its attempts."""
        self._journal.change(
            self.job_id,
            self._with_stages(_interrupted),
            "Its worker was not ready; your job is first in the queue again.",
        )
        log.info("job %s: its worker was not ready, back at the front of the queue", self.job_id)

    def _fail(self, reason: str) -> None:
        def fail(record: Job) -> None:
            record.state = JobState.FAILED
            record.error = reason

        self._journal.finish(self.job_id, self._with_stages(fail), f"Failed: {reason}")
        log.warning("job %s: failed: %s", self.job_id, reason)

    def _with_stages(self, mutate: Callable[[Job], None]) -> Callable[[Job], None]:
        """``mutate`` plus the stage timings the context kept."""
        stage_seconds = dict(self.ctx.job.stage_seconds) if self.ctx is not None else None

        def apply(job: Job) -> None:
            mutate(job)
            if stage_seconds is not None:
                job.stage_seconds = stage_seconds

        return apply


def _cancelled(job: Job) -> None:
    job.state = JobState.CANCELLED
    job.error = "Cancelled by its owner."


def _interrupted(job: Job) -> None:
    job.state = JobState.QUEUED
    job.stage = Stage.QUEUED
    job.attempts = max(job.attempts - 1, 0)


def _requeued(job: Job) -> None:
    job.state = JobState.QUEUED
    job.stage = Stage.QUEUED
