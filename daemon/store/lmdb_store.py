"""The only owner of the LMDB environment: jobs, their event logs, source images, LoRAs and regularization sets.

Layout (named databases):

=========  ==============================================  =========================================
database   key                                             value
=========  ==============================================  =========================================
jobs       job id                                          Job as JSON
events     job id + "/" + seq (8 bytes, big-endian)        Event as JSON
names      LoRA name                                       job id; never deleted, so never reused
idem       owner key + NUL + idempotency key               job id
images     "<name>.png" or "<job id>-<n>.png"              {"owner", "sha256", "size", "job", ...} JSON
loras      LoRA name                                       LoraRecord as JSON
blobs      blob key + NUL + chunk index (4 bytes)          up to 256 KiB of a blob
meta       counter name, "index_version"                   integer as text
=========  ==============================================  =========================================

Indexes (jobs by owner and by platform, the active jobs, ended jobs, per-owner and daemon-wide counters) are
written in the same transaction as the records they index, so listing, admission, statistics and metrics read
what they return instead of the history; daemon/store/indexes.py describes them. A store written before they
existed gets them built once, when it is opened.

Blobs are chunked because LMDB stores a large value in contiguous overflow pages and never defragments them.
Every method is one transaction under one lock: transactions never cross threads, and the map can be grown
(which needs no transaction open in the process) when a write finds it full.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from daemon.errors import Conflict, Exhausted, NotFound
from daemon.jobs.contract import OutputImage, RegSet
from daemon.jobs.model import (
    Event,
    Job,
    LoraRecord,
    event_from_json,
    job_from_json,
    lora_from_json,
    to_json,
)
from daemon.store import indexes
from daemon.store.indexes import INDEX_DATABASES, INDEX_VERSION, TOTALS

log = logging.getLogger(__name__)

T = TypeVar("T")

CHUNK = 256 * 1024
_DATABASES = ("jobs", "events", "names", "idem", "images", "loras", "blobs", "meta", *INDEX_DATABASES)
# Ended jobs whose event logs one prune transaction handles: admission waits for at most one batch.
PRUNE_BATCH = 500


@dataclass(frozen=True)
class StoreConfig:
    path: Path
    # Sparse on disk: LMDB only reserves address space, so start generously and grow on MapFullError.
    map_size: int = 1 << 30
    # Growth stops here; a write past it answers RESOURCE_EXHAUSTED and the daemon stays up.
    max_map_size: int = 1 << 40


@dataclass(frozen=True)
class StoredImage:
    name: str
    owner_key: str
    sha256: str
    size: int
    job_id: str = ""  # the job that brought (source) or made (generated) it
    generated: bool = False
    # Generated images: "seed", "width", "height", "parameters", "loras" (see contract.OutputImage).
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pixels(self) -> tuple[int, int]:
        """Width and height as recorded for a generated image; (0, 0) where nothing was recorded."""
        return int(self.info.get("width", 0)), int(self.info.get("height", 0))


@dataclass(frozen=True)
class OwnerCounts:
    """One owner's counters, kept as their records change."""

    loras: int = 0
    public_loras: int = 0
    distill_jobs: int = 0  # every job that is not a generation, imports included
    generate_jobs: int = 0
    images: int = 0  # images their generation jobs made
    active: int = 0  # jobs queued or running


@dataclass(frozen=True)
class Pruned:
    """What ``prune_events`` removed."""

    jobs: int
    events: int


def _image_meta(name: str, raw: bytes) -> StoredImage:
    meta = json.loads(raw)
    return StoredImage(
        name=name,
        owner_key=meta["owner"],
        sha256=meta["sha256"],
        size=meta["size"],
        job_id=meta.get("job", ""),
        generated=bool(meta.get("generated", False)),
        info=meta.get("info", {}),
    )


def _event_key(job_id: str, seq: int) -> bytes:
    return job_id.encode() + b"/" + seq.to_bytes(8, "big")


def _chunk_key(blob: str, index: int) -> bytes:
    return blob.encode() + b"\0" + index.to_bytes(4, "big")


def _scan(cursor: lmdb.Cursor, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Keys and values under ``prefix``, in key order."""
    if not cursor.set_range(prefix):
        return
    for key, value in cursor:
        key = bytes(key)
        if not key.startswith(prefix):
            return
        yield key, bytes(value)


def _number(raw: bytes | memoryview | str | bytearray) -> float:
    """A counter's stored value (the text of a number)."""
    return float(raw if isinstance(raw, str) else bytes(raw))


def _delete_while(cursor: lmdb.Cursor, start: bytes, inside: Callable[[bytes], bool]) -> int:
    """Delete keys from ``start`` on while ``inside(key)`` holds; returns how many went."""
    deleted = 0
    if not cursor.set_range(start):
        return deleted
    while (key := bytes(cursor.key())) and inside(key):
        if not cursor.delete():
            break
        deleted += 1
    return deleted


class Store:
    """Durable state of the daemon. Safe to call from any thread; each call is one transaction."""

    def __init__(self, config: StoreConfig) -> None:
        self._config = config
        config.path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(
            str(config.path),
            map_size=config.map_size,
            max_dbs=len(_DATABASES),
            subdir=True,
            # Durability over speed: an acknowledged job must survive kill -9 and power loss.
            sync=True,
            metasync=True,
            writemap=False,
            max_readers=256,
        )
        # Readers left by a killed process pin old pages and make the file grow.
        cleared = self._env.reader_check()
        if cleared:
            log.info("cleared %d stale LMDB readers", cleared)
        self._db = {name: self._env.open_db(name.encode()) for name in _DATABASES}
        self._lock = threading.RLock()
        self._build_indexes()

    def close(self) -> None:
        with self._lock:
            self._env.close()

    # -- transactions ---------------------------------------------------------------------------------------

    def _read(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        with self._lock, self._env.begin() as txn:
            return fn(txn)

    def _write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        with self._lock:
            while True:
                try:
                    with self._env.begin(write=True) as txn:
                        return fn(txn)
                except lmdb.MapFullError:
                    self._grow()

    def _grow(self) -> None:
        current = self._env.info()["map_size"]
        if current >= self._config.max_map_size:
            raise Exhausted("The distillery's storage is full; ask the operator to free space.")
        new_size = min(current * 2, self._config.max_map_size)
        # Safe here: the caller holds the lock and its failed transaction has been aborted.
        self._env.set_mapsize(new_size)
        log.warning("LMDB map full at %d bytes, grown to %d", current, new_size)

    # -- indexes --------------------------------------------------------------------------------------------

    def _build_indexes(self) -> None:
        """Build the indexes from the records, in one transaction, when the store's index version is not ours."""
        version = self._read(lambda txn: int(txn.get(b"index_version", b"0", db=self._db["meta"])))
        if version == INDEX_VERSION:
            return
        started = time.monotonic()

        def txn_fn(txn: lmdb.Transaction) -> tuple[int, int]:
            for name in INDEX_DATABASES:
                txn.drop(self._db[name], delete=False)
            counts: indexes.Counts = defaultdict(float)
            jobs = loras = 0
            for _, raw in txn.cursor(db=self._db["jobs"]):
                job = job_from_json(bytes(raw))
                for db, key, value in indexes.job_entries(job):
                    txn.put(key, value, db=self._db[db])
                for counter, amount in indexes.job_counts(job).items():
                    counts[counter] += amount
                jobs += 1
            for _, raw in txn.cursor(db=self._db["loras"]):
                for counter, amount in indexes.lora_counts(lora_from_json(bytes(raw))).items():
                    counts[counter] += amount
                loras += 1
            self._add_counts(txn, counts.items())
            txn.put(b"index_version", str(INDEX_VERSION).encode(), db=self._db["meta"])
            return jobs, loras

        jobs, loras = self._write(txn_fn)
        log.info(
            "built the store's indexes (version %d, was %d) over %d jobs and %d LoRAs in %.1f s",
            INDEX_VERSION,
            version,
            jobs,
            loras,
            time.monotonic() - started,
        )

    def _add_counts(self, txn: lmdb.Transaction, changes: Iterable[tuple[tuple[str, str], float]]) -> None:
        db = self._db["counts"]
        for (owner_key, name), delta in changes:
            key = indexes.counter_key(owner_key, name)
            value = _number(txn.get(key, b"0", db=db)) + delta
            if value:
                txn.put(key, json.dumps(value).encode(), db=db)
            else:
                txn.delete(key, db=db)

    def _save_job(self, txn: lmdb.Transaction, job: Job) -> None:
        """Write a job record and move its index entries and counters from its stored version to this one."""
        raw = txn.get(job.id.encode(), db=self._db["jobs"])
        old = None if raw is None else job_from_json(bytes(raw))
        txn.put(job.id.encode(), to_json(job), db=self._db["jobs"])
        before, after = indexes.job_entries(old), indexes.job_entries(job)
        for db, key, _ in before - after:
            txn.delete(key, db=self._db[db])
        for db, key, value in after - before:
            txn.put(key, value, db=self._db[db])
        self._add_counts(txn, indexes.difference(indexes.job_counts(old), indexes.job_counts(job)))

    def _save_lora(self, txn: lmdb.Transaction, name: str, lora: LoraRecord | None) -> LoraRecord | None:
        """Write (or, with None, delete) a LoRA record and move its owner's counters; returns the old record."""
        key = name.encode()
        raw = txn.get(key, db=self._db["loras"])
        old = None if raw is None else lora_from_json(bytes(raw))
        if lora is None:
            txn.delete(key, db=self._db["loras"])
        else:
            txn.put(key, to_json(lora), db=self._db["loras"])
        self._add_counts(txn, indexes.difference(indexes.lora_counts(old), indexes.lora_counts(lora)))
        return old

    # -- blobs ----------------------------------------------------------------------------------------------

    def _put_blob(self, txn: lmdb.Transaction, key: str, data: bytes) -> None:
        self._delete_blob(txn, key)
        db = self._db["blobs"]
        for index, start in enumerate(range(0, max(len(data), 1), CHUNK)):
            txn.put(_chunk_key(key, index), data[start : start + CHUNK], db=db)

    def _get_blob(self, txn: lmdb.Transaction, key: str) -> bytes | None:
        parts = list(self._iter_blob(txn, key))
        return b"".join(parts) if parts else None

    def _iter_blob(self, txn: lmdb.Transaction, key: str) -> Iterator[bytes]:
        for _, chunk in _scan(txn.cursor(db=self._db["blobs"]), key.encode() + b"\0"):
            yield chunk

    def _delete_blob(self, txn: lmdb.Transaction, key: str) -> None:
        prefix = key.encode() + b"\0"
        _delete_while(txn.cursor(db=self._db["blobs"]), prefix, lambda k: k.startswith(prefix))

    def _put_image(
        self, txn: lmdb.Transaction, name: str, owner_key: str, png: bytes, sha256: str, job_id: str, **extra: Any
    ) -> None:
        """One stored image: its record (owner, hash, size, job, and ``extra``) and its PNG bytes."""
        meta = {"owner": owner_key, "sha256": sha256, "size": len(png), "job": job_id, **extra}
        txn.put(name.encode(), json.dumps(meta).encode(), db=self._db["images"])
        self._put_blob(txn, f"image/{name}", png)

    # -- jobs and events ------------------------------------------------------------------------------------

    def create_job(
        self,
        job: Job,
        first_event: Event,
        image_png: bytes | None,
        image_sha256: str,
        inputs: Sequence[tuple[str, bytes, str]] = (),
    ) -> Job:
        """Store a new job, its name, its idempotency key, its source image and first event, all or nothing.

        ``inputs`` are further images the job reads, as (name, PNG, sha256): photos to import.

        When the job has an idempotency key already used by the same owner, nothing is written and the
        existing job is returned; the caller compares ``request_hash`` to tell a redelivery from a clash.
        """

        def txn_fn(txn: lmdb.Transaction) -> Job:
            if job.idempotency_key:
                existing = txn.get(self._idem_key(job), db=self._db["idem"])
                if existing is not None:
                    return self._job(txn, bytes(existing).decode())
                txn.put(self._idem_key(job), job.id.encode(), db=self._db["idem"])
            names = self._db["names"]
            if job.lora_name and not txn.put(job.lora_name.encode(), job.id.encode(), db=names, overwrite=False):
                raise Conflict(f"The name {job.lora_name} is taken.")
            owner = job.owner.owner_key
            if image_png is not None:
                self._put_image(txn, job.image_name, owner, image_png, image_sha256, job.id)
            for name, png, sha256 in inputs:
                self._put_image(txn, name, owner, png, sha256, job.id)
            job.last_seq = first_event.seq
            self._save_job(txn, job)
            txn.put(_event_key(job.id, first_event.seq), to_json(first_event), db=self._db["events"])
            return job

        return self._write(txn_fn)

    @staticmethod
    def _idem_key(job: Job) -> bytes:
        return f"{job.owner.owner_key}\0{job.idempotency_key}".encode()

    def find_idempotent(self, owner_key: str, key: str) -> Job | None:
        """The job an owner already submitted under this idempotency key, if any."""

        def txn_fn(txn: lmdb.Transaction) -> Job | None:
            job_id = txn.get(f"{owner_key}\0{key}".encode(), db=self._db["idem"])
            return None if job_id is None else self._job(txn, bytes(job_id).decode())

        return self._read(txn_fn)

    def _job(self, txn: lmdb.Transaction, job_id: str) -> Job:
        raw = txn.get(job_id.encode(), db=self._db["jobs"])
        if raw is None:
            raise NotFound(f"There is no job {job_id}.")
        return job_from_json(bytes(raw))

    def get_job(self, job_id: str) -> Job:
        """The job, or NotFound."""
        return self._read(lambda txn: self._job(txn, job_id))

    def put_job(self, job: Job) -> None:
        """Overwrite a job record (state changes that emit no event, like client state)."""
        self._write(lambda txn: self._save_job(txn, job))

    def record(self, job: Job, event: Event) -> None:
        """Append an event and save the job it changed, in one transaction."""

        def txn_fn(txn: lmdb.Transaction) -> None:
            job.last_seq = event.seq
            txn.put(_event_key(job.id, event.seq), to_json(event), db=self._db["events"])
            self._save_job(txn, job)

        self._write(txn_fn)

    def finish_job(
        self,
        job: Job,
        event: Event,
        lora: LoraRecord | None = None,
        lora_file: bytes | None = None,
        images: Sequence[OutputImage] = (),
        reg_set: RegSet | None = None,
        delete_images: Sequence[str] = (),
    ) -> None:
        """Record a job's last event with what it made (a LoRA, images, a regularization set) and drop the
        stored images it used up, all or nothing."""

        def txn_fn(txn: lmdb.Transaction) -> None:
            if lora is not None and lora_file is not None:
                self._save_lora(txn, lora.name, lora)
                self._put_blob(txn, f"lora/{lora.name}", lora_file)
            if reg_set is not None:
                self._put_blob(txn, f"reg/{reg_set.key}", reg_set.data)
            for name in delete_images:
                txn.delete(name.encode(), db=self._db["images"])
                self._delete_blob(txn, f"image/{name}")
            for image in images:
                sha256 = hashlib.sha256(image.png).hexdigest()
                self._put_image(
                    txn,
                    image.name,
                    job.owner.owner_key,
                    image.png,
                    sha256,
                    job.id,
                    generated=True,
                    info=image.info,
                )
            job.last_seq = event.seq
            txn.put(_event_key(job.id, event.seq), to_json(event), db=self._db["events"])
            self._save_job(txn, job)
            counter = b"jobs_" + job.state.value.encode()
            done = int(txn.get(counter, b"0", db=self._db["meta"]))
            txn.put(counter, str(done + 1).encode(), db=self._db["meta"])

        self._write(txn_fn)

    def put_jobs(self, history: Sequence[tuple[Job, Sequence[Event]]]) -> None:
        """Store many job records with their events in one transaction, indexes included (bulk loads)."""

        def txn_fn(txn: lmdb.Transaction) -> None:
            for job, events in history:
                for event in events:
                    txn.put(_event_key(job.id, event.seq), to_json(event), db=self._db["events"])
                self._save_job(txn, job)

        self._write(txn_fn)

    def events_after(self, job_id: str, after_seq: int, limit: int = 500) -> list[Event]:
        """Up to ``limit`` events of a job with seq > after_seq, in order."""

        def txn_fn(txn: lmdb.Transaction) -> list[Event]:
            prefix = job_id.encode() + b"/"
            cursor = txn.cursor(db=self._db["events"])
            found: list[Event] = []
            if not cursor.set_range(_event_key(job_id, after_seq + 1)):
                return found
            for key, value in cursor:
                if not bytes(key).startswith(prefix) or len(found) >= limit:
                    break
                found.append(event_from_json(bytes(value)))
            return found

        return self._read(txn_fn)

    def jobs(self) -> list[Job]:
        """Every job, oldest first (job ids sort by creation time)."""
        return self._read(lambda txn: [job_from_json(bytes(v)) for _, v in txn.cursor(db=self._db["jobs"])])

    def list_jobs(self, owner_key: str | None, platform: str | None, active_only: bool, limit: int) -> list[Job]:
        """Newest first, filtered by owner (or whole platform) and state.

        Reads only the jobs it returns, from the owner's or the platform's index, or from the active jobs.
        """

        def txn_fn(txn: lmdb.Transaction) -> list[Job]:
            found: list[Job] = []
            for job_id in self._job_ids(txn, owner_key, platform, active_only):
                if len(found) >= limit:
                    break
                job = self._job(txn, job_id)
                if platform is None or job.owner.platform == platform:
                    found.append(job)
            return found

        return self._read(txn_fn)

    def _job_ids(
        self, txn: lmdb.Transaction, owner_key: str | None, platform: str | None, active_only: bool
    ) -> Iterator[str]:
        """Ids of the jobs that may match, newest first."""
        if active_only:
            for key, value in txn.cursor(db=self._db["active"]).iterprev():
                owner, job_platform = indexes.split_active(bytes(value))
                if owner_key in (None, owner) and platform in (None, job_platform):
                    yield bytes(key).decode()
            return
        if owner_key is None and platform is None:
            for key in txn.cursor(db=self._db["jobs"]).iterprev(values=False):
                yield bytes(key).decode()
            return
        db, prefix = ("by_owner", owner_key) if owner_key is not None else ("by_platform", platform or "")
        for _, job_id in _scan(txn.cursor(db=self._db[db]), indexes.scope(prefix)):
            yield job_id.decode()

    def active_count(self, owner_key: str) -> int:
        """How many of an owner's jobs are queued or running."""
        return self.owner_counts(owner_key).active

    def owner_counts(self, owner_key: str) -> OwnerCounts:
        """An owner's counters: LoRAs, public LoRAs, jobs by kind, generated images, active jobs."""

        def txn_fn(txn: lmdb.Transaction) -> OwnerCounts:
            db = self._db["counts"]
            values = {
                counter.name: int(_number(txn.get(indexes.counter_key(owner_key, counter.name), b"0", db=db)))
                for counter in fields(OwnerCounts)
            }
            return OwnerCounts(**values)

        return self._read(txn_fn)

    def totals(self) -> dict[str, float]:
        """The daemon-wide counters /metrics shows, by name: ``state/<state>``, ``failure/<reason>``,
        ``stage_sum/<stage>`` and ``stage_count/<stage>``, ``job_sum/<state>`` and ``job_count/<state>``."""
        prefix = indexes.scope(TOTALS)

        def txn_fn(txn: lmdb.Transaction) -> dict[str, float]:
            cursor = txn.cursor(db=self._db["counts"])
            return {key[len(prefix) :].decode(): _number(value) for key, value in _scan(cursor, prefix)}

        return self._read(txn_fn)

    def prune_events(self, ended_before: float) -> Pruned:
        """Delete the event logs of jobs that ended before ``ended_before`` (seconds since the epoch).

        Each job keeps its record and its final event (so a late watcher still sees how it ended); LoRAs and
        images are untouched. One transaction per batch of jobs, so other writes wait for one batch at most.
        """
        stop = indexes.ended_key(ended_before)
        start: bytes | None = b""
        jobs = events = 0
        while start is not None:
            start, batch_jobs, batch_events = self._write(partial(self._prune_batch, start=start, stop=stop))
            jobs += batch_jobs
            events += batch_events
        if jobs:
            log.info("pruned %d events of %d jobs that ended before %.0f", events, jobs, ended_before)
        return Pruned(jobs=jobs, events=events)

    def _prune_batch(self, txn: lmdb.Transaction, start: bytes, stop: bytes) -> tuple[bytes | None, int, int]:
        """Prune up to PRUNE_BATCH ended jobs from ``start``; returns where the next batch starts (None: done)."""
        cursor = txn.cursor(db=self._db["ended"])
        if not cursor.set_range(start):
            return None, 0, 0
        jobs = events = 0
        for index, key in enumerate(cursor.iternext(values=False)):
            key = bytes(key)
            if key >= stop:
                return None, jobs, events
            if index == PRUNE_BATCH:
                return key, jobs, events
            job_id = indexes.ended_job_id(key)
            final = _event_key(job_id, self._job(txn, job_id).last_seq)
            # Every event before the final one sorts between the job's prefix and the final event's key.
            deleted = _delete_while(txn.cursor(db=self._db["events"]), job_id.encode() + b"/", final.__gt__)
            jobs += 1 if deleted else 0
            events += deleted
        return None, jobs, events

    def counter(self, name: str) -> int:
        """A counter kept in the meta database, e.g. ``jobs_succeeded``."""
        return self._read(lambda txn: int(txn.get(name.encode(), b"0", db=self._db["meta"])))

    # -- names ----------------------------------------------------------------------------------------------

    def name_taken(self, name: str) -> bool:
        """True when a LoRA of this name exists or ever existed."""
        return self._read(lambda txn: txn.get(name.encode(), db=self._db["names"]) is not None)

    # -- source images --------------------------------------------------------------------------------------

    def get_image_meta(self, name: str) -> StoredImage:
        def txn_fn(txn: lmdb.Transaction) -> StoredImage:
            raw = txn.get(name.encode(), db=self._db["images"])
            if raw is None:
                raise NotFound(f"There is no stored image {name}.")
            return _image_meta(name, bytes(raw))

        return self._read(txn_fn)

    def delete_images(self, names: Sequence[str]) -> None:
        """Remove stored images (a job's inputs once used up), all in one transaction; missing ones are fine."""

        def txn_fn(txn: lmdb.Transaction) -> None:
            for name in names:
                txn.delete(name.encode(), db=self._db["images"])
                self._delete_blob(txn, f"image/{name}")

        self._write(txn_fn)

    def put_image(self, name: str, owner_key: str, png: bytes, sha256: str, job_id: str = "") -> None:
        """Store one image outside a job's creation (a picture an operator or a test puts in place)."""
        self._write(lambda txn: self._put_image(txn, name, owner_key, png, sha256, job_id))

    def get_image(self, name: str) -> bytes:
        """The stored PNG, or NotFound."""
        data = self._read(lambda txn: self._get_blob(txn, f"image/{name}"))
        if data is None:
            raise NotFound(f"There is no stored image {name}.")
        return data

    # -- LoRAs ----------------------------------------------------------------------------------------------

    def get_lora(self, name: str) -> LoraRecord:
        def txn_fn(txn: lmdb.Transaction) -> LoraRecord:
            raw = txn.get(name.encode(), db=self._db["loras"])
            if raw is None:
                raise NotFound(f"There is no LoRA called {name}.")
            return lora_from_json(bytes(raw))

        return self._read(txn_fn)

    def lora_file(self, name: str) -> bytes:
        """The LoRA's safetensors file, or NotFound."""
        data = self._read(lambda txn: self._get_blob(txn, f"lora/{name}"))
        if data is None:
            raise NotFound(f"There is no LoRA called {name}.")
        return data

    def loras(self) -> list[LoraRecord]:
        """Every LoRA, by name."""
        return self._read(lambda txn: [lora_from_json(bytes(v)) for _, v in txn.cursor(db=self._db["loras"])])

    def update_lora(self, name: str, mutate: Callable[[LoraRecord], None]) -> LoraRecord:
        """Change a LoRA record in one transaction (read, mutate, write), or NotFound."""

        def txn_fn(txn: lmdb.Transaction) -> LoraRecord:
            raw = txn.get(name.encode(), db=self._db["loras"])
            if raw is None:
                raise NotFound(f"There is no LoRA called {name}.")
            lora = lora_from_json(bytes(raw))
            mutate(lora)
            self._save_lora(txn, name, lora)
            return lora

        return self._write(txn_fn)

    def delete_lora(self, name: str) -> bool:
        """Remove a LoRA, its file and its source image in one transaction; True when the image went too.

        The name stays in ``names``, so it is never minted again.
        """

        def txn_fn(txn: lmdb.Transaction) -> bool:
            lora = self._save_lora(txn, name, None)
            if lora is None:
                raise NotFound(f"There is no LoRA called {name}.")
            self._delete_blob(txn, f"lora/{name}")
            image_deleted = txn.delete(lora.image_name.encode(), db=self._db["images"])
            self._delete_blob(txn, f"image/{lora.image_name}")
            return bool(image_deleted)

        return self._write(txn_fn)

    # -- regularization sets (the RegCache protocol) --------------------------------------------------------

    def get_reg_set(self, key: str) -> bytes | None:
        """A cached regularization set (latents as safetensors bytes), or None."""
        return self._read(lambda txn: self._get_blob(txn, f"reg/{key}"))

    def put_reg_set(self, key: str, data: bytes) -> None:
        """Cache a regularization set under its (base model, class, resolution) key."""
        self._write(lambda txn: self._put_blob(txn, f"reg/{key}", data))

    # -- operations -----------------------------------------------------------------------------------------

    def backup(self, target: Path) -> None:
        """A consistent hot copy of the whole store into an empty folder, compacted."""
        target.mkdir(parents=True, exist_ok=True)
        self._env.copy(str(target), compact=True)

    @staticmethod
    def copy_live(source: Path, target: Path) -> None:
        """A consistent, compacted copy of the store in ``source`` into the folder ``target``, from another
        process while a daemon keeps writing it.

        Read-only, but with the lock file: the copy's read transaction is registered, so the daemon never
        reuses the pages of the snapshot being copied.
        """
        env = lmdb.open(str(source), readonly=True, max_dbs=len(_DATABASES) + 8, subdir=True, lock=True)
        try:
            env.copy(str(target), compact=True)
        finally:
            env.close()

    def stats(self) -> dict[str, int]:
        """Map size and used bytes, for status and metrics."""
        info = self._env.info()
        stat = self._env.stat()
        used = (info["last_pgno"] + 1) * stat["psize"]
        return {"map_size": info["map_size"], "used_bytes": used}
