"""What a pipeline stage sees and what it hands back: the contract between the daemon and wherever a job runs.

A stage is a function of values. The daemon reads everything a job needs from the store before dispatch
(``JobInputs``: the source picture, LoRA files, cached regularization sets, photos to import), the stage
reports through a small ``JobContext`` (stages, progress, notes, cancellation) and returns an ``Outcome``
(a LoRA, images, a regularization set it built, stored images it used up), which the daemon writes with the
job's final event in one transaction. Nothing here touches the store, so the same stage runs on the local
worker thread or in a Ray actor on another machine.

A leaf module: it imports nothing of the daemon but the records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from daemon.errors import DistilleryError, JobCancelled
from daemon.jobs.model import Job, JobKind, LoraRecord, Stage, SubjectClass

# What a stored blob travels as: bytes for a stage, a Ray object reference on the way to an actor.
Blob = TypeVar("Blob")


@dataclass
class OutputImage:
    """A generated image: its name (``<job id>-<n>.png``), PNG bytes, and the facts GetImageInfo tells."""

    name: str
    png: bytes
    # JSON-safe: "seed", "width", "height", "parameters" (A1111 text), "loras" ([{"name", "weight"}]).
    info: dict[str, Any]


@dataclass
class RegSet:
    """A regularization set a job built or imported, to be stored under its cache key."""

    key: str
    data: bytes  # safetensors bytes (``RegularizationSet.to_bytes``)


@dataclass
class Outcome:
    """What a pipeline run hands back, stored with the job's last event all at once."""

    summary: str
    lora: LoraRecord | None = None  # a distill job's LoRA
    lora_file: bytes | None = None
    images: list[OutputImage] = field(default_factory=list)  # a generation job's images (or a preview)
    reg_set: RegSet | None = None  # a regularization set made or grown by this job
    delete_images: list[str] = field(default_factory=list)  # stored images the job used up


@dataclass
class JobInputs(Generic[Blob]):
    """Everything a job reads from the store, read by the daemon before the job is dispatched."""

    # A distill job's portrait, PNG as stored.
    source_png: bytes | None = None
    source_sha256: str = ""
    # A generation's LoRA files by name.
    loras: dict[str, Blob] = field(default_factory=dict)
    # A distill job's cached regularization set for each class it may end up with; None: none cached yet.
    reg_sets: dict[SubjectClass, Blob | None] = field(default_factory=dict)
    # A regularization import's photos, in order.
    photos: list[bytes] = field(default_factory=list)
    # A generation's stored pictures by name: its --adapt pictures, its --adaptface picture and its --image.
    pictures: dict[str, bytes] = field(default_factory=dict)


class JobContext(Protocol):
    """What a stage may do with its job: read it and its inputs, report, and check for cancellation."""

    job: Job
    inputs: JobInputs[bytes]

    def check(self) -> None:
        """Raise JobCancelled when the job was cancelled or its worker is stopping."""
        ...

    def should_stop(self) -> bool:
        """True once the job should stop at its next step."""
        ...

    def stage(self, stage: Stage, text: str) -> None:
        """Enter a stage and tell the chat what happens now."""
        ...

    def captioned(self, caption: str) -> None:
        """The caption the captioner wrote."""
        ...

    def classified(self, subject_class: SubjectClass, from_user: bool) -> None:
        """The subject class, asked for or decided from the picture."""
        ...

    def note(self, text: str) -> None:
        """A plain sentence for the chat."""
        ...

    def progress(self, step: int, total: int, loss: float = 0.0, what: str = "Step") -> None:
        """Step progress within the current stage."""
        ...


Pipeline = Callable[[JobContext], Outcome]


class Stoppable:
    """The cancellation half of a JobContext, the same wherever the job runs."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self._should_stop = should_stop

    def check(self) -> None:
        """Raise JobCancelled when the job was cancelled or its worker is stopping."""
        if self._should_stop():
            raise JobCancelled("The job was stopped.")

    def should_stop(self) -> bool:
        """True once the job should stop at its next step."""
        return self._should_stop()


class StoppedWithResults(JobCancelled):
    """A stage stopped (cancel or shutdown) after making something worth keeping, e.g. half a
    regularization set that the next job tops up instead of starting again."""

    def __init__(self, kept: Outcome) -> None:
        super().__init__("The job was stopped.")
        self.kept = kept


@dataclass(frozen=True)
class Ending:
    """How a run that raised ended, decided where it raised: stopped (cancel or shutdown) or failed, and why."""

    stopped: bool
    reason: str = ""  # the sentence the chat gets for a failure
    crashed: bool = False  # an unexpected exception, not a refusal: worth a traceback in the log
    kept: Outcome | None = None  # what a stopped stage made before it stopped


def ending_of(error: Exception, job: Job) -> Ending:
    """A stage's exception as an Ending: a refusal keeps its own sentence, a crash names only its type."""
    if isinstance(error, JobCancelled):
        return Ending(stopped=True, kept=error.kept if isinstance(error, StoppedWithResults) else None)
    if isinstance(error, DistilleryError):
        return Ending(stopped=False, reason=str(error))
    what = {JobKind.GENERATE: "Generation", JobKind.REG_IMPORT: "The import"}.get(job.kind, "Training")
    reason = f"{what} failed because of an internal error ({type(error).__name__})."
    return Ending(stopped=False, reason=reason, crashed=True)
