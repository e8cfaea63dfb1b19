"""The store's indexes: exact after every write path, equal to a full scan after any sequence of writes, and
built once when a store written before they existed is opened."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.jobs.model import JobKind
from daemon.store.indexes import INDEX_DATABASES, newest_first
from daemon.store.lmdb_store import OwnerCounts, Store, StoreConfig
from tests.records import ALICE, BOB
from tests.store.brute import assert_indexes_exact
from tests.store.scenario import CAROL, OWNERS, Scenario

SMALL_MAP = 1 << 24


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(StoreConfig(path=tmp_path / "store", map_size=SMALL_MAP))


def test_newest_first_keys_sort_greater_ids_first_even_when_one_is_a_prefix() -> None:
    ids = ["j1", "j10", "j2", "0192f0a1b2c3aabbccddeeff", "0192f0a1b2c4aabbccddeeff", "j", ""]
    assert sorted(ids, key=newest_first) == sorted(ids, reverse=True)


def test_every_write_path_keeps_the_indexes_exact(store: Store) -> None:
    scenario = Scenario(store)
    steps = [
        lambda: scenario.create(ALICE),
        lambda: scenario.create(ALICE, JobKind.GENERATE, images=3),
        lambda: scenario.create(BOB),
        lambda: scenario.create(CAROL),
        lambda: scenario.start(0),  # Alice's distillation runs
        lambda: scenario.succeed(0),  # ... and makes a LoRA
        lambda: scenario.start(0),  # Alice's generation runs
        lambda: scenario.requeue(0),  # ... is interrupted by a graceful stop
        lambda: scenario.start(0),
        lambda: scenario.succeed(0),  # ... and makes three images
        lambda: scenario.cancel(0),  # Bob's queued job is cancelled
        lambda: scenario.start(0),  # Carol's runs
        lambda: scenario.fail(0),  # ... and fails on an internal error
        lambda: scenario.client_state(1),
        lambda: scenario.publish(0),
        lambda: scenario.publish(0),
        lambda: scenario.publish(0),
        lambda: scenario.delete_outputs(0),
        lambda: store.put_image("extra.png", ALICE.owner_key, b"png", "sha"),
        lambda: scenario.delete_lora(0),
    ]
    for number, step in enumerate(steps):
        step()
        try:
            assert_indexes_exact(store)
        except AssertionError as error:
            raise AssertionError(f"after step {number}: {error}") from error
    assert store.owner_counts(ALICE.owner_key) == OwnerCounts(
        loras=0, public_loras=0, distill_jobs=1, generate_jobs=1, images=3, active=0
    )
    assert store.active_count(BOB.owner_key) == 0
    assert store.totals()["failure/internal"] == 1


# Starting and finishing are listed twice so that random sequences carry many jobs to their ends.
OPERATIONS = ("create", "generate", "start", "start", "succeed", "succeed", "fail", "cancel", "requeue")
OPERATIONS += ("client_state", "publish", "delete_lora", "delete_outputs")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(OPERATIONS), st.integers(0, 30), st.integers(0, 2)), min_size=10, max_size=50
    )
)
def test_indexes_equal_a_full_scan_after_any_sequence_of_writes(steps: list[tuple[str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(StoreConfig(path=Path(folder) / "store", map_size=SMALL_MAP))
        try:
            scenario = Scenario(store)
            for name, pick, owner in steps:
                if name == "create":
                    scenario.create(OWNERS[owner])
                elif name == "generate":
                    scenario.create(OWNERS[owner], JobKind.GENERATE, images=pick % 4 + 1)
                else:
                    getattr(scenario, name)(pick)
            assert_indexes_exact(store)
        finally:
            store.close()


def strip_indexes(path: Path) -> None:
    """Make the store look written by the release before indexes: no index databases, no index version."""
    env = lmdb.open(str(path), max_dbs=32, subdir=True, map_size=1 << 30)
    with env.begin(write=True) as txn:
        for name in INDEX_DATABASES:
            txn.drop(env.open_db(name.encode(), txn=txn), delete=True)
        txn.delete(b"index_version", db=env.open_db(b"meta", txn=txn))
    with env.begin() as txn:
        for name in INDEX_DATABASES:
            with pytest.raises(lmdb.NotFoundError):
                env.open_db(name.encode(), txn=txn, create=False)
    env.close()


def test_a_store_without_indexes_gets_them_built_once_when_opened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store"
    store = Store(StoreConfig(path=path, map_size=SMALL_MAP))
    Scenario(store).mixed()
    jobs, loras, succeeded = store.jobs(), store.loras(), store.counter("jobs_succeeded")
    store.close()
    strip_indexes(path)

    with caplog.at_level(logging.INFO, logger="daemon.store.lmdb_store"):
        reopened = Store(StoreConfig(path=path, map_size=SMALL_MAP))
    built = [record.getMessage() for record in caplog.records if "built the store's indexes" in record.message]
    assert len(built) == 1 and f"over {len(jobs)} jobs and {len(loras)} LoRAs" in built[0]
    assert reopened.jobs() == jobs and reopened.loras() == loras
    assert reopened.counter("jobs_succeeded") == succeeded
    assert_indexes_exact(reopened)
    assert len(reopened.list_jobs(None, "telegram", True, 100)) > 0  # the check compares something
    reopened.close()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="daemon.store.lmdb_store"):
        Store(StoreConfig(path=path, map_size=SMALL_MAP)).close()
    assert not [record for record in caplog.records if "built the store's indexes" in record.message]
