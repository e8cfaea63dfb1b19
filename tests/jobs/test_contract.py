"""Pure stages: inputs read before dispatch, the whole outcome stored in one go, a lost worker's job re-queued
first once and then failed, and the actor side's message stream (without Ray)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.errors import BadImage, NotFound
from daemon.jobs.contract import JobContext, JobInputs, Outcome, RegSet, StoppedWithResults, ending_of
from daemon.jobs.executor import JobRun, WorkerState
from daemon.jobs.hub import EventHub
from daemon.jobs.inputs import StoreBlobs, read_inputs
from daemon.jobs.journal import Journal
from daemon.jobs.model import GenerateParams, JobKind, JobState, LoraUse, Stage, SubjectClass
from daemon.jobs.queue import JobQueue
from daemon.store.lmdb_store import Store, StoreConfig
from tests.records import first_event, lora_record, make_job


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(StoreConfig(path=tmp_path / "store"))
    yield store
    store.close()


def reg_key(subject_class: SubjectClass) -> str:
    return f"v1/hash/{subject_class.value}/64"


def test_a_distill_job_gets_its_portrait_and_each_class_s_cached_set(store: Store) -> None:
    job = make_job("0001", "rifttami")
    store.create_job(job, first_event(job), b"png-bytes", "ab" * 32)
    store.put_reg_set(reg_key(SubjectClass.WOMAN), b"woman-latents")

    inputs = read_inputs(store, job, StoreBlobs(store), reg_key)
    assert inputs.source_png == b"png-bytes" and inputs.source_sha256 == "ab" * 32
    # The class is decided during the job, so every class's set travels, None where none is cached yet.
    man, woman, person = SubjectClass.MAN, SubjectClass.WOMAN, SubjectClass.PERSON
    assert inputs.reg_sets == {man: None, woman: b"woman-latents", person: None}

    job.requested_class = SubjectClass.MAN
    assert read_inputs(store, job, StoreBlobs(store), reg_key).reg_sets == {SubjectClass.MAN: None}


def test_a_generation_job_gets_its_lora_files_and_fails_cleanly_when_one_was_deleted(store: Store) -> None:
    params = GenerateParams("p", "p", [LoraUse("rifttami", 1.0)], "", 1, 7.0, 3, 64, 64, 1)
    job = make_job("0002", "")
    job.kind, job.generate = JobKind.GENERATE, params
    owner = make_job("0001", "rifttami")
    store.create_job(owner, first_event(owner), None, "")
    store.finish_job(owner, first_event(owner), lora_record("rifttami"), b"lora-file")

    assert read_inputs(store, job, StoreBlobs(store), reg_key).loras == {"rifttami": b"lora-file"}
    store.delete_lora("rifttami")
    with pytest.raises(NotFound, match="rifttami"):
        read_inputs(store, job, StoreBlobs(store), reg_key)


async def test_the_outcome_is_stored_whole_with_the_final_event(store: Store) -> None:
    journal = Journal(store, EventHub(asyncio.get_running_loop()))
    job = make_job("0003", "")
    job.kind, job.inputs = JobKind.REG_IMPORT, ["0003-reg-1.png"]
    store.create_job(job, first_event(job), None, "", [("0003-reg-1.png", b"photo", "cd" * 32)])
    run = JobRun(journal, job.id, lambda: False, lambda: False)
    run.begin()
    run.succeed(Outcome("imported", reg_set=RegSet("v1/hash/man/64", b"latents"), delete_images=job.inputs))

    assert store.get_job(job.id).state == JobState.SUCCEEDED
    assert store.get_reg_set("v1/hash/man/64") == b"latents"
    with pytest.raises(NotFound):
        store.get_image("0003-reg-1.png")


async def test_a_job_whose_worker_died_runs_once_more_then_fails(store: Store) -> None:
    journal = Journal(store, EventHub(asyncio.get_running_loop()))
    job = make_job("0004", "rifttami")
    store.create_job(job, first_event(job), None, "")

    first = JobRun(journal, job.id, lambda: False, lambda: False)
    first.begin().stage(Stage.TRAIN, "training")
    assert first.lost(max_attempts=2) is True
    requeued = store.get_job(job.id)
    assert requeued.state == JobState.QUEUED and requeued.attempts == 1

    second = JobRun(journal, job.id, lambda: False, lambda: False)
    second.begin()
    assert second.lost(max_attempts=2) is False
    failed = store.get_job(job.id)
    assert failed.state == JobState.FAILED and "stopped 2 times" in failed.error
    events = store.events_after(job.id, 0)
    assert [event.seq for event in events] == list(range(1, len(events) + 1))


def test_a_job_that_lost_its_worker_goes_first() -> None:
    queue = JobQueue()
    woken: list[str] = []
    queue.listen(lambda: woken.append("push"))
    queue.push("waiting")
    queue.push_front("lost")
    assert queue.snapshot() == ["lost", "waiting"] and woken == ["push", "push"]


def test_endings_keep_a_refusal_s_sentence_and_hide_a_crash_s_text() -> None:
    job = make_job("0005", "rifttami")
    assert ending_of(BadImage("No face in that picture."), job).reason == "No face in that picture."
    crash = ending_of(RuntimeError("secret path /srv/x"), job)
    assert crash.crashed and "secret" not in crash.reason and "RuntimeError" in crash.reason
    kept = Outcome("", reg_set=RegSet("k", b"half"))
    stopped = ending_of(StoppedWithResults(kept), job)
    assert stopped.stopped and stopped.kept is kept


# -- the actor side, without Ray ------------------------------------------------------------------------------


def test_an_actor_streams_reports_in_order_and_the_outcome_last() -> None:
    from daemon.cluster.actor import REPORTS, run_streaming

    def pipeline(ctx: JobContext) -> Outcome:
        ctx.stage(Stage.CAPTION, "Describing.")
        ctx.captioned("a person")
        ctx.classified(SubjectClass.PERSON, False)
        for step in range(1, 4):
            ctx.progress(step, 3)
        return Outcome(summary="done", lora_file=ctx.inputs.source_png)

    job = make_job("0006", "rifttami")
    messages = list(run_streaming(pipeline, job, JobInputs(source_png=b"png"), lambda: False))
    kinds = [kind for kind, _ in messages]
    assert kinds[:3] == ["stage", "captioned", "classified"] and kinds[-2:] == ["progress", "outcome"]
    assert set(kinds[:-1]) <= REPORTS
    assert messages[-2][1][:2] == (3, 3)  # the last step always goes out
    assert messages[-1][1].lora_file == b"png"


def test_a_cancelled_stream_stops_the_pipeline_at_its_next_step() -> None:
    from daemon.cluster.actor import run_streaming

    running = threading.Event()
    cancel = threading.Event()
    steps: list[int] = []

    def pipeline(ctx: JobContext) -> Outcome:
        ctx.stage(Stage.TRAIN, "Training.")
        for step in range(1, 1_000_000):
            steps.append(step)
            running.set()
            cancel.wait(0.01)
            ctx.check()
        raise AssertionError("never cancelled")

    stream = run_streaming(pipeline, make_job("0007", "rifttami"), JobInputs(), cancel.is_set)
    assert next(stream)[0] == "stage"
    running.wait(5)
    cancel.set()
    rest = list(stream)
    assert rest[-1][0] == "ending" and rest[-1][1].stopped


def test_reconcile_adds_for_new_gpus_and_removes_lost_then_idle_never_busy() -> None:
    from daemon.cluster.executor import plan

    idle, busy, lost = WorkerState.IDLE, WorkerState.BUSY, WorkerState.LOST
    assert plan(3, [("ray-0", busy)]) == (2, [])
    assert plan(1, [("ray-0", busy), ("ray-1", idle), ("ray-2", lost)]) == (0, ["ray-2", "ray-1"])
    assert plan(0, [("ray-0", busy)]) == (0, [])
    assert plan(2, [("ray-0", busy), ("ray-1", idle)]) == (0, [])


def test_status_lists_every_worker_with_its_job_and_stage() -> None:
    from distillery.v1 import distillery_pb2 as pb

    from daemon.jobs.executor import WorkerStatus
    from daemon.rpc.convert import worker_to_pb

    busy = WorkerStatus("ray-1", "cuda", WorkerState.BUSY, "0001", Stage.TRAIN, node="10.0.0.2", pid=4242)
    message = worker_to_pb(busy)
    assert (message.id, message.device, message.job_id, message.node, message.pid) == (
        "ray-1",
        "cuda",
        "0001",
        "10.0.0.2",
        4242,
    )
    assert message.state == pb.WORKER_STATE_BUSY and message.stage == pb.STAGE_TRAIN
    idle = worker_to_pb(WorkerStatus("local", "cpu", WorkerState.IDLE))
    assert idle.state == pb.WORKER_STATE_IDLE and idle.stage == pb.STAGE_UNSPECIFIED and not idle.job_id
