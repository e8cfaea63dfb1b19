"""The worker side of the Ray executor: one actor per GPU, its models loaded once and kept resident.

``run`` is a streaming generator: the job's pipeline runs on a thread inside the actor and reports through a
``StreamContext``, whose every report becomes a message ``(kind, args)`` yielded back to the daemon as it
happens; the last message is ``("outcome", Outcome)`` or ``("ending", Ending)``. The daemon records each one
in its journal, so it stays the only writer of the store. ``ray.cancel`` on the stream shows up as the task's
cancel flag, which the pipeline sees at its next step. One job at a time: ``run`` calls queue behind each
other; ``describe`` runs in its own concurrency group so it answers while a job runs.

Ray is imported by the methods that need it, so this module loads (and is tested) without Ray too.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from daemon.jobs.contract import JobInputs, Pipeline, Stoppable, ending_of
from daemon.jobs.executor import PROGRESS_INTERVAL_S
from daemon.jobs.model import Job, Stage, SubjectClass
from daemon.pipeline.runner import WorkerFacts, build_runner
from daemon.settings import Settings

log = logging.getLogger(__name__)

# A message from a running job: a report ("stage", "captioned", "classified", "note", "progress") with the
# arguments of that JobContext method, or the last one ("outcome" or "ending").
Message = tuple[str, Any]
REPORTS = frozenset({"stage", "captioned", "classified", "note", "progress"})
# How often the streaming side looks at the task's cancel flag while the job reports nothing.
CANCEL_POLL_S = 0.1


class StreamContext(Stoppable):
    """The JobContext inside an actor: each report is a message for the daemon, in order."""

    def __init__(
        self, job: Job, inputs: JobInputs[bytes], emit: Callable[[Message], None], should_stop: Callable[[], bool]
    ) -> None:
        super().__init__(should_stop)
        self.job = job
        self.inputs = inputs
        self._emit = emit
        self._last_progress = 0.0

    def stage(self, stage: Stage, text: str) -> None:
        self.check()
        self.job.stage = stage
        self._emit(("stage", (stage, text)))

    def captioned(self, caption: str) -> None:
        self.job.caption = caption
        self._emit(("captioned", (caption,)))

    def classified(self, subject_class: SubjectClass, from_user: bool) -> None:
        self.job.subject_class = subject_class
        self._emit(("classified", (subject_class, from_user)))

    def note(self, text: str) -> None:
        self._emit(("note", (text,)))

    def progress(self, step: int, total: int, loss: float = 0.0, what: str = "Step") -> None:
        # The daemon saves progress at most every PROGRESS_INTERVAL_S; sending more would only be dropped there.
        now = time.monotonic()
        if step < total and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        self._emit(("progress", (step, total, loss, what)))


def run_streaming(
    pipeline: Pipeline, job: Job, inputs: JobInputs[bytes], cancelled: Callable[[], bool]
) -> Iterator[Message]:
    """Run one job on a thread and yield its messages as they come, the outcome or ending last.

    ``cancelled`` is polled between messages; once true, the pipeline stops at its next step, and the
    generator still waits for the thread, so the next job never overlaps this one.
    """
    messages: queue.Queue[Message | None] = queue.Queue()
    stop = threading.Event()
    ctx = StreamContext(job, inputs, messages.put, stop.is_set)

    def work() -> None:
        try:
            messages.put(("outcome", pipeline(ctx)))
        except Exception as error:
            ending = ending_of(error, ctx.job)
            if ending.crashed:
                log.exception("job %s: pipeline crashed", job.id)
            messages.put(("ending", ending))
        finally:
            messages.put(None)

    thread = threading.Thread(target=work, name=f"job-{job.id}", daemon=True)
    thread.start()
    try:
        while True:
            try:
                message = messages.get(timeout=CANCEL_POLL_S)
            except queue.Empty:
                if cancelled():
                    stop.set()
                continue
            if message is None:
                return
            yield message
    finally:
        stop.set()
        thread.join()


def _task_cancelled() -> bool:
    import ray

    return bool(ray.get_runtime_context().is_canceled())


class WorkerActor:
    """A Ray actor holding one set of resident models; wrapped with ``ray.remote`` by the executor."""

    def __init__(self, settings: Settings) -> None:
        from daemon.models.resident import load_resident, resolve_model_config

        config = resolve_model_config(settings.models, settings.state_dir)
        resident = load_resident(config)
        self._facts = WorkerFacts.of(resident, node=_node_address(), pid=os.getpid())
        self._runner = build_runner(
            resident, settings.train, settings.reg_images, settings.lora_cache, settings.models
        )
        log.info("worker %d ready: %s on %s", os.getpid(), resident.base_model, resident.device)

    def describe(self) -> WorkerFacts:
        """What this worker runs and where (a new process id after Ray restarted it)."""
        return self._facts

    def run(self, job: Job, inputs: JobInputs[Any]) -> Iterator[Message]:
        """Run ``job`` and stream its messages; the large inputs arrive as object references."""
        import ray

        resolved: JobInputs[bytes] = JobInputs(
            source_png=inputs.source_png,
            source_sha256=inputs.source_sha256,
            loras={name: ray.get(ref) for name, ref in inputs.loras.items()},
            reg_sets={cls: None if ref is None else ray.get(ref) for cls, ref in inputs.reg_sets.items()},
            photos=inputs.photos,
            pictures=inputs.pictures,
        )
        yield from run_streaming(self._runner, job, resolved, _task_cancelled)


def _node_address() -> str:
    import ray

    return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
