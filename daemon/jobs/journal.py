"""Every change to a job goes through here: the job record and an event describing the change, saved together.

The store is the source of truth, so each change re-reads the job under one lock, applies the change, gives
the event the next sequence number and writes both in one transaction; then watchers are woken. The gRPC side
and the worker thread can both change the same job without losing an update or a sequence number.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from daemon.jobs.contract import Outcome
from daemon.jobs.hub import EventHub
from daemon.jobs.model import Event, Job
from daemon.store.lmdb_store import Store

Clock = Callable[[], float]


class Journal:
    def __init__(self, store: Store, hub: EventHub, clock: Clock = time.time) -> None:
        self._store = store
        self._hub = hub
        self._clock = clock
        self._lock = threading.Lock()

    def new_event(self, job: Job, text: str, seq: int, kind: str = "", **fields: Any) -> Event:
        """An event for job (not yet saved) carrying the job's current state and stage."""
        return Event(
            job_id=job.id,
            seq=seq,
            time=self._clock(),
            state=job.state,
            stage=job.stage,
            text=text,
            kind=kind,
            lora_name=job.lora_name,
            **fields,
        )

    def change(
        self, job_id: str, mutate: Callable[[Job], None] | None, text: str, kind: str = "", **fields: Any
    ) -> tuple[Job, Event]:
        """Apply mutate to the stored job and record one event about it."""
        with self._lock:
            job = self._store.get_job(job_id)
            if mutate is not None:
                mutate(job)
            event = self.new_event(job, text, job.last_seq + 1, kind, **fields)
            self._store.record(job, event)
        self._hub.publish(job_id, event.seq)
        return job, event

    def finish(
        self,
        job_id: str,
        mutate: Callable[[Job], None],
        text: str,
        outcome: Outcome | None = None,
    ) -> tuple[Job, Event]:
        """Record a job's final state and event, with everything its outcome holds, in one transaction."""
        with self._lock:
            job = self._store.get_job(job_id)
            mutate(job)
            job.finished_at = self._clock()
            event = self.new_event(job, text, job.last_seq + 1, "finished")
            if outcome is None:
                self._store.finish_job(job, event)
            else:
                self._store.finish_job(
                    job,
                    event,
                    outcome.lora,
                    outcome.lora_file,
                    outcome.images,
                    outcome.reg_set,
                    outcome.delete_images,
                )
        self._hub.publish(job_id, event.seq, final=True)
        return job, event

    def set_client_state(self, job_id: str, state: bytes) -> Job:
        """Keep a frontend's small re-attach state on the job; no event, it is the frontend's own note."""
        with self._lock:
            job = replace(self._store.get_job(job_id), client_state=state)
            self._store.put_job(job)
        return job

    def now(self) -> float:
        return self._clock()
