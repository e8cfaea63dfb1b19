"""Drive a store through the writes the daemon makes (submit, start, finish, fail, cancel, requeue, LoRA changes).

Each step is the store call the journal or the service makes for it, with the record changed the same way, so
tests can replay any sequence of them and check the indexes after each.
"""

from __future__ import annotations

import time
from dataclasses import replace

from daemon.jobs.model import Event, GenerateParams, Job, JobKind, JobState, LoraRecord, Requester, Stage
from daemon.store.lmdb_store import Store
from tests.records import ALICE, BOB, lora_record, make_job

CAROL = Requester("slack", "T1", "U1", "C1")
OWNERS = (ALICE, BOB, CAROL)


def params(count: int) -> GenerateParams:
    return GenerateParams("p", "p", [], "", seed=1, cfg=7.0, steps=2, width=64, height=64, count=count)


class Scenario:
    """A store and the jobs it was given; ``pick`` chooses among the jobs a step applies to (modulo)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.created = 0

    def _event(self, job: Job, text: str, kind: str = "") -> Event:
        return Event(job.id, job.last_seq + 1, time.time(), job.state, job.stage, text, kind)

    def _jobs(self, *states: JobState) -> list[Job]:
        return [job for job in self.store.jobs() if job.state in states]

    def create(self, owner: Requester, kind: JobKind = JobKind.DISTILL, images: int = 1) -> Job:
        # Ids of several lengths ("j9" < "j10" is false as text): key order, not number order, is creation order.
        self.created += 1
        job = make_job(f"j{self.created}", f"name{self.created}", owner)
        if kind == JobKind.GENERATE:
            job = replace(job, kind=kind, lora_name="", image_name="", generate=params(images))
        first = Event(job.id, 1, time.time(), job.state, job.stage, "accepted", "accepted", queue_position=1)
        png = b"png" if job.image_name else None
        return self.store.create_job(job, first, png, "sha")

    def start(self, pick: int) -> None:
        if queued := self._jobs(JobState.QUEUED):
            job = queued[pick % len(queued)]
            job.state, job.attempts, job.started_at = JobState.RUNNING, job.attempts + 1, time.time()
            job.stage = Stage.TRAIN
            self.store.record(job, self._event(job, "running"))

    def requeue(self, pick: int) -> None:
        if running := self._jobs(JobState.RUNNING):
            job = running[pick % len(running)]
            job.state, job.stage = JobState.QUEUED, Stage.QUEUED
            self.store.record(job, self._event(job, "back in the queue"))

    def finish(self, job: Job, state: JobState, ended: float | None = None) -> None:
        job.state = state
        job.finished_at = time.time() if ended is None else ended
        job.stage_seconds = {"train": 1.25, "save": 0.5} if job.started_at else {}
        lora, lora_file = None, None
        if state == JobState.SUCCEEDED:
            job.stage = Stage.DONE
            if job.kind == JobKind.GENERATE and job.generate is not None:
                job.outputs = [f"{job.id}-{n}.png" for n in range(1, job.generate.count + 1)]
            else:
                lora, lora_file = lora_record(job.lora_name, owner=job.owner), b"safetensors"
        self.store.finish_job(job, self._event(job, state.value, "finished"), lora, lora_file)

    def succeed(self, pick: int, ended: float | None = None) -> None:
        if running := self._jobs(JobState.RUNNING):
            self.finish(running[pick % len(running)], JobState.SUCCEEDED, ended)

    def fail(self, pick: int) -> None:
        if running := self._jobs(JobState.RUNNING, JobState.QUEUED):
            job = running[pick % len(running)]
            job.error = ("Training failed because of an internal error (X).", "out of memory", "bad")[pick % 3]
            self.finish(job, JobState.FAILED)

    def cancel(self, pick: int) -> None:
        if active := self._jobs(JobState.RUNNING, JobState.QUEUED):
            self.finish(active[pick % len(active)], JobState.CANCELLED)

    def client_state(self, pick: int) -> None:
        if jobs := self.store.jobs():
            job = jobs[pick % len(jobs)]
            self.store.put_job(replace(job, client_state=b"chat 1, message 2"))

    def publish(self, pick: int) -> None:
        if loras := self.store.loras():
            lora = loras[pick % len(loras)]

            def flip(record: LoraRecord) -> None:
                record.public = not record.public

            self.store.update_lora(lora.name, flip)

    def delete_lora(self, pick: int) -> None:
        if loras := self.store.loras():
            self.store.delete_lora(loras[pick % len(loras)].name)

    def mixed(self) -> None:
        """Two distillations and two generations per owner; some run, succeed, fail (one of each reason) or
        are cancelled, one LoRA goes public."""
        for owner in OWNERS * 2:
            self.create(owner)
            self.create(owner, JobKind.GENERATE, images=2)
        for pick in range(8):
            self.start(pick)
        for pick in range(4):
            self.succeed(pick)
        for pick in range(3):
            self.fail(pick)
        self.cancel(0)
        self.publish(0)

    def delete_outputs(self, pick: int) -> None:
        if made := [job for job in self.store.jobs() if job.outputs]:
            self.store.delete_images(made[pick % len(made)].outputs)
