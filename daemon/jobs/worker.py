"""The one worker: a thread that runs GPU jobs strictly one at a time, off the gRPC event loop.

It pops a job id, marks the job RUNNING, hands a JobContext to the pipeline and records how the job ended.
Cancelling the running job, or stopping the daemon, makes ``JobContext.check`` raise at the pipeline's next
step: a cancelled job ends CANCELLED, a job interrupted by a graceful stop goes back to the queue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from daemon.errors import DistilleryError, JobCancelled
from daemon.jobs.journal import Journal
from daemon.jobs.model import Job, JobKind, JobState, LoraRecord, Stage, SubjectClass
from daemon.jobs.queue import JobQueue

log = logging.getLogger(__name__)

# A progress event is saved (and fsynced) at most this often; the last step is always saved.
PROGRESS_INTERVAL_S = 0.5


@dataclass
class OutputImage:
    """A generated image: its name (``<job id>-<n>.png``), PNG bytes, and the facts GetImageInfo tells."""

    name: str
    png: bytes
    # JSON-safe: "seed", "width", "height", "parameters" (A1111 text), "loras" ([{"name", "weight"}]).
    info: dict[str, Any]


@dataclass
class Outcome:
    """What a successful pipeline run hands back to be stored with the job's last event, all at once."""

    summary: str
    lora: LoraRecord | None = None  # a distill job's LoRA
    lora_file: bytes | None = None
    images: list[OutputImage] = field(default_factory=list)  # a generation job's images


class JobContext:
    """What a pipeline stage may do with its job: report stages and progress, and check for cancellation."""

    def __init__(self, journal: Journal, job: Job, should_stop: Callable[[], bool]) -> None:
        self._journal = journal
        self.job = job
        self._should_stop = should_stop
        self._stage_started = journal.now()
        self._last_progress = 0.0
        self._progress_started = 0.0

    def check(self) -> None:
        """Raise JobCancelled when the job was cancelled or the daemon is stopping."""
        if self._should_stop():
            raise JobCancelled("The job was stopped.")

    def should_stop(self) -> bool:
        return self._should_stop()

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


Pipeline = Callable[[JobContext], Outcome]


class Worker:
    """Runs queued jobs one at a time on a dedicated thread."""

    def __init__(self, queue: JobQueue, journal: Journal, pipeline: Pipeline, max_attempts: int = 2) -> None:
        self._queue = queue
        self._journal = journal
        self._pipeline = pipeline
        self._max_attempts = max_attempts
        self._thread = threading.Thread(target=self._loop, name="distill-worker", daemon=True)
        self._lock = threading.Lock()
        self._current: str | None = None
        self._cancelled: set[str] = set()
        self._stopping = threading.Event()
        self._announced: dict[str, int] = {}
        # Both the worker thread and cancels on the gRPC side announce positions; one at a time, no repeats.
        self._announce_lock = threading.Lock()
        self.current_stage: Stage | None = None

    # -- control from the gRPC side -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Stop taking jobs; the running job stops at its next step and goes back to the queue."""
        self._stopping.set()
        self._queue.close()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def current(self) -> str | None:
        with self._lock:
            return self._current

    def cancel(self, job_id: str) -> str | None:
        """Take a queued job out ("removed") or ask the running one to stop at its next step ("stopping").

        None when the job is neither waiting nor running. The lock makes this exact even while the worker is
        between taking a job from the queue and starting it.
        """
        with self._lock:
            if self._queue.remove(job_id):
                self._announced.pop(job_id, None)
                return "removed"
            if self._current == job_id:
                self._cancelled.add(job_id)
                return "stopping"
            return None

    def note_position(self, job_id: str, position: int) -> None:
        """Remember the position a job was told when it was accepted, so it is not announced twice."""
        self._announced[job_id] = position

    def announce_positions(self) -> None:
        """Tell every queued job whose place changed where it now stands."""
        with self._announce_lock:
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

    # -- the thread -----------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            if not self._queue.wait(timeout=0.5):
                continue
            with self._lock:
                job_id = self._queue.pop_nowait()
                if job_id is None:
                    continue
                self._current = job_id
            self._announced.pop(job_id, None)
            try:
                self.announce_positions()
                self._run(job_id)
            except Exception:
                log.exception("job %s: the worker failed to record the job's end", job_id)
            finally:
                with self._lock:
                    self._current = None
                    self._cancelled.discard(job_id)
                self.current_stage = None

    def _should_stop(self, job_id: str) -> bool:
        return self._stopping.is_set() or job_id in self._cancelled

    def _run(self, job_id: str) -> None:
        started = self._journal.now()

        def start(job: Job) -> None:
            job.state = JobState.RUNNING
            job.attempts += 1
            job.started_at = started
            job.error = ""

        job, _ = self._journal.change(job_id, start, "Your job is running.")
        log.info("job %s (%s): started, attempt %d", job.id, job.label, job.attempts)
        context = JobContext(self._journal, job, lambda: self._should_stop(job_id))
        try:
            outcome = self._pipeline(context)
        except JobCancelled:
            context.close_stage()
            self._stopped(context.job)
            return
        except DistilleryError as error:
            context.close_stage()
            self._fail(context.job, str(error))
            return
        except Exception as error:
            log.exception("job %s: pipeline crashed", job_id)
            context.close_stage()
            what = {JobKind.GENERATE: "Generation", JobKind.REG_IMPORT: "The import"}.get(job.kind, "Training")
            self._fail(context.job, f"{what} failed because of an internal error ({type(error).__name__}).")
            return
        context.close_stage()
        elapsed = self._journal.now() - started
        stage_seconds = dict(context.job.stage_seconds)

        def succeed(job: Job) -> None:
            job.state = JobState.SUCCEEDED
            job.stage = Stage.DONE
            job.stage_seconds = stage_seconds
            job.outputs = [image.name for image in outcome.images]

        self._journal.finish(
            job_id,
            succeed,
            f"{outcome.summary} ({elapsed:.0f} s)",
            outcome.lora,
            outcome.lora_file,
            outcome.images,
        )
        log.info("job %s (%s): succeeded in %.1f s %s", job_id, job.label, elapsed, stage_seconds)

    def _fail(self, job: Job, reason: str) -> None:
        stage_seconds = dict(job.stage_seconds)

        def fail(record: Job) -> None:
            record.state = JobState.FAILED
            record.error = reason
            record.stage_seconds = stage_seconds

        self._journal.finish(job.id, fail, f"Failed: {reason}")
        log.warning("job %s (%s): failed: %s", job.id, job.label, reason)

    def _stopped(self, job: Job) -> None:
        stage_seconds = dict(job.stage_seconds)
        if job.id in self._cancelled:

            def cancel(record: Job) -> None:
                record.state = JobState.CANCELLED
                record.error = "Cancelled by its owner."
                record.stage_seconds = stage_seconds

            self._journal.finish(job.id, cancel, "Cancelled.")
            log.info("job %s (%s): cancelled while running", job.id, job.label)
            return

        # A graceful stop: the job did nothing wrong, so this run does not count towards its attempts.
        def requeue(record: Job) -> None:
            record.state = JobState.QUEUED
            record.stage = Stage.QUEUED
            record.attempts = max(record.attempts - 1, 0)
            record.stage_seconds = stage_seconds

        self._journal.change(job.id, requeue, "The distillery is restarting; your job will run again shortly.")
        log.info("job %s (%s): interrupted by shutdown, back in the queue", job.id, job.label)
