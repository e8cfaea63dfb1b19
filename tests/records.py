"""Small builders of daemon records for tests."""

from __future__ import annotations

import time

from daemon.jobs.model import Event, Job, LoraRecord, Requester, SubjectClass

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


def lora_record(
    name: str, subject_class: SubjectClass = SubjectClass.PERSON, owner: Requester = ALICE
) -> LoraRecord:
    """A LoRA record as a finished job stores it (the file itself is not part of it)."""
    return LoraRecord(
        name=name,
        owner=owner,
        job_id=f"job-{name}",
        subject_class=subject_class,
        caption="a portrait",
        instance_prompt=f"a photo of {name} {subject_class.value}",
        base_model="demo",
        base_model_hash="0" * 64,
        image_name=f"{name}.png",
        image_sha256="1" * 64,
        size_bytes=100,
        created_at=time.time(),
        tokens=[],
        training={},
    )
