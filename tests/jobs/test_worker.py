"""The one worker: strictly serial, cancel queued and running jobs, failures recorded, graceful stop re-queues."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.errors import BadImage
from daemon.jobs.contract import JobContext, Outcome
from daemon.jobs.executor import WorkerState
from daemon.jobs.hub import EventHub
from daemon.jobs.journal import Journal
from daemon.jobs.model import JobState, LoraRecord, Stage, SubjectClass
from daemon.jobs.queue import JobQueue
from daemon.jobs.worker import Worker
from daemon.store.lmdb_store import Store, StoreConfig
from tests.records import first_event, make_job


def outcome_for(ctx: JobContext) -> Outcome:
    job = ctx.job
    lora = LoraRecord(
        name=job.lora_name,
        owner=job.owner,
        job_id=job.id,
        subject_class=SubjectClass.PERSON,
        caption="",
        instance_prompt="",
        base_model="fake",
        base_model_hash="0",
        image_name=job.image_name,
        image_sha256="",
        size_bytes=4,
        created_at=time.time(),
        tokens=[],
        training={},
    )
    return Outcome(lora=lora, lora_file=b"lora", summary=f"{job.lora_name} is ready")


class Harness:
    def __init__(self, store: Store, pipeline: Callable[[JobContext], Outcome]) -> None:
        self.store = store
        self.queue = JobQueue()
        self.journal = Journal(store, EventHub(asyncio.get_running_loop()))
        self.worker = Worker(self.queue, self.journal, pipeline)

    def add(self, index: int) -> str:
        job = make_job(f"{index:04d}", f"name{index}")
        self.store.create_job(job, first_event(job), None, "")
        self.queue.push(job.id)
        return job.id

    async def wait_state(self, job_id: str, *states: JobState, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.store.get_job(job_id).state not in states:
            assert time.monotonic() < deadline, f"{job_id} stuck in {self.store.get_job(job_id).state}"
            await asyncio.sleep(0.01)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(StoreConfig(path=tmp_path / "store"))
    yield store
    store.close()


async def test_jobs_run_one_at_a_time_in_order(store: Store) -> None:
    active = 0
    most = 0
    order: list[str] = []
    lock = threading.Lock()

    def pipeline(ctx: JobContext) -> Outcome:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
            order.append(ctx.job.id)
        ctx.stage(Stage.TRAIN, "training")
        for step in range(1, 4):
            time.sleep(0.01)
            ctx.progress(step, 3, loss=0.5)
        with lock:
            active -= 1
        return outcome_for(ctx)

    harness = Harness(store, pipeline)
    ids = [harness.add(index) for index in range(3)]
    harness.worker.start()
    for job_id in ids:
        await harness.wait_state(job_id, JobState.SUCCEEDED)
    harness.worker.stop(5)

    assert most == 1
    assert order == ids
    for job_id in ids:
        events = store.events_after(job_id, 0)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))  # no gaps, no repeats
        assert events[-1].kind == "finished" and events[-1].state == JobState.SUCCEEDED
        assert any(e.kind == "progress" and e.step == 3 and e.total == 3 for e in events)
        job = store.get_job(job_id)
        assert job.attempts == 1 and "train" in job.stage_seconds
        assert store.lora_file(job.lora_name) == b"lora"


async def test_queued_positions_are_announced_as_the_queue_moves(store: Store) -> None:
    release = threading.Event()

    def pipeline(ctx: JobContext) -> Outcome:
        release.wait(5)
        return outcome_for(ctx)

    harness = Harness(store, pipeline)
    first, _second, third = (harness.add(index) for index in range(3))
    harness.worker.start()
    await harness.wait_state(first, JobState.RUNNING)
    release.set()
    await harness.wait_state(third, JobState.SUCCEEDED)
    harness.worker.stop(5)
    positions = [e.queue_position for e in store.events_after(third, 0) if e.kind == "queue"]
    assert positions[-1] == 1 and positions == sorted(positions, reverse=True)


async def test_cancel_removes_a_queued_job_and_stops_a_running_one_at_its_next_step(store: Store) -> None:
    steps_after_cancel: list[int] = []
    cancel_sent = threading.Event()

    def pipeline(ctx: JobContext) -> Outcome:
        ctx.stage(Stage.TRAIN, "training")
        for step in range(1, 10_000):
            if cancel_sent.is_set() and ctx.job.id == running:
                steps_after_cancel.append(step)
            ctx.check()
            time.sleep(0.005)
        return outcome_for(ctx)

    harness = Harness(store, pipeline)
    running, queued, last = (harness.add(index) for index in range(3))
    harness.worker.start()
    await harness.wait_state(running, JobState.RUNNING)
    [status] = harness.worker.workers()
    assert (status.id, status.state, status.job_id) == ("local", WorkerState.BUSY, running)

    assert harness.worker.cancel(queued) == "removed"
    harness.journal.finish(queued, lambda job: setattr(job, "state", JobState.CANCELLED), "Cancelled.")
    assert harness.worker.cancel(running) == "stopping"
    cancel_sent.set()
    await harness.wait_state(running, JobState.CANCELLED)
    # The job stopped at its next step, and the worker went on to the next job in the queue.
    assert len(steps_after_cancel) <= 2
    await harness.wait_state(last, JobState.RUNNING)
    assert harness.worker.cancel(last) == "stopping"
    await harness.wait_state(last, JobState.CANCELLED)
    harness.worker.stop(5)
    assert store.get_job(queued).state == JobState.CANCELLED
    assert harness.worker.cancel(queued) is None


async def test_failures_are_recorded_with_a_sentence_and_the_worker_goes_on(store: Store) -> None:
    def pipeline(ctx: JobContext) -> Outcome:
        if ctx.job.id == "0000":
            raise BadImage("That picture has no face in it.")
        if ctx.job.id == "0001":
            raise RuntimeError("CUDA exploded")
        return outcome_for(ctx)

    harness = Harness(store, pipeline)
    ids = [harness.add(index) for index in range(3)]
    harness.worker.start()
    await harness.wait_state(ids[2], JobState.SUCCEEDED)
    harness.worker.stop(5)
    assert store.get_job(ids[0]).state == JobState.FAILED
    assert store.get_job(ids[0]).error == "That picture has no face in it."
    assert store.get_job(ids[1]).error == "Training failed because of an internal error (RuntimeError)."
    assert "CUDA exploded" not in store.events_after(ids[1], 0)[-1].text


async def test_a_graceful_stop_puts_the_running_job_back_in_the_queue(store: Store) -> None:
    started = threading.Event()

    def pipeline(ctx: JobContext) -> Outcome:
        ctx.stage(Stage.TRAIN, "training")
        started.set()
        while True:
            ctx.check()
            time.sleep(0.005)

    harness = Harness(store, pipeline)
    job_id = harness.add(0)
    harness.worker.start()
    await asyncio.to_thread(started.wait, 5)
    assert await asyncio.to_thread(harness.worker.stop, 5)
    job = store.get_job(job_id)
    assert job.state == JobState.QUEUED and job.stage == Stage.QUEUED
    assert job.attempts == 0  # a clean stop does not count against the job
    assert "restarting" in store.events_after(job_id, 0)[-1].text
