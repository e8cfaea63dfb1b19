"""The LMDB store: round trips, atomic job creation, names never reused, restart, map growth, backup."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from daemon.errors import Conflict, Exhausted, NotFound
from daemon.jobs.model import Event, JobState, LoraRecord, Stage, SubjectClass
from daemon.store.lmdb_store import CHUNK, Store, StoreConfig
from tests.records import ALICE, BOB, first_event, make_job


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(StoreConfig(path=tmp_path / "store"))


def test_job_image_and_first_event_round_trip(store: Store) -> None:
    job = make_job("0001", "rifttami")
    png = bytes(range(256)) * 3000  # 768 KB: several chunks
    store.create_job(job, first_event(job), png, "sha")

    loaded = store.get_job("0001")
    assert loaded == job
    assert loaded.last_seq == 1
    assert store.get_image("rifttami.png") == png
    meta = store.get_image_meta("rifttami.png")
    assert (meta.owner_key, meta.sha256, meta.size) == (ALICE.owner_key, "sha", len(png))
    assert [e.text for e in store.events_after("0001", 0)] == ["accepted"]


def test_names_are_never_reused(store: Store) -> None:
    job = make_job("0001", "rifttami")
    store.create_job(job, first_event(job), b"png", "sha")
    assert store.name_taken("rifttami")
    with pytest.raises(Conflict):
        clash = make_job("0002", "rifttami")
        store.create_job(clash, first_event(clash), b"other", "sha2")
    # The failed creation wrote nothing: no job, and the first image is untouched.
    with pytest.raises(NotFound):
        store.get_job("0002")
    assert store.get_image("rifttami.png") == b"png"


def test_idempotency_key_returns_the_first_job_and_writes_nothing(store: Store) -> None:
    job = make_job("0001", "rifttami", key="update-42")
    store.create_job(job, first_event(job), b"png", "sha")
    again = make_job("0002", "othername", key="update-42")
    stored = store.create_job(again, first_event(again), b"png", "sha")
    assert stored.id == "0001"
    assert not store.name_taken("othername")
    assert store.find_idempotent(ALICE.owner_key, "update-42") == stored
    # Keys are per owner: Bob's identical key is a different request.
    assert store.find_idempotent(BOB.owner_key, "update-42") is None


def test_events_are_ordered_and_replayable_after_a_sequence(store: Store) -> None:
    job = make_job("0001", "rifttami")
    store.create_job(job, first_event(job), None, "")
    for seq in range(2, 300):
        job.stage = Stage.TRAIN
        store.record(job, Event(job.id, seq, time.time(), JobState.RUNNING, Stage.TRAIN, f"step {seq}"))
    other = make_job("0002", "lunaveka")
    store.create_job(other, first_event(other), None, "")

    after = store.events_after("0001", 250)
    assert [e.seq for e in after] == list(range(251, 300))
    assert all(e.job_id == "0001" for e in after)
    assert store.get_job("0001").last_seq == 299
    assert [e.seq for e in store.events_after("0001", 0, limit=10)] == list(range(1, 11))
    assert store.events_after("0001", 299) == []


def test_finish_job_stores_the_lora_atomically(store: Store) -> None:
    job = make_job("0001", "rifttami")
    store.create_job(job, first_event(job), b"png", "sha")
    job.state = JobState.SUCCEEDED
    lora = LoraRecord(
        name="rifttami",
        owner=ALICE,
        job_id="0001",
        subject_class=SubjectClass.WOMAN,
        caption="c",
        instance_prompt="p",
        base_model="demo",
        base_model_hash="abc",
        image_name="rifttami.png",
        image_sha256="sha",
        size_bytes=CHUNK * 2 + 5,
        created_at=1.0,
        tokens=["rift", "tami</w>"],
        training={"steps": "30"},
    )
    data = b"x" * (CHUNK * 2 + 5)
    store.finish_job(job, Event("0001", 2, 2.0, JobState.SUCCEEDED, Stage.DONE, "done", "finished"), lora, data)
    assert store.get_lora("rifttami") == lora
    assert store.lora_file("rifttami") == data
    assert store.get_job("0001").state == JobState.SUCCEEDED
    assert store.counter("jobs_succeeded") == 1
    assert [item.name for item in store.loras()] == ["rifttami"]


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store"
    first = Store(StoreConfig(path=path))
    job = make_job("0001", "rifttami")
    first.create_job(job, first_event(job), b"png-bytes", "sha")
    first.put_reg_set("demo/woman/64", b"latents")
    first.close()

    second = Store(StoreConfig(path=path))
    assert second.get_job("0001") == job
    assert second.get_image("rifttami.png") == b"png-bytes"
    assert second.get_reg_set("demo/woman/64") == b"latents"
    assert second.name_taken("rifttami")


def test_a_full_map_grows_and_a_capped_one_answers_exhausted(tmp_path: Path) -> None:
    grown = Store(StoreConfig(path=tmp_path / "grow", map_size=1 << 20, max_map_size=1 << 26))
    for index in range(8):
        grown.put_reg_set(f"set-{index}", bytes([index]) * (1 << 20))
    assert grown.stats()["map_size"] > 1 << 20
    assert grown.get_reg_set("set-7") == bytes([7]) * (1 << 20)

    capped = Store(StoreConfig(path=tmp_path / "capped", map_size=1 << 20, max_map_size=1 << 21))
    with pytest.raises(Exhausted):
        for index in range(8):
            capped.put_reg_set(f"set-{index}", b"z" * (1 << 20))
    # The store still works after refusing the write.
    capped.put_reg_set("small", b"ok")
    assert capped.get_reg_set("small") == b"ok"


def test_replacing_a_blob_removes_its_old_chunks(store: Store) -> None:
    store.put_reg_set("k", b"a" * (CHUNK * 3))
    store.put_reg_set("k", b"b" * 10)
    assert store.get_reg_set("k") == b"b" * 10


def test_list_jobs_filters_by_owner_platform_and_state(store: Store) -> None:
    for index, (owner, state) in enumerate(
        [(ALICE, JobState.QUEUED), (ALICE, JobState.SUCCEEDED), (BOB, JobState.RUNNING)]
    ):
        job = make_job(f"000{index}", f"name{index}", owner)
        job.state = state
        store.create_job(job, first_event(job), None, "")
    assert [j.id for j in store.list_jobs(ALICE.owner_key, None, False, 50)] == ["0001", "0000"]
    assert [j.id for j in store.list_jobs(ALICE.owner_key, None, True, 50)] == ["0000"]
    assert [j.id for j in store.list_jobs(None, "telegram", True, 50)] == ["0002", "0000"]
    assert store.list_jobs(None, "slack", False, 50) == []


def test_backup_is_a_consistent_copy(store: Store, tmp_path: Path) -> None:
    job = make_job("0001", "rifttami")
    store.create_job(job, first_event(job), b"png", "sha")
    store.backup(tmp_path / "backup")
    copy = Store(StoreConfig(path=tmp_path / "backup"))
    assert copy.get_job("0001") == job
    assert copy.get_image("rifttami.png") == b"png"
