"""Small builders of daemon records for tests."""

from __future__ import annotations

import time

from daemon.jobs.model import Event, Job, Requester

ALICE = Requester("telegram", "", "111", "chat-1")
BOB = Requester("telegram", "", "222", "chat-2")


def make_job(job_id: str, name: str, owner: Requester = ALICE, key: str = "") -> Job:
    """A queued job with an uploaded source image called <name>.png."""
    return Job(
        id=job_id,
        lora_name=name,
        owner=owner,
        source="upload",
        image_name=f"{name}.png",
        requested_class=None,
        flip=True,
        train_steps=30,
        created_at=time.time(),
        idempotency_key=key,
        request_hash="h1",
    )


def first_event(job: Job) -> Event:
    """The ACCEPTED event a job is created with."""
    return Event(job.id, 1, time.time(), job.state, job.stage, "accepted", "accepted", queue_position=1)
