"""The answers the store's indexes give, worked out the slow way: by reading every job and LoRA record.

These are the algorithms the daemon used before it had indexes (a newest-first walk filtered in Python, counts
over every record). Tests compare the index answers to them after every kind of write.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from daemon.jobs.model import Job, JobKind, JobState, LoraRecord
from daemon.store.indexes import failure_reason
from daemon.store.lmdb_store import OwnerCounts, Store

LIMITS = (1, 2, 1000)


def list_jobs(
    jobs: list[Job], owner_key: str | None, platform: str | None, active_only: bool, limit: int
) -> list[str]:
    found: list[str] = []
    for job in reversed(jobs):
        if owner_key is not None and job.owner.owner_key != owner_key:
            continue
        if platform is not None and job.owner.platform != platform:
            continue
        if active_only and job.state not in (JobState.QUEUED, JobState.RUNNING):
            continue
        found.append(job.id)
        if len(found) >= limit:
            break
    return found


def owner_counts(jobs: list[Job], loras: list[LoraRecord], owner_key: str) -> OwnerCounts:
    mine = [job for job in jobs if job.owner.owner_key == owner_key]
    generations = [job for job in mine if job.kind == JobKind.GENERATE]
    owned = [lora for lora in loras if lora.owner.owner_key == owner_key]
    return OwnerCounts(
        loras=len(owned),
        public_loras=sum(1 for lora in owned if lora.public),
        distill_jobs=len(mine) - len(generations),
        generate_jobs=len(generations),
        images=sum(len(job.outputs) for job in generations),
        active=sum(1 for job in mine if job.state in (JobState.QUEUED, JobState.RUNNING)),
    )


def totals(jobs: list[Job]) -> dict[str, float]:
    """The figures /metrics showed when it walked every job at each scrape."""
    found: defaultdict[str, float] = defaultdict(float)
    for job in jobs:
        found[f"state/{job.state.value}"] += 1
        if job.state == JobState.FAILED:
            found[f"failure/{failure_reason(job)}"] += 1
        if not job.state.finished:
            continue
        for name, seconds in job.stage_seconds.items():
            found[f"stage_sum/{name}"] += seconds
            found[f"stage_count/{name}"] += 1
        if job.started_at and job.finished_at:
            found[f"job_sum/{job.state.value}"] += job.finished_at - job.started_at
            found[f"job_count/{job.state.value}"] += 1
    return {name: value for name, value in found.items() if value}


def assert_indexes_exact(store: Store) -> None:
    """Every listing, every owner's counters and the totals equal what a walk over all records gives."""
    jobs, loras = store.jobs(), store.loras()
    owners = {job.owner.owner_key for job in jobs} | {lora.owner.owner_key for lora in loras} | {"nobody//x"}
    platforms = {job.owner.platform for job in jobs} | {"nowhere"}
    for active_only in (False, True):
        for limit in LIMITS:
            scopes = [(owner, None) for owner in owners] + [(None, platform) for platform in platforms]
            for owner_key, platform in [*scopes, (None, None)]:
                listed = [job.id for job in store.list_jobs(owner_key, platform, active_only, limit)]
                expected = list_jobs(jobs, owner_key, platform, active_only, limit)
                assert listed == expected, (owner_key, platform, active_only, limit)
    for owner_key in owners:
        assert store.owner_counts(owner_key) == owner_counts(jobs, loras, owner_key), owner_key
    kept = {name: value for name, value in store.totals().items() if value}
    expected_totals = totals(jobs)
    assert kept.keys() == expected_totals.keys()
    for name, value in expected_totals.items():
        assert kept[name] == pytest.approx(value), name
