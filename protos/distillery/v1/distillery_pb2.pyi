from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubjectClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBJECT_CLASS_UNSPECIFIED: _ClassVar[SubjectClass]
    SUBJECT_CLASS_MAN: _ClassVar[SubjectClass]
    SUBJECT_CLASS_WOMAN: _ClassVar[SubjectClass]
    SUBJECT_CLASS_PERSON: _ClassVar[SubjectClass]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_QUEUED: _ClassVar[Stage]
    STAGE_PREPARE: _ClassVar[Stage]
    STAGE_CAPTION: _ClassVar[Stage]
    STAGE_CLASSIFY: _ClassVar[Stage]
    STAGE_REGULARIZATION: _ClassVar[Stage]
    STAGE_TRAIN: _ClassVar[Stage]
    STAGE_SAVE: _ClassVar[Stage]
    STAGE_DONE: _ClassVar[Stage]
    STAGE_GENERATE: _ClassVar[Stage]
    STAGE_PREVIEW: _ClassVar[Stage]
    STAGE_LIKENESS: _ClassVar[Stage]

class JobKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_KIND_UNSPECIFIED: _ClassVar[JobKind]
    JOB_KIND_DISTILL: _ClassVar[JobKind]
    JOB_KIND_GENERATE: _ClassVar[JobKind]
    JOB_KIND_REG_IMPORT: _ClassVar[JobKind]

class WorkerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATE_UNSPECIFIED: _ClassVar[WorkerState]
    WORKER_STATE_STARTING: _ClassVar[WorkerState]
    WORKER_STATE_IDLE: _ClassVar[WorkerState]
    WORKER_STATE_BUSY: _ClassVar[WorkerState]
    WORKER_STATE_LOST: _ClassVar[WorkerState]
    WORKER_STATE_STOPPING: _ClassVar[WorkerState]
SUBJECT_CLASS_UNSPECIFIED: SubjectClass
SUBJECT_CLASS_MAN: SubjectClass
SUBJECT_CLASS_WOMAN: SubjectClass
SUBJECT_CLASS_PERSON: SubjectClass
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
STAGE_UNSPECIFIED: Stage
STAGE_QUEUED: Stage
STAGE_PREPARE: Stage
STAGE_CAPTION: Stage
STAGE_CLASSIFY: Stage
STAGE_REGULARIZATION: Stage
STAGE_TRAIN: Stage
STAGE_SAVE: Stage
STAGE_DONE: Stage
STAGE_GENERATE: Stage
STAGE_PREVIEW: Stage
STAGE_LIKENESS: Stage
JOB_KIND_UNSPECIFIED: JobKind
JOB_KIND_DISTILL: JobKind
JOB_KIND_GENERATE: JobKind
JOB_KIND_REG_IMPORT: JobKind
WORKER_STATE_UNSPECIFIED: WorkerState
WORKER_STATE_STARTING: WorkerState
WORKER_STATE_IDLE: WorkerState
WORKER_STATE_BUSY: WorkerState
WORKER_STATE_LOST: WorkerState
WORKER_STATE_STOPPING: WorkerState

class Requester(_message.Message):
    __slots__ = ("platform", "workspace", "user", "chat")
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    platform: str
    workspace: str
    user: str
    chat: str
    def __init__(self, platform: _Optional[str] = ..., workspace: _Optional[str] = ..., user: _Optional[str] = ..., chat: _Optional[str] = ...) -> None: ...

class DistillSpec(_message.Message):
    __slots__ = ("url", "image_name", "upload", "requester", "subject_class", "no_flip", "idempotency_key", "train_steps")
    URL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_CLASS_FIELD_NUMBER: _ClassVar[int]
    NO_FLIP_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TRAIN_STEPS_FIELD_NUMBER: _ClassVar[int]
    url: str
    image_name: str
    upload: bool
    requester: Requester
    subject_class: SubjectClass
    no_flip: bool
    idempotency_key: str
    train_steps: int
    def __init__(self, url: _Optional[str] = ..., image_name: _Optional[str] = ..., upload: _Optional[bool] = ..., requester: _Optional[_Union[Requester, _Mapping]] = ..., subject_class: _Optional[_Union[SubjectClass, str]] = ..., no_flip: _Optional[bool] = ..., idempotency_key: _Optional[str] = ..., train_steps: _Optional[int] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("spec", "chunk")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    spec: DistillSpec
    chunk: bytes
    def __init__(self, spec: _Optional[_Union[DistillSpec, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("job", "queue_position", "duplicate")
    JOB_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    job: Job
    queue_position: int
    duplicate: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., queue_position: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "lora_name", "state", "stage", "owner", "source", "image_name", "requested_class", "subject_class", "caption", "flip", "train_steps", "error", "created_at", "started_at", "finished_at", "stage_seconds", "last_seq", "client_state", "attempts", "idempotency_key", "kind", "generate", "output_images", "likeness")
    class StageSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    LORA_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_CLASS_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    FLIP_FIELD_NUMBER: _ClassVar[int]
    TRAIN_STEPS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    STAGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    CLIENT_STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    GENERATE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_IMAGES_FIELD_NUMBER: _ClassVar[int]
    LIKENESS_FIELD_NUMBER: _ClassVar[int]
    id: str
    lora_name: str
    state: JobState
    stage: Stage
    owner: Requester
    source: str
    image_name: str
    requested_class: SubjectClass
    subject_class: SubjectClass
    caption: str
    flip: bool
    train_steps: int
    error: str
    created_at: float
    started_at: float
    finished_at: float
    stage_seconds: _containers.ScalarMap[str, float]
    last_seq: int
    client_state: bytes
    attempts: int
    idempotency_key: str
    kind: JobKind
    generate: GenerateSpec
    output_images: _containers.RepeatedScalarFieldContainer[str]
    likeness: Likeness
    def __init__(self, id: _Optional[str] = ..., lora_name: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., stage: _Optional[_Union[Stage, str]] = ..., owner: _Optional[_Union[Requester, _Mapping]] = ..., source: _Optional[str] = ..., image_name: _Optional[str] = ..., requested_class: _Optional[_Union[SubjectClass, str]] = ..., subject_class: _Optional[_Union[SubjectClass, str]] = ..., caption: _Optional[str] = ..., flip: _Optional[bool] = ..., train_steps: _Optional[int] = ..., error: _Optional[str] = ..., created_at: _Optional[float] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., stage_seconds: _Optional[_Mapping[str, float]] = ..., last_seq: _Optional[int] = ..., client_state: _Optional[bytes] = ..., attempts: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., kind: _Optional[_Union[JobKind, str]] = ..., generate: _Optional[_Union[GenerateSpec, _Mapping]] = ..., output_images: _Optional[_Iterable[str]] = ..., likeness: _Optional[_Union[Likeness, _Mapping]] = ...) -> None: ...

class Likeness(_message.Message):
    __slots__ = ("measured", "score", "under_threshold", "samples", "median_distance", "step", "copies", "reason", "summary")
    MEASURED_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    UNDER_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    COPIES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    measured: bool
    score: int
    under_threshold: int
    samples: int
    median_distance: float
    step: int
    copies: int
    reason: str
    summary: str
    def __init__(self, measured: _Optional[bool] = ..., score: _Optional[int] = ..., under_threshold: _Optional[int] = ..., samples: _Optional[int] = ..., median_distance: _Optional[float] = ..., step: _Optional[int] = ..., copies: _Optional[int] = ..., reason: _Optional[str] = ..., summary: _Optional[str] = ...) -> None: ...

class Accepted(_message.Message):
    __slots__ = ("lora_name", "queue_position", "kind")
    LORA_NAME_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    lora_name: str
    queue_position: int
    kind: JobKind
    def __init__(self, lora_name: _Optional[str] = ..., queue_position: _Optional[int] = ..., kind: _Optional[_Union[JobKind, str]] = ...) -> None: ...

class QueuePosition(_message.Message):
    __slots__ = ("position",)
    POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    def __init__(self, position: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("step", "total", "loss", "eta_seconds", "rate")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    step: int
    total: int
    loss: float
    eta_seconds: float
    rate: float
    def __init__(self, step: _Optional[int] = ..., total: _Optional[int] = ..., loss: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., rate: _Optional[float] = ...) -> None: ...

class Captioned(_message.Message):
    __slots__ = ("caption",)
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    caption: str
    def __init__(self, caption: _Optional[str] = ...) -> None: ...

class Classified(_message.Message):
    __slots__ = ("subject_class", "from_user")
    SUBJECT_CLASS_FIELD_NUMBER: _ClassVar[int]
    FROM_USER_FIELD_NUMBER: _ClassVar[int]
    subject_class: SubjectClass
    from_user: bool
    def __init__(self, subject_class: _Optional[_Union[SubjectClass, str]] = ..., from_user: _Optional[bool] = ...) -> None: ...

class Finished(_message.Message):
    __slots__ = ("job", "lora", "images")
    JOB_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    job: Job
    lora: Lora
    images: _containers.RepeatedCompositeFieldContainer[ImageInfo]
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., lora: _Optional[_Union[Lora, _Mapping]] = ..., images: _Optional[_Iterable[_Union[ImageInfo, _Mapping]]] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "seq", "time", "state", "stage", "text", "accepted", "queue", "progress", "captioned", "classified", "finished")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CAPTIONED_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    seq: int
    time: float
    state: JobState
    stage: Stage
    text: str
    accepted: Accepted
    queue: QueuePosition
    progress: Progress
    captioned: Captioned
    classified: Classified
    finished: Finished
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[float] = ..., state: _Optional[_Union[JobState, str]] = ..., stage: _Optional[_Union[Stage, str]] = ..., text: _Optional[str] = ..., accepted: _Optional[_Union[Accepted, _Mapping]] = ..., queue: _Optional[_Union[QueuePosition, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., captioned: _Optional[_Union[Captioned, _Mapping]] = ..., classified: _Optional[_Union[Classified, _Mapping]] = ..., finished: _Optional[_Union[Finished, _Mapping]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("job_id", "after_seq", "requester")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_seq: int
    requester: Requester
    def __init__(self, job_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., requester: _Optional[_Union[Requester, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id", "requester")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    requester: Requester
    def __init__(self, job_id: _Optional[str] = ..., requester: _Optional[_Union[Requester, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("requester", "active_only", "whole_platform", "limit")
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_ONLY_FIELD_NUMBER: _ClassVar[int]
    WHOLE_PLATFORM_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    requester: Requester
    active_only: bool
    whole_platform: bool
    limit: int
    def __init__(self, requester: _Optional[_Union[Requester, _Mapping]] = ..., active_only: _Optional[bool] = ..., whole_platform: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJobsReply(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "requester")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    requester: Requester
    def __init__(self, job_id: _Optional[str] = ..., requester: _Optional[_Union[Requester, _Mapping]] = ...) -> None: ...

class SetClientStateRequest(_message.Message):
    __slots__ = ("job_id", "requester", "client_state")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_STATE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    requester: Requester
    client_state: bytes
    def __init__(self, job_id: _Optional[str] = ..., requester: _Optional[_Union[Requester, _Mapping]] = ..., client_state: _Optional[bytes] = ...) -> None: ...

class Lora(_message.Message):
    __slots__ = ("name", "owner", "job_id", "subject_class", "caption", "instance_prompt", "base_model", "base_model_hash", "image_name", "image_sha256", "size_bytes", "created_at", "public", "training", "tokens", "description", "show_image", "likeness")
    class TrainingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_CLASS_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SHOW_IMAGE_FIELD_NUMBER: _ClassVar[int]
    LIKENESS_FIELD_NUMBER: _ClassVar[int]
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
    public: bool
    training: _containers.ScalarMap[str, str]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    description: str
    show_image: bool
    likeness: Likeness
    def __init__(self, name: _Optional[str] = ..., owner: _Optional[_Union[Requester, _Mapping]] = ..., job_id: _Optional[str] = ..., subject_class: _Optional[_Union[SubjectClass, str]] = ..., caption: _Optional[str] = ..., instance_prompt: _Optional[str] = ..., base_model: _Optional[str] = ..., base_model_hash: _Optional[str] = ..., image_name: _Optional[str] = ..., image_sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., created_at: _Optional[float] = ..., public: _Optional[bool] = ..., training: _Optional[_Mapping[str, str]] = ..., tokens: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., show_image: _Optional[bool] = ..., likeness: _Optional[_Union[Likeness, _Mapping]] = ...) -> None: ...

class GetLoraRequest(_message.Message):
    __slots__ = ("name", "requester")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    name: str
    requester: Requester
    def __init__(self, name: _Optional[str] = ..., requester: _Optional[_Union[Requester, _Mapping]] = ...) -> None: ...

class ListLorasRequest(_message.Message):
    __slots__ = ("requester", "include_public")
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    requester: Requester
    include_public: bool
    def __init__(self, requester: _Optional[_Union[Requester, _Mapping]] = ..., include_public: _Optional[bool] = ...) -> None: ...

class ListLorasReply(_message.Message):
    __slots__ = ("loras",)
    LORAS_FIELD_NUMBER: _ClassVar[int]
    loras: _containers.RepeatedCompositeFieldContainer[Lora]
    def __init__(self, loras: _Optional[_Iterable[_Union[Lora, _Mapping]]] = ...) -> None: ...

class GetImageRequest(_message.Message):
    __slots__ = ("name", "requester")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    name: str
    requester: Requester
    def __init__(self, name: _Optional[str] = ..., requester: _Optional[_Union[Requester, _Mapping]] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("filename", "total_bytes", "data")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    filename: str
    total_bytes: int
    data: bytes
    def __init__(self, filename: _Optional[str] = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class UpdateLoraRequest(_message.Message):
    __slots__ = ("name", "requester", "public", "description", "show_image")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SHOW_IMAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    requester: Requester
    public: bool
    description: str
    show_image: bool
    def __init__(self, name: _Optional[str] = ..., requester: _Optional[_Union[Requester, _Mapping]] = ..., public: _Optional[bool] = ..., description: _Optional[str] = ..., show_image: _Optional[bool] = ...) -> None: ...

class DeleteLoraRequest(_message.Message):
    __slots__ = ("name", "requester")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    name: str
    requester: Requester
    def __init__(self, name: _Optional[str] = ..., requester: _Optional[_Union[Requester, _Mapping]] = ...) -> None: ...

class DeleteLoraReply(_message.Message):
    __slots__ = ("name", "image_deleted")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DELETED_FIELD_NUMBER: _ClassVar[int]
    name: str
    image_deleted: bool
    def __init__(self, name: _Optional[str] = ..., image_deleted: _Optional[bool] = ...) -> None: ...

class LoraWeight(_message.Message):
    __slots__ = ("name", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: float
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class GenerateSpec(_message.Message):
    __slots__ = ("prompt", "loras", "negative_prompt", "seed", "cfg", "steps", "aspect_ratio", "adapt_image", "adapt_url", "adapt_weight", "count", "full_prompt", "width", "height", "sampler", "power", "power_scale", "upscale_method", "init_image", "init_url", "init_denoise", "more_adapts", "adapt_face", "model", "upscale_image", "adapt_face_weight")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CFG_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ASPECT_RATIO_FIELD_NUMBER: _ClassVar[int]
    ADAPT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    ADAPT_URL_FIELD_NUMBER: _ClassVar[int]
    ADAPT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FULL_PROMPT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    POWER_FIELD_NUMBER: _ClassVar[int]
    POWER_SCALE_FIELD_NUMBER: _ClassVar[int]
    UPSCALE_METHOD_FIELD_NUMBER: _ClassVar[int]
    INIT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    INIT_URL_FIELD_NUMBER: _ClassVar[int]
    INIT_DENOISE_FIELD_NUMBER: _ClassVar[int]
    MORE_ADAPTS_FIELD_NUMBER: _ClassVar[int]
    ADAPT_FACE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    UPSCALE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    ADAPT_FACE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    loras: _containers.RepeatedCompositeFieldContainer[LoraWeight]
    negative_prompt: str
    seed: int
    cfg: float
    steps: int
    aspect_ratio: str
    adapt_image: str
    adapt_url: str
    adapt_weight: float
    count: int
    full_prompt: str
    width: int
    height: int
    sampler: str
    power: bool
    power_scale: float
    upscale_method: str
    init_image: str
    init_url: str
    init_denoise: float
    more_adapts: _containers.RepeatedCompositeFieldContainer[AdaptPicture]
    adapt_face: str
    model: str
    upscale_image: str
    adapt_face_weight: float
    def __init__(self, prompt: _Optional[str] = ..., loras: _Optional[_Iterable[_Union[LoraWeight, _Mapping]]] = ..., negative_prompt: _Optional[str] = ..., seed: _Optional[int] = ..., cfg: _Optional[float] = ..., steps: _Optional[int] = ..., aspect_ratio: _Optional[str] = ..., adapt_image: _Optional[str] = ..., adapt_url: _Optional[str] = ..., adapt_weight: _Optional[float] = ..., count: _Optional[int] = ..., full_prompt: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., sampler: _Optional[str] = ..., power: _Optional[bool] = ..., power_scale: _Optional[float] = ..., upscale_method: _Optional[str] = ..., init_image: _Optional[str] = ..., init_url: _Optional[str] = ..., init_denoise: _Optional[float] = ..., more_adapts: _Optional[_Iterable[_Union[AdaptPicture, _Mapping]]] = ..., adapt_face: _Optional[str] = ..., model: _Optional[str] = ..., upscale_image: _Optional[str] = ..., adapt_face_weight: _Optional[float] = ...) -> None: ...

class AdaptPicture(_message.Message):
    __slots__ = ("image", "url", "weight")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    image: str
    url: str
    weight: float
    def __init__(self, image: _Optional[str] = ..., url: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("spec", "requester", "idempotency_key")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    spec: GenerateSpec
    requester: Requester
    idempotency_key: str
    def __init__(self, spec: _Optional[_Union[GenerateSpec, _Mapping]] = ..., requester: _Optional[_Union[Requester, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ImageInfo(_message.Message):
    __slots__ = ("name", "generated", "job_id", "width", "height", "size_bytes", "seed", "parameters", "loras", "lora_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GENERATED_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    LORA_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    generated: bool
    job_id: str
    width: int
    height: int
    size_bytes: int
    seed: int
    parameters: str
    loras: _containers.RepeatedCompositeFieldContainer[LoraWeight]
    lora_name: str
    def __init__(self, name: _Optional[str] = ..., generated: _Optional[bool] = ..., job_id: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., size_bytes: _Optional[int] = ..., seed: _Optional[int] = ..., parameters: _Optional[str] = ..., loras: _Optional[_Iterable[_Union[LoraWeight, _Mapping]]] = ..., lora_name: _Optional[str] = ...) -> None: ...

class RegularizationSpec(_message.Message):
    __slots__ = ("requester", "subject_class")
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_CLASS_FIELD_NUMBER: _ClassVar[int]
    requester: Requester
    subject_class: SubjectClass
    def __init__(self, requester: _Optional[_Union[Requester, _Mapping]] = ..., subject_class: _Optional[_Union[SubjectClass, str]] = ...) -> None: ...

class RegularizationUpload(_message.Message):
    __slots__ = ("spec", "photo")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    spec: RegularizationSpec
    photo: bytes
    def __init__(self, spec: _Optional[_Union[RegularizationSpec, _Mapping]] = ..., photo: _Optional[bytes] = ...) -> None: ...

class GetUserStatsRequest(_message.Message):
    __slots__ = ("requester",)
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    requester: Requester
    def __init__(self, requester: _Optional[_Union[Requester, _Mapping]] = ...) -> None: ...

class UserStats(_message.Message):
    __slots__ = ("loras_owned", "public_loras", "distill_jobs", "generate_jobs", "images_generated", "images_today", "images_left_today", "distills_today", "distills_left_today", "quota_resets_at")
    LORAS_OWNED_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_LORAS_FIELD_NUMBER: _ClassVar[int]
    DISTILL_JOBS_FIELD_NUMBER: _ClassVar[int]
    GENERATE_JOBS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_GENERATED_FIELD_NUMBER: _ClassVar[int]
    IMAGES_TODAY_FIELD_NUMBER: _ClassVar[int]
    IMAGES_LEFT_TODAY_FIELD_NUMBER: _ClassVar[int]
    DISTILLS_TODAY_FIELD_NUMBER: _ClassVar[int]
    DISTILLS_LEFT_TODAY_FIELD_NUMBER: _ClassVar[int]
    QUOTA_RESETS_AT_FIELD_NUMBER: _ClassVar[int]
    loras_owned: int
    public_loras: int
    distill_jobs: int
    generate_jobs: int
    images_generated: int
    images_today: int
    images_left_today: int
    distills_today: int
    distills_left_today: int
    quota_resets_at: float
    def __init__(self, loras_owned: _Optional[int] = ..., public_loras: _Optional[int] = ..., distill_jobs: _Optional[int] = ..., generate_jobs: _Optional[int] = ..., images_generated: _Optional[int] = ..., images_today: _Optional[int] = ..., images_left_today: _Optional[int] = ..., distills_today: _Optional[int] = ..., distills_left_today: _Optional[int] = ..., quota_resets_at: _Optional[float] = ...) -> None: ...

class PruneEventsRequest(_message.Message):
    __slots__ = ("requester", "older_than_days")
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    OLDER_THAN_DAYS_FIELD_NUMBER: _ClassVar[int]
    requester: Requester
    older_than_days: int
    def __init__(self, requester: _Optional[_Union[Requester, _Mapping]] = ..., older_than_days: _Optional[int] = ...) -> None: ...

class PruneEventsReply(_message.Message):
    __slots__ = ("jobs", "events")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    jobs: int
    events: int
    def __init__(self, jobs: _Optional[int] = ..., events: _Optional[int] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Status(_message.Message):
    __slots__ = ("ready", "queue_length", "current_job_id", "current_lora_name", "current_stage", "base_model", "captioner_model", "device", "preset", "jobs_done", "uptime_seconds", "version", "models", "workers")
    READY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    CURRENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_LORA_NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STAGE_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    CAPTIONER_MODEL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    JOBS_DONE_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    queue_length: int
    current_job_id: str
    current_lora_name: str
    current_stage: Stage
    base_model: str
    captioner_model: str
    device: str
    preset: str
    jobs_done: int
    uptime_seconds: float
    version: str
    models: _containers.RepeatedScalarFieldContainer[str]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    def __init__(self, ready: _Optional[bool] = ..., queue_length: _Optional[int] = ..., current_job_id: _Optional[str] = ..., current_lora_name: _Optional[str] = ..., current_stage: _Optional[_Union[Stage, str]] = ..., base_model: _Optional[str] = ..., captioner_model: _Optional[str] = ..., device: _Optional[str] = ..., preset: _Optional[str] = ..., jobs_done: _Optional[int] = ..., uptime_seconds: _Optional[float] = ..., version: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ...) -> None: ...

class Worker(_message.Message):
    __slots__ = ("id", "device", "state", "job_id", "stage", "node", "pid")
    ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    id: str
    device: str
    state: WorkerState
    job_id: str
    stage: Stage
    node: str
    pid: int
    def __init__(self, id: _Optional[str] = ..., device: _Optional[str] = ..., state: _Optional[_Union[WorkerState, str]] = ..., job_id: _Optional[str] = ..., stage: _Optional[_Union[Stage, str]] = ..., node: _Optional[str] = ..., pid: _Optional[int] = ...) -> None: ...
