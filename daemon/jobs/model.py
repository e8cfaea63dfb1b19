"""The daemon's records: who asks, jobs, their events and the LoRAs they make.

Plain dataclasses that serialise to JSON for LMDB; rpc/convert.py is the only place that maps them to protobuf.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from typing import Any


class SubjectClass(enum.StrEnum):
    """What the person in the picture is, as the regularization set and the instance prompt name it."""

    MAN = "man"
    WOMAN = "woman"
    PERSON = "person"


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the states a job never leaves."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Stage(enum.StrEnum):
    QUEUED = "queued"
    PREPARE = "prepare"
    CAPTION = "caption"
    CLASSIFY = "classify"
    REGULARIZATION = "regularization"
    TRAIN = "train"
    SAVE = "save"
    DONE = "done"
    GENERATE = "generate"
    PREVIEW = "preview"  # a distill job's first picture with its new LoRA
    LIKENESS = "likeness"  # a distill job's test pictures with each snapshot of its LoRA, scored by face


class JobKind(enum.StrEnum):
    DISTILL = "distill"
    GENERATE = "generate"
    REG_IMPORT = "reg_import"  # an operator's photos become a class's regularization set


@dataclass(frozen=True)
class Requester:
    """A chat user as the frontend names them; (platform, workspace, user) owns jobs and LoRAs."""

    platform: str
    workspace: str = ""
    user: str = ""
    chat: str = ""

    @property
    def owner_key(self) -> str:
        """The stable key of the owner; the chat is where they asked from, not who they are."""
        return f"{self.platform}/{self.workspace}/{self.user}"

    def owns(self, owner: Requester) -> bool:
        return self.owner_key == owner.owner_key


@dataclass
class LoraUse:
    """One LoRA in a generation, with the weight it is applied at (resolved when the job is accepted)."""

    name: str
    weight: float


@dataclass
class AdaptUse:
    """One --adapt picture in a generation and the IP-Adapter scale it gets."""

    image: str  # a stored image name
    weight: float


@dataclass
class GenerateParams:
    """A generation job's request as it will run: every default and the seed are filled in at submit."""

    prompt: str  # as the user wrote it
    full_prompt: str  # with each LoRA's name added where the prompt did not use it
    loras: list[LoraUse]
    negative_prompt: str
    seed: int
    cfg: float
    steps: int
    width: int
    height: int
    count: int
    adapt_image: str = ""  # a stored image name; "" for none
    adapt_weight: float = 0.0
    sampler: str = ""  # A1111's name ("Euler a"); "" (jobs from before samplers): the resident's DPM++ 2M
    # Hires pass (--power): 0 is off; else the upscale factor, its steps, denoising strength and upscaler.
    hires_scale: float = 0.0
    hires_steps: int = 0
    hires_denoise: float = 0.0
    hires_upscaler: str = ""
    # Image to image (--image): a stored picture and how much of it is denoised away (0 keeps it, 1 ignores it).
    init_image: str = ""
    init_denoise: float = 0.0
    # Every --adapt picture (1-4) with its weight; adapt_image and adapt_weight repeat the first one, which is
    # all that records from before several pictures hold.
    adapts: list[AdaptUse] = field(default_factory=list)
    model: str = ""  # a /serve --model name; "": the configured base model
    # /upscale: the stored picture the hires pass starts from, in place of a first pass; "" for /serve jobs.
    upscale_image: str = ""
    # The face IP-Adapter's picture (--adaptface, a stored image name; "" for none) and its scale.
    adapt_face: str = ""
    adapt_face_weight: float = 0.0


@dataclass
class LikenessScore:
    """How much a LoRA's test pictures look like the photo (daemon/pipeline/likeness.py), or why not measured."""

    measured: bool = False
    score: int = 0  # 0-100, of the median distance
    under_threshold: int = 0  # test pictures whose face is the photo's person by dlib's standard
    samples: int = 0  # test pictures of the kept snapshot
    median_distance: float = 0.0
    step: int = 0  # the training step of the kept snapshot
    copies: int = 0  # test pictures that reproduced the photo itself and did not count
    reason: str = ""  # why not measured, a sentence fragment ("likeness not measured: ...")

    def summary(self) -> str:
        """The chat line: "Likeness 78/100: 7 of 8 test pictures look like the photo.", or why not measured."""
        if not self.measured:
            return self.reason[:1].upper() + self.reason[1:] + "."
        text = f"Likeness {self.score}/100: {self.under_threshold} of {self.samples} test pictures"
        text += " look like the photo"
        if self.copies:
            text += f" ({self.copies} copied the photo and did not count)"
        return text + "."


@dataclass
class Job:
    id: str
    lora_name: str
    owner: Requester
    source: str
    image_name: str
    requested_class: SubjectClass | None
    flip: bool
    train_steps: int
    created_at: float
    idempotency_key: str = ""
    request_hash: str = ""
    state: JobState = JobState.QUEUED
    stage: Stage = Stage.QUEUED
    subject_class: SubjectClass | None = None
    caption: str = ""
    error: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    last_seq: int = 0
    client_state: bytes = b""
    attempts: int = 0
    kind: JobKind = JobKind.DISTILL
    generate: GenerateParams | None = None
    outputs: list[str] = field(default_factory=list)  # generated image names, "<job id>-<n>.png"
    inputs: list[str] = field(default_factory=list)  # stored images a job reads (photos to import)
    likeness: LikenessScore | None = None  # a distill job that succeeded (None: before likeness existed)

    @property
    def label(self) -> str:
        """How logs name the job: its LoRA, or its kind when it makes none."""
        return self.lora_name or self.kind.value


@dataclass
class Event:
    """One step of a job as the chat sees it; ``kind`` says which of the optional fields are set."""

    job_id: str
    seq: int
    time: float
    state: JobState
    stage: Stage
    text: str
    kind: str = ""  # "accepted" | "queue" | "progress" | "captioned" | "classified" | "finished" | ""
    queue_position: int = 0
    step: int = 0
    total: int = 0
    loss: float = 0.0
    eta_seconds: float = 0.0
    rate: float = 0.0
    caption: str = ""
    subject_class: SubjectClass | None = None
    from_user: bool = False
    lora_name: str = ""
    job_kind: str = ""  # on "accepted" events: the JobKind, so a follower knows what it follows


@dataclass
class LoraRecord:
    name: str
    owner: Requester
    job_id: str
    subject_class: SubjectClass
    caption: str
    instance_prompt: str
    base_model: str
    base_model_hash: str
    image_name: str
    image_sha256: str
    size_bytes: int
    created_at: float
    tokens: list[str]
    training: dict[str, str]
    public: bool = False
    description: str = ""
    show_image: bool = False  # others may see the source image while the LoRA is public
    likeness: LikenessScore | None = None  # None: made before likeness was measured


def to_json(record: Job | Event | LoraRecord) -> bytes:
    """Serialise a record for the store."""
    data = dataclasses.asdict(record)
    if isinstance(record, Job):
        data["client_state"] = record.client_state.hex()
    return json.dumps(data, separators=(",", ":")).encode()


def _requester(data: dict[str, Any]) -> Requester:
    return Requester(**data)


def _opt_class(value: str | None) -> SubjectClass | None:
    return SubjectClass(value) if value else None


def _opt_likeness(value: dict[str, Any] | None) -> LikenessScore | None:
    return LikenessScore(**value) if value is not None else None


def job_from_json(raw: bytes) -> Job:
    data = json.loads(raw)
    data["owner"] = _requester(data["owner"])
    data["requested_class"] = _opt_class(data["requested_class"])
    data["subject_class"] = _opt_class(data["subject_class"])
    data["state"] = JobState(data["state"])
    data["stage"] = Stage(data["stage"])
    data["client_state"] = bytes.fromhex(data["client_state"])
    data["kind"] = JobKind(data.get("kind", JobKind.DISTILL.value))
    generate = data.get("generate")
    if generate is not None:
        generate["loras"] = [LoraUse(**use) for use in generate["loras"]]
        generate["adapts"] = [AdaptUse(**use) for use in generate.get("adapts", [])]
        data["generate"] = GenerateParams(**generate)
    data["likeness"] = _opt_likeness(data.get("likeness"))
    return Job(**data)


def event_from_json(raw: bytes) -> Event:
    data = json.loads(raw)
    data["state"] = JobState(data["state"])
    data["stage"] = Stage(data["stage"])
    data["subject_class"] = _opt_class(data["subject_class"])
    return Event(**data)


def lora_from_json(raw: bytes) -> LoraRecord:
    data = json.loads(raw)
    data["owner"] = _requester(data["owner"])
    data["subject_class"] = SubjectClass(data["subject_class"])
    data["likeness"] = _opt_likeness(data.get("likeness"))
    return LoraRecord(**data)
