"""The daemon's half of a pure stage: read what a job needs from the store before it is dispatched.

``read_inputs`` knows which values each kind of job reads; a ``Blobs`` says how the large, shared ones (LoRA
files, regularization sets) travel: as bytes for the local worker, as object references the Ray executor
puts once and reuses for every job that needs the same file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from daemon.jobs.contract import JobInputs
from daemon.jobs.model import Job, JobKind, SubjectClass
from daemon.store.lmdb_store import Store

Blob_co = TypeVar("Blob_co", covariant=True)

# The store key of a class's regularization set for the resident base model and training resolution.
RegKey = Callable[[SubjectClass], str]


class Blobs(Protocol[Blob_co]):
    """Where a job's shared inputs come from."""

    def lora(self, name: str) -> Blob_co:
        """A LoRA's file; NotFound when it was deleted after the job was accepted."""
        ...

    def reg_set(self, key: str) -> Blob_co | None:
        """The regularization set stored under ``key``, or None."""
        ...


class StoreBlobs:
    """Shared inputs as bytes read from the store at each job."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def lora(self, name: str) -> bytes:
        """The LoRA's file bytes."""
        return self._store.lora_file(name)

    def reg_set(self, key: str) -> bytes | None:
        """The set's bytes, or None."""
        return self._store.get_reg_set(key)


def read_inputs(store: Store, job: Job, blobs: Blobs[Blob_co], reg_key: RegKey) -> JobInputs[Blob_co]:
    """Everything ``job`` reads, as values; NotFound (the job fails saying so) when something is gone."""
    if job.kind == JobKind.DISTILL:
        classes = [job.requested_class] if job.requested_class is not None else list(SubjectClass)
        return JobInputs(
            source_png=store.get_image(job.image_name),
            source_sha256=store.get_image_meta(job.image_name).sha256,
            reg_sets={subject_class: blobs.reg_set(reg_key(subject_class)) for subject_class in classes},
        )
    if job.kind == JobKind.GENERATE and job.generate is not None:
        params = job.generate
        names = [use.image for use in params.adapts]
        names += [params.adapt_image, params.init_image, params.upscale_image, params.adapt_face]
        return JobInputs(
            pictures={name: store.get_image(name) for name in names if name},
            loras={use.name: blobs.lora(use.name) for use in params.loras},
        )
    if job.kind == JobKind.REG_IMPORT:
        return JobInputs(photos=[store.get_image(name) for name in job.inputs])
    return JobInputs()
