"""What the store's indexes hold for one record, as pure functions of that record.

The store writes a record and, in the same transaction, the difference between the index entries of its old and
its new version. Because every entry and every counter is derived from the record alone, the indexes cannot
drift from the records, and rebuilding them (an older store, a test's brute-force check) is the same code run
over every record from nothing.

Index databases:

============  ========================================================  ===========================
database      key                                                       value
============  ========================================================  ===========================
by_owner      scope(owner key) + newest-first(job id)                   job id
by_platform   scope(platform) + newest-first(job id)                    job id
active        job id (queued or running jobs only)                      scope(owner key) + platform
ended         finished_at in ms (8 bytes, big-endian) + job id          empty
counts        scope(owner key, or "" for the totals) + counter name     number as JSON
============  ========================================================  ===========================

``scope`` is the text's length (2 bytes) then the text, so no owner's keys can run into another's; newest-first
inverts every byte of the job id and ends with 0xff, so a forward scan meets the newest job (the greatest id)
first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from daemon.jobs.model import Job, JobKind, JobState, LoraRecord

# Raised whenever what the indexes hold changes; a store written with a lower version rebuilds them at open.
INDEX_VERSION = 1
INDEX_DATABASES = ("by_owner", "by_platform", "active", "ended", "counts")
TOTALS = ""  # the scope of the daemon-wide counters that /metrics reads

Entry = tuple[str, bytes, bytes]  # database, key, value
Counts = defaultdict[tuple[str, str], float]  # (scope, counter name) -> amount


def scope(text: str) -> bytes:
    """A key prefix that belongs to ``text`` alone."""
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def newest_first(job_id: str) -> bytes:
    """A key part under which greater job ids (newer jobs) sort first."""
    return bytes(255 - byte for byte in job_id.encode()) + b"\xff"


def ended_key(finished_at: float, job_id: str = "") -> bytes:
    """The ``ended`` index key; with no job id, the bound below which every job ended before ``finished_at``."""
    return max(int(finished_at * 1000), 0).to_bytes(8, "big") + job_id.encode()


def ended_job_id(key: bytes) -> str:
    """The job id of an ``ended`` index key."""
    return key[8:].decode()


def split_active(value: bytes) -> tuple[str, str]:
    """(owner key, platform) of an ``active`` entry."""
    size = int.from_bytes(value[:2], "big")
    return value[2 : 2 + size].decode(), value[2 + size :].decode()


def counter_key(owner_key: str, name: str) -> bytes:
    return scope(owner_key) + name.encode()


def is_active(job: Job) -> bool:
    return job.state in (JobState.QUEUED, JobState.RUNNING)


def job_entries(job: Job | None) -> set[Entry]:
    """Every index entry that points at this job (none for no job)."""
    if job is None:
        return set()
    job_key = job.id.encode()
    owner = job.owner.owner_key
    entries = {
        ("by_owner", scope(owner) + newest_first(job.id), job_key),
        ("by_platform", scope(job.owner.platform) + newest_first(job.id), job_key),
    }
    if is_active(job):
        entries.add(("active", job_key, scope(owner) + job.owner.platform.encode()))
    if job.state.finished and job.finished_at > 0:
        entries.add(("ended", ended_key(job.finished_at, job.id), b""))
    return entries


def failure_reason(job: Job) -> str:
    """A small fixed set of reasons, so a free-text error never becomes an unbounded label."""
    error = job.error.lower()
    if "stopped" in error and "running this job" in error:
        return "interrupted"
    if "internal error" in error:
        return "internal"
    if "memory" in error:
        return "out_of_memory"
    return "pipeline"


def job_counts(job: Job | None) -> Counts:
    """What this job adds to its owner's counters and to the totals, keyed by (scope, counter name)."""
    counts: Counts = defaultdict(float)
    if job is None:
        return counts
    owner = job.owner.owner_key
    if job.kind == JobKind.GENERATE:
        counts[owner, "generate_jobs"] += 1
        counts[owner, "images"] += len(job.outputs)
    else:
        # Imports count with distillations, as GetUserStats always counted every job that is not a generation.
        counts[owner, "distill_jobs"] += 1
    if is_active(job):
        counts[owner, "active"] += 1
    state = job.state.value
    counts[TOTALS, f"state/{state}"] += 1
    if job.state == JobState.FAILED:
        counts[TOTALS, f"failure/{failure_reason(job)}"] += 1
    if job.state.finished:
        for stage, seconds in job.stage_seconds.items():
            counts[TOTALS, f"stage_sum/{stage}"] += seconds
            counts[TOTALS, f"stage_count/{stage}"] += 1
        if job.started_at and job.finished_at:
            counts[TOTALS, f"job_sum/{state}"] += job.finished_at - job.started_at
            counts[TOTALS, f"job_count/{state}"] += 1
    return counts


def lora_counts(lora: LoraRecord | None) -> Counts:
    """What this LoRA adds to its owner's counters."""
    counts: Counts = defaultdict(float)
    if lora is None:
        return counts
    owner = lora.owner.owner_key
    counts[owner, "loras"] += 1
    if lora.public:
        counts[owner, "public_loras"] += 1
    return counts


def difference(old: Counts, new: Counts) -> Iterable[tuple[tuple[str, str], float]]:
    """The non-zero changes from ``old`` to ``new``."""
    for key in old.keys() | new.keys():
        delta = new.get(key, 0.0) - old.get(key, 0.0)
        if delta:
            yield key, delta
