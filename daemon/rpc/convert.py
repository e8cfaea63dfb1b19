"""Protobuf <-> domain records. The only daemon module besides the servicer that imports the generated stubs."""

from __future__ import annotations

from distillery.v1 import distillery_pb2 as pb

from daemon.jobs.executor import WorkerState, WorkerStatus
from daemon.jobs.model import (
    Event,
    GenerateParams,
    Job,
    JobKind,
    JobState,
    LikenessScore,
    LoraRecord,
    Requester,
    Stage,
    SubjectClass,
)
from daemon.pipeline.serve_request import AdaptPicture, ServeRequest
from daemon.service import StatusReport, SubmitSpec, UserStats
from daemon.store.lmdb_store import StoredImage

_CLASS_TO_PB = {
    SubjectClass.MAN: pb.SUBJECT_CLASS_MAN,
    SubjectClass.WOMAN: pb.SUBJECT_CLASS_WOMAN,
    SubjectClass.PERSON: pb.SUBJECT_CLASS_PERSON,
}
_CLASS_FROM_PB = {value: key for key, value in _CLASS_TO_PB.items()}
_STATE_TO_PB = {
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}
_STAGE_TO_PB = {
    Stage.QUEUED: pb.STAGE_QUEUED,
    Stage.PREPARE: pb.STAGE_PREPARE,
    Stage.CAPTION: pb.STAGE_CAPTION,
    Stage.CLASSIFY: pb.STAGE_CLASSIFY,
    Stage.REGULARIZATION: pb.STAGE_REGULARIZATION,
    Stage.TRAIN: pb.STAGE_TRAIN,
    Stage.SAVE: pb.STAGE_SAVE,
    Stage.DONE: pb.STAGE_DONE,
    Stage.GENERATE: pb.STAGE_GENERATE,
    Stage.PREVIEW: pb.STAGE_PREVIEW,
    Stage.LIKENESS: pb.STAGE_LIKENESS,
}
_KIND_TO_PB = {
    JobKind.DISTILL: pb.JOB_KIND_DISTILL,
    JobKind.GENERATE: pb.JOB_KIND_GENERATE,
    JobKind.REG_IMPORT: pb.JOB_KIND_REG_IMPORT,
}


def requester_from_pb(message: pb.Requester) -> Requester:
    return Requester(
        platform=message.platform.strip(),
        workspace=message.workspace.strip(),
        user=message.user.strip(),
        chat=message.chat.strip(),
    )


def requester_to_pb(requester: Requester) -> pb.Requester:
    return pb.Requester(
        platform=requester.platform, workspace=requester.workspace, user=requester.user, chat=requester.chat
    )


def class_to_pb(subject_class: SubjectClass | None) -> int:
    return int(_CLASS_TO_PB[subject_class]) if subject_class else int(pb.SUBJECT_CLASS_UNSPECIFIED)


def class_from_pb(value: int) -> SubjectClass | None:
    return _CLASS_FROM_PB.get(value)


def spec_from_pb(spec: pb.DistillSpec, upload: bytes | None) -> SubmitSpec:
    """A SubmitSpec from the first message of a submit stream and the uploaded bytes, if any."""
    source = spec.WhichOneof("source")
    return SubmitSpec(
        requester=requester_from_pb(spec.requester),
        url=spec.url.strip() if source == "url" else "",
        image_name=spec.image_name.strip() if source == "image_name" else "",
        upload=upload if source == "upload" else None,
        subject_class=class_from_pb(spec.subject_class),
        flip=not spec.no_flip,
        idempotency_key=spec.idempotency_key,
        train_steps=spec.train_steps,
    )


def serve_request_from_pb(spec: pb.GenerateSpec) -> ServeRequest:
    """A ServeRequest from the wire; unset optional fields stay None so the daemon's defaults apply."""
    adapt = spec.WhichOneof("adapt")
    init = spec.WhichOneof("init")
    return ServeRequest(
        prompt=spec.prompt,
        loras=[(use.name.strip(), use.weight if use.HasField("weight") else None) for use in spec.loras],
        negative_prompt=spec.negative_prompt,
        seed=spec.seed if spec.HasField("seed") else None,
        cfg=spec.cfg if spec.HasField("cfg") else None,
        steps=spec.steps,
        aspect_ratio=spec.aspect_ratio,
        adapt_image=spec.adapt_image.strip() if adapt == "adapt_image" else "",
        adapt_url=spec.adapt_url.strip() if adapt == "adapt_url" else "",
        adapt_weight=spec.adapt_weight if spec.HasField("adapt_weight") else None,
        count=spec.count,
        sampler=spec.sampler.strip(),
        power=spec.power,
        power_scale=spec.power_scale if spec.HasField("power_scale") else None,
        upscale_method=spec.upscale_method.strip(),
        init_image=spec.init_image.strip() if init == "init_image" else "",
        init_url=spec.init_url.strip() if init == "init_url" else "",
        init_denoise=spec.init_denoise if spec.HasField("init_denoise") else None,
        more_adapts=[
            AdaptPicture(
                image=more.image.strip() if more.WhichOneof("source") == "image" else "",
                url=more.url.strip() if more.WhichOneof("source") == "url" else "",
                weight=more.weight if more.HasField("weight") else None,
            )
            for more in spec.more_adapts
        ],
        adapt_face=spec.adapt_face.strip(),
        adapt_face_weight=spec.adapt_face_weight if spec.HasField("adapt_face_weight") else None,
        model=spec.model.strip(),
        upscale_image=spec.upscale_image.strip(),
    )


def generate_params_to_pb(params: GenerateParams) -> pb.GenerateSpec:
    """The request as the job runs it: every default filled in."""
    spec = pb.GenerateSpec(
        prompt=params.prompt,
        loras=[pb.LoraWeight(name=use.name, weight=use.weight) for use in params.loras],
        negative_prompt=params.negative_prompt,
        seed=params.seed,
        cfg=params.cfg,
        steps=params.steps,
        count=params.count,
        full_prompt=params.full_prompt,
        width=params.width,
        height=params.height,
        sampler=params.sampler,
    )
    if params.hires_scale:
        spec.power, spec.power_scale, spec.upscale_method = True, params.hires_scale, params.hires_upscaler.lower()
    if params.init_image:
        spec.init_image, spec.init_denoise = params.init_image, params.init_denoise
    for use in params.adapts[1:]:
        spec.more_adapts.add(image=use.image, weight=use.weight)
    spec.model = params.model
    spec.upscale_image = params.upscale_image
    spec.adapt_face = params.adapt_face
    if params.adapt_face:
        spec.adapt_face_weight = params.adapt_face_weight
    if params.adapt_image:
        spec.adapt_image = params.adapt_image
        spec.adapt_weight = params.adapt_weight
    return spec


def job_to_pb(job: Job) -> pb.Job:
    message = pb.Job(
        id=job.id,
        lora_name=job.lora_name,
        state=_STATE_TO_PB[job.state],
        stage=_STAGE_TO_PB[job.stage],
        owner=requester_to_pb(job.owner),
        source=job.source,
        image_name=job.image_name,
        requested_class=class_to_pb(job.requested_class),
        subject_class=class_to_pb(job.subject_class),
        caption=job.caption,
        flip=job.flip,
        train_steps=job.train_steps,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        stage_seconds=job.stage_seconds,
        last_seq=job.last_seq,
        client_state=job.client_state,
        attempts=job.attempts,
        idempotency_key=job.idempotency_key,
        kind=_KIND_TO_PB[job.kind],
        output_images=job.outputs,
    )
    if job.generate is not None:
        message.generate.CopyFrom(generate_params_to_pb(job.generate))
    if job.likeness is not None:
        message.likeness.CopyFrom(likeness_to_pb(job.likeness))
    return message


def likeness_to_pb(likeness: LikenessScore) -> pb.Likeness:
    return pb.Likeness(
        measured=likeness.measured,
        score=likeness.score,
        under_threshold=likeness.under_threshold,
        samples=likeness.samples,
        median_distance=likeness.median_distance,
        step=likeness.step,
        copies=likeness.copies,
        reason=likeness.reason,
        summary=likeness.summary(),
    )


def lora_to_pb(lora: LoraRecord) -> pb.Lora:
    message = pb.Lora(
        name=lora.name,
        owner=requester_to_pb(lora.owner),
        job_id=lora.job_id,
        subject_class=class_to_pb(lora.subject_class),
        caption=lora.caption,
        instance_prompt=lora.instance_prompt,
        base_model=lora.base_model,
        base_model_hash=lora.base_model_hash,
        image_name=lora.image_name,
        image_sha256=lora.image_sha256,
        size_bytes=lora.size_bytes,
        created_at=lora.created_at,
        public=lora.public,
        training=lora.training,
        tokens=lora.tokens,
        description=lora.description,
        show_image=lora.show_image,
    )
    if lora.likeness is not None:
        message.likeness.CopyFrom(likeness_to_pb(lora.likeness))
    return message


def image_info_to_pb(meta: StoredImage, width: int, height: int) -> pb.ImageInfo:
    info = meta.info
    return pb.ImageInfo(
        name=meta.name,
        generated=meta.generated,
        job_id=meta.job_id,
        width=width,
        height=height,
        size_bytes=meta.size,
        seed=int(info.get("seed", 0)),
        parameters=str(info.get("parameters", "")),
        loras=[pb.LoraWeight(name=use["name"], weight=use["weight"]) for use in info.get("loras", [])],
        lora_name="" if meta.generated else meta.name.removesuffix(".png"),
    )


def user_stats_to_pb(stats: UserStats) -> pb.UserStats:
    message = pb.UserStats(
        loras_owned=stats.loras_owned,
        public_loras=stats.public_loras,
        distill_jobs=stats.distill_jobs,
        generate_jobs=stats.generate_jobs,
        images_generated=stats.images_generated,
    )
    if (today := stats.today) is not None:
        message.images_today, message.distills_today = today.images_used, today.distills_used
        message.quota_resets_at = today.resets_at
        if today.images_left is not None:
            message.images_left_today = today.images_left
        if today.distills_left is not None:
            message.distills_left_today = today.distills_left
    return message


def event_to_pb(
    event: Event,
    job: Job | None = None,
    lora: LoraRecord | None = None,
    images: list[pb.ImageInfo] | None = None,
) -> pb.JobEvent:
    """An event; a "finished" one carries the final job (and its LoRA or images) that the caller looked up."""
    message = pb.JobEvent(
        job_id=event.job_id,
        seq=event.seq,
        time=event.time,
        state=_STATE_TO_PB[event.state],
        stage=_STAGE_TO_PB[event.stage],
        text=event.text,
    )
    if event.kind == "accepted":
        if event.job_kind:
            kind = _KIND_TO_PB[JobKind(event.job_kind)]
        else:  # written before events named their kind: only distill jobs were named then
            kind = pb.JOB_KIND_DISTILL if event.lora_name else pb.JOB_KIND_GENERATE
        accepted = pb.Accepted(lora_name=event.lora_name, queue_position=event.queue_position, kind=kind)
        message.accepted.CopyFrom(accepted)
    elif event.kind == "queue":
        message.queue.CopyFrom(pb.QueuePosition(position=event.queue_position))
    elif event.kind == "progress":
        message.progress.CopyFrom(
            pb.Progress(
                step=event.step, total=event.total, loss=event.loss, eta_seconds=event.eta_seconds, rate=event.rate
            )
        )
    elif event.kind == "captioned":
        message.captioned.CopyFrom(pb.Captioned(caption=event.caption))
    elif event.kind == "classified":
        message.classified.CopyFrom(
            pb.Classified(subject_class=class_to_pb(event.subject_class), from_user=event.from_user)
        )
    elif event.kind == "finished":
        finished = pb.Finished()
        if job is not None:
            finished.job.CopyFrom(job_to_pb(job))
        if lora is not None:
            finished.lora.CopyFrom(lora_to_pb(lora))
        finished.images.extend(images or [])
        message.finished.CopyFrom(finished)
    return message


def status_to_pb(report: StatusReport) -> pb.Status:
    current = report.current_job
    return pb.Status(
        ready=report.ready,
        queue_length=report.queue_length,
        current_job_id=current.id if current else "",
        current_lora_name=current.lora_name if current else "",
        current_stage=_STAGE_TO_PB[current.stage] if current else pb.STAGE_UNSPECIFIED,
        base_model=report.base_model,
        captioner_model=report.captioner_model,
        device=report.device,
        preset=report.preset,
        jobs_done=report.jobs_done,
        uptime_seconds=report.uptime_seconds,
        models=report.models,
        workers=[worker_to_pb(worker) for worker in report.workers],
    )


_WORKER_STATE_TO_PB = {
    WorkerState.STARTING: pb.WORKER_STATE_STARTING,
    WorkerState.IDLE: pb.WORKER_STATE_IDLE,
    WorkerState.BUSY: pb.WORKER_STATE_BUSY,
    WorkerState.LOST: pb.WORKER_STATE_LOST,
    WorkerState.STOPPING: pb.WORKER_STATE_STOPPING,
}


def worker_to_pb(worker: WorkerStatus) -> pb.Worker:
    return pb.Worker(
        id=worker.id,
        device=worker.device,
        state=_WORKER_STATE_TO_PB[worker.state],
        job_id=worker.job_id,
        stage=_STAGE_TO_PB[worker.stage] if worker.stage is not None else pb.STAGE_UNSPECIFIED,
        node=worker.node,
        pid=worker.pid,
    )
