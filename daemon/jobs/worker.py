"""The local executor: one thread in the daemon that runs jobs strictly one at a time, off the event loop.

It pops a job id, reads the job's inputs from the store, marks the job RUNNING and hands the pipeline a
context, then stores the outcome with the job's final event. Cancelling the running job, or stopping the
daemon, makes ``JobContext.check`` raise at the pipeline's next step: a cancelled job ends CANCELLED, a job
interrupted by a graceful stop goes back to the queue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from daemon import logs
from daemon.jobs.contract import JobInputs, Pipeline, ending_of
from daemon.jobs.executor import JobRun, Positions, WorkerState, WorkerStatus
from daemon.jobs.journal import Journal
from daemon.jobs.model import Job
from daemon.jobs.queue import JobQueue

log = logging.getLogger(__name__)

# Reads a job's inputs from the store (daemon.jobs.inputs.read_inputs, bound to the store).
InputReader = Callable[[Job], JobInputs[bytes]]


def _no_inputs(job: Job) -> JobInputs[bytes]:
    return JobInputs()


class Worker:
    """Runs queued jobs one at a time on a dedicated thread (the ``local`` executor)."""

    def __init__(
        self,
        queue: JobQueue,
        journal: Journal,
        pipeline: Pipeline,
        max_attempts: int = 2,
        read_inputs: InputReader = _no_inputs,
        device: str = "",
    ) -> None:
        self._queue = queue
        self._journal = journal
        self._pipeline = pipeline
        self._max_attempts = max_attempts
        self._read_inputs = read_inputs
        self._device = device
        self._thread = threading.Thread(target=self._loop, name="distill-worker", daemon=True)
        self._lock = threading.Lock()
        self._current: str | None = None
        self._run: JobRun | None = None
        self._cancelled: set[str] = set()
        self._stopping = threading.Event()
        self._positions = Positions(queue, journal)

    # -- control from the gRPC side -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Stop taking jobs; the running job stops at its next step and goes back to the queue."""
        self._stopping.set()
        self._queue.close()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def workers(self) -> list[WorkerStatus]:
        """The one worker thread and what it runs."""
        with self._lock:
            run = self._run
        if self._stopping.is_set():
            state = WorkerState.STOPPING
        else:
            state = WorkerState.BUSY if run is not None else WorkerState.IDLE
        job_id = run.job_id if run is not None else ""
        stage = run.ctx.job.stage if run is not None and run.ctx is not None else None
        return [WorkerStatus(id="local", device=self._device, state=state, job_id=job_id, stage=stage)]

    def cancel(self, job_id: str) -> str | None:
        """Take a queued job out ("removed") or ask the running one to stop at its next step ("stopping").

        None when the job is neither waiting nor running. The lock makes this exact even while the worker is
        between taking a job from the queue and starting it.
        """
        with self._lock:
            if self._queue.remove(job_id):
                self._positions.forget(job_id)
                return "removed"
            if self._current == job_id:
                self._cancelled.add(job_id)
                return "stopping"
            return None

    def note_position(self, job_id: str, position: int) -> None:
        """Remember the position a job was told when it was accepted, so it is not announced twice."""
        self._positions.note(job_id, position)

    def announce_positions(self) -> None:
        """Tell every queued job whose place changed where it now stands."""
        self._positions.announce()

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
            self._positions.forget(job_id)
            # Every log line of this thread names the job while it runs.
            token = logs.current_job.set(job_id)
            try:
                self._positions.announce()
                self._execute(job_id)
            except Exception:
                log.exception("job %s: the worker failed to record the job's end", job_id)
            finally:
                logs.current_job.reset(token)
                with self._lock:
                    self._current = None
                    self._run = None
                    self._cancelled.discard(job_id)

    def _should_stop(self, job_id: str) -> bool:
        return self._stopping.is_set() or job_id in self._cancelled

    def _execute(self, job_id: str) -> None:
        run = JobRun(
            self._journal, job_id, lambda: self._should_stop(job_id), lambda: job_id in self._cancelled
        )
        with self._lock:
            self._run = run
        context = run.begin()
        try:
            context.inputs = self._read_inputs(context.job)
            outcome = self._pipeline(context)
        except Exception as error:
            ending = ending_of(error, context.job)
            if ending.crashed:
                log.exception("job %s: pipeline crashed", job_id)
            run.end(ending)
            return
        run.succeed(outcome)
