"""Whole jobs as the daemon runs them, with no gRPC: the store, journal, queue, worker and pipelines of
``daemon.rpc.server.Daemon.load``, on a random-weight resident and a store in a temporary folder.

A distill job is queued as ``Distillery.submit`` leaves it (job record, its source image and first event in one
transaction, then the queue) and timed from the worker taking it to its LoRA stored with the job's final event.
The class-image set is put in the store first, as the first job of a class leaves it for every later one.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from daemon.jobs.hub import EventHub
from daemon.jobs.inputs import StoreBlobs, read_inputs
from daemon.jobs.journal import Journal
from daemon.jobs.model import Event, Job, JobState, Requester, SubjectClass
from daemon.jobs.queue import JobQueue
from daemon.jobs.worker import Worker
from daemon.models.resident import Resident
from daemon.pipeline.hparams import TrainConfig
from daemon.pipeline.image import demo_portrait
from daemon.pipeline.regularization import RegularizationSet, reg_cache_key
from daemon.pipeline.runner import WorkerFacts, build_runner
from daemon.store.lmdb_store import Store, StoreConfig

OWNER = Requester(platform="bench", user="gpu-check")
# The daemon's default class-set size.
REG_IMAGES = 8


@dataclass
class Mark:
    """One recorded event of a job: when (perf_counter), its stage, kind and step."""

    at: float
    stage: str
    kind: str
    step: int


class TimedJournal(Journal):
    """The daemon's journal, noting when each event was recorded and waking whoever waits for a job's end."""

    def __init__(self, store: Store, hub: EventHub) -> None:
        super().__init__(store, hub)
        self.marks: dict[str, list[Mark]] = {}
        self.finished: dict[str, threading.Event] = {}

    def _note(self, event: Event) -> None:
        mark = Mark(time.perf_counter(), event.stage.value, event.kind, event.step)
        self.marks.setdefault(event.job_id, []).append(mark)

    def change(
        self, job_id: str, mutate: Callable[[Job], None] | None, text: str, kind: str = "", **fields: Any
    ) -> tuple[Job, Event]:
        job, event = super().change(job_id, mutate, text, kind, **fields)
        self._note(event)
        return job, event

    def finish(self, job_id: str, *args: Any, **kwargs: Any) -> tuple[Job, Event]:
        job, event = super().finish(job_id, *args, **kwargs)
        self._note(event)
        self.finished.setdefault(job_id, threading.Event()).set()
        return job, event


@dataclass
class JobBench:
    """A worker over a temporary store, ready to run distill jobs on ``resident``."""

    resident: Resident
    folder: Path
    train: TrainConfig
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    def __post_init__(self) -> None:
        self.store = Store(StoreConfig(self.folder / "store"))
        self.journal = TimedJournal(self.store, EventHub(self.loop))
        self.queue = JobQueue()
        # The worker thread and pipelines the daemon's local executor builds, inputs read from the store.
        runner = build_runner(self.resident, self.train, REG_IMAGES, lora_cache=8)
        blobs = StoreBlobs(self.store)
        reg_key = WorkerFacts.of(self.resident).reg_key(self.train.resolution)
        self.worker = Worker(
            self.queue, self.journal, runner, read_inputs=lambda job: read_inputs(self.store, job, blobs, reg_key)
        )
        latent = self.train.resolution // self.resident.pipeline.vae_scale_factor
        reg = RegularizationSet(
            SubjectClass.WOMAN, torch.randn(REG_IMAGES, 4, latent, latent), REG_IMAGES, "generated"
        )
        key = reg_cache_key(self.resident.base_model_hash, SubjectClass.WOMAN, self.train.resolution)
        self.store.put_reg_set(key, reg.to_bytes())
        self.worker.start()

    def run_job(self, name: str, steps: int, timeout: float) -> dict[str, Any]:
        """Queue one distill job of ``steps`` steps, wait for its end, and say where its time went.

        A job still running after ``timeout`` seconds is cancelled; its figures then say how far it got.
        """
        png = demo_portrait()
        job = Job(
            id=f"bench-{name}",
            lora_name=name,
            owner=OWNER,
            source="upload",
            image_name=f"{name}.png",
            requested_class=SubjectClass.WOMAN,
            flip=True,
            train_steps=steps,
            created_at=time.time(),
        )
        accepted = self.journal.new_event(job, "queued by the benchmark", 1, "accepted")
        self.store.create_job(job, accepted, png, hashlib.sha256(png).hexdigest())
        done = self.journal.finished.setdefault(job.id, threading.Event())
        queued = time.perf_counter()
        self.queue.push(job.id)
        finished = done.wait(timeout)
        marks = list(self.journal.marks.get(job.id, []))
        progress = [m for m in marks if m.kind == "progress" and m.stage == "train"]
        figures: dict[str, Any] = {"steps": steps, "finished": finished}
        if len(progress) > 1:
            # Training progress as the job's own events saw it (saved at most twice a second).
            start, end = progress[0], progress[-1]
            figures["steps_done"] = end.step
            figures["train_steps_per_s"] = (end.step - start.step) / (end.at - start.at)
        if not finished:
            # Out of time: stop the job at its next step and keep what was measured.
            self.worker.cancel(job.id)
            return figures
        stored = self.store.get_job(job.id)
        if stored.state != JobState.SUCCEEDED:
            raise RuntimeError(f"job {name} ended {stored.state.value}: {stored.error}")
        running = next(m.at for m in marks if m.kind == "" and m.stage == "queued")
        first_step = next(m.at for m in progress if m.step == 1)
        return figures | {
            "dequeue_to_saved_s": marks[-1].at - running,
            "queued_to_saved_s": marks[-1].at - queued,
            "dequeue_to_first_step_s": first_step - running,
            "train_first_to_last_event_s": progress[-1].at - first_step,
            "stage_seconds": stored.stage_seconds,
            "lora_bytes": self.store.get_lora(name).size_bytes,
        }

    def close(self) -> None:
        """Stop the worker and close the store."""
        self.worker.stop(timeout=60)
        self.store.close()
        self.loop.close()
