"""Pruning event logs: only jobs that ended before the cut-off lose events, and each keeps its final one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from daemon.jobs.model import Event, JobState, Stage
from daemon.store import lmdb_store
from daemon.store.lmdb_store import Pruned, Store, StoreConfig
from tests.records import ALICE, BOB
from tests.store.brute import assert_indexes_exact
from tests.store.scenario import Scenario

DAY = 86400.0
PROGRESS_EVENTS = 20


def history(store: Store) -> tuple[list[str], list[str], str]:
    """Three jobs that ended 10 days ago, one that ended an hour ago and one still running, each with progress.

    Returns (old job ids, recent job ids, running job id).
    """
    scenario = Scenario(store)
    now = time.time()
    ended = {}
    for owner, ended_at in ((ALICE, now - 10 * DAY), (BOB, now - 10 * DAY), (ALICE, now - 10 * DAY - 5)):
        ended[scenario.create(owner).id] = ended_at
    recent = scenario.create(BOB).id
    running = scenario.create(ALICE).id
    for job_id in [*ended, recent, running]:
        job = store.get_job(job_id)
        job.state, job.stage, job.started_at = JobState.RUNNING, Stage.TRAIN, now - 11 * DAY
        for step in range(PROGRESS_EVENTS):
            store.record(
                job, Event(job.id, job.last_seq + 1, now, job.state, job.stage, f"step {step}", "progress")
            )
    for job_id, ended_at in ended.items():
        scenario.finish(store.get_job(job_id), JobState.SUCCEEDED, ended_at)
    scenario.finish(store.get_job(recent), JobState.SUCCEEDED)
    return list(ended), [recent], running


def test_prune_keeps_each_old_job_its_record_final_event_lora_and_image(tmp_path: Path) -> None:
    store = Store(StoreConfig(path=tmp_path / "store", map_size=1 << 24))
    old, recent, running = history(store)
    before = {job_id: store.events_after(job_id, 0) for job_id in [*old, *recent, running]}

    pruned = store.prune_events(time.time() - 2 * DAY)

    # accepted + 20 progress events go from each old job; its finished event stays.
    assert pruned == Pruned(jobs=3, events=3 * (1 + PROGRESS_EVENTS))
    for job_id in old:
        job = store.get_job(job_id)
        assert [event.kind for event in store.events_after(job_id, 0)] == ["finished"]
        assert store.events_after(job_id, 0) == before[job_id][-1:]
        assert store.get_lora(job.lora_name).job_id == f"job-{job.lora_name}"
        assert store.lora_file(job.lora_name) == b"safetensors"
        assert store.get_image(job.image_name) == b"png"
    for job_id in [*recent, running]:
        assert store.events_after(job_id, 0) == before[job_id]
    assert_indexes_exact(store)
    # Nothing left to prune: a second run changes nothing.
    assert store.prune_events(time.time() - 2 * DAY) == Pruned(jobs=0, events=0)


def test_prune_in_batches_prunes_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lmdb_store, "PRUNE_BATCH", 1)
    store = Store(StoreConfig(path=tmp_path / "store", map_size=1 << 24))
    old, recent, _ = history(store)
    assert store.prune_events(time.time() - 2 * DAY) == Pruned(jobs=3, events=3 * (1 + PROGRESS_EVENTS))
    assert all(len(store.events_after(job_id, 0)) == 1 for job_id in old)
    assert len(store.events_after(recent[0], 0)) == 2 + PROGRESS_EVENTS
