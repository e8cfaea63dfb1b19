"""Job events -> the text of one progress message, shared by the Telegram and Slack bots and the CLI.

A JobView folds a job's events into what the chat shows; ``progress_text`` and ``summary_text`` write it. The
text is plain (no markup) so both platforms show it the same way; only ``bar`` decides how progress looks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from distillery.v1 import distillery_pb2 as pb

STAGE_LABELS = {
    pb.STAGE_QUEUED: "Waiting in the queue",
    pb.STAGE_PREPARE: "Preparing the picture",
    pb.STAGE_CAPTION: "Describing the portrait",
    pb.STAGE_CLASSIFY: "Deciding man, woman or person",
    pb.STAGE_REGULARIZATION: "Gathering regularization photos",
    pb.STAGE_TRAIN: "Training",
    pb.STAGE_SAVE: "Saving",
    pb.STAGE_DONE: "Done",
    pb.STAGE_GENERATE: "Generating",
    pb.STAGE_PREVIEW: "Drawing a first picture",
    pb.STAGE_LIKENESS: "Measuring the likeness",
}
CLASS_NAMES = {
    pb.SUBJECT_CLASS_MAN: "man",
    pb.SUBJECT_CLASS_WOMAN: "woman",
    pb.SUBJECT_CLASS_PERSON: "person",
}
FINISHED_STATES = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


def bar(step: int, total: int, width: int = 16) -> str:
    """A text progress bar like ``[#######.........] 44%``."""
    fraction = min(max(step / total, 0.0), 1.0) if total else 0.0
    filled = round(fraction * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {fraction:.0%}"


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``."""
    seconds = max(round(seconds), 0)
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"


@dataclass
class JobView:
    """What a chat knows about one job, folded from its events in order."""

    job_id: str = ""
    lora_name: str = ""
    state: int = pb.JOB_STATE_QUEUED
    stage: int = pb.STAGE_QUEUED
    queue_position: int = 0
    caption: str = ""
    subject_class: str = ""
    step: int = 0
    total: int = 0
    loss: float = 0.0
    eta_seconds: float = 0.0
    last_text: str = ""
    last_seq: int = 0
    error: str = ""
    job: pb.Job | None = None
    lora: pb.Lora | None = None
    progress_stage: int = pb.STAGE_UNSPECIFIED
    notes: list[str] = field(default_factory=list)
    kind: int = pb.JOB_KIND_DISTILL
    # Generation jobs: the request (set by the frontend that sent it, or from the job record), then the images.
    generate: pb.GenerateSpec | None = None
    images: list[pb.ImageInfo] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def generating(self) -> bool:
        return bool(self.kind == pb.JOB_KIND_GENERATE)

    def apply(self, event: pb.JobEvent) -> None:
        """Fold one event in; events at or below last_seq (a replay overlap) are ignored."""
        if event.seq and event.seq <= self.last_seq:
            return
        self.last_seq = event.seq
        self.job_id = event.job_id or self.job_id
        self.state = event.state or self.state
        if event.stage != self.stage:
            self.step = self.total = 0
        self.stage = event.stage or self.stage
        self.last_text = event.text
        detail = event.WhichOneof("detail")
        if detail == "accepted":
            self.lora_name = event.accepted.lora_name
            self.queue_position = event.accepted.queue_position
            self.kind = event.accepted.kind or self.kind
        elif detail == "queue":
            self.queue_position = event.queue.position
        elif detail == "progress":
            self.progress_stage = event.stage
            self.step, self.total = event.progress.step, event.progress.total
            self.loss, self.eta_seconds = event.progress.loss, event.progress.eta_seconds
        elif detail == "captioned":
            self.caption = event.captioned.caption
        elif detail == "classified":
            self.subject_class = CLASS_NAMES.get(event.classified.subject_class, "person")
        elif detail == "finished":
            self.job = event.finished.job if event.finished.HasField("job") else None
            self.lora = event.finished.lora if event.finished.HasField("lora") else None
            self.images = list(event.finished.images)
            if self.job is not None:
                self.error = self.job.error
                self.lora_name = self.job.lora_name or self.lora_name
                self._take_kind(self.job)

    def apply_job(self, job: pb.Job) -> None:
        """Seed the view from a job record (a frontend re-attaching after a restart)."""
        self.job_id, self.lora_name, self.state, self.stage = job.id, job.lora_name, job.state, job.stage
        self.caption = job.caption
        self.subject_class = CLASS_NAMES.get(job.subject_class, "")
        self.error = job.error
        self._take_kind(job)

    def _take_kind(self, job: pb.Job) -> None:
        self.kind = job.kind or self.kind
        if job.HasField("generate"):
            self.generate = job.generate
        if job.output_images and not self.images:
            # A record read back (not the FINISHED event) names its images; their details are a call away.
            self.images = [pb.ImageInfo(name=name, generated=True) for name in job.output_images]


def generation_title(view: JobView) -> str:
    """``Generating 2 images with rifttami`` (or of the prompt alone); ``Upscaling 3f2a9c1d-1.png``."""
    spec = view.generate
    if spec is not None and spec.upscale_image:
        return f"Upscaling {spec.upscale_image}"
    count = spec.count if spec is not None and spec.count else 1
    images = "an image" if count == 1 else f"{count} images"
    names = ", ".join(use.name for use in spec.loras) if spec is not None else ""
    return f"Generating {images} with {names}" if names else f"Generating {images}"


def progress_text(view: JobView) -> str:
    """The live progress message: name, stage, and what the job has learned so far."""
    if view.generating:
        title = generation_title(view)
    else:
        title = f"Distilling {view.lora_name}" if view.lora_name else "Distilling"
    lines = [title]
    if view.state == pb.JOB_STATE_QUEUED:
        position = "next" if view.queue_position == 1 else f"number {view.queue_position}"
        lines.append(f"Waiting in the queue: {position}." if view.queue_position else "Waiting in the queue.")
    else:
        lines.append(f"Stage: {STAGE_LABELS.get(view.stage, 'Working')}")
    if view.caption:
        lines.append(f"Caption: {view.caption}")
    if view.subject_class:
        lines.append(f"Class: {view.subject_class}")
    if view.total and view.stage == view.progress_stage:
        unit = "step" if view.stage in (pb.STAGE_TRAIN, pb.STAGE_GENERATE, pb.STAGE_PREVIEW) else "image"
        unit = "test picture" if view.stage == pb.STAGE_LIKENESS else unit
        line = f"{bar(view.step, view.total)} {unit} {view.step}/{view.total}"
        if view.stage == pb.STAGE_TRAIN and view.loss:
            line += f", loss {view.loss:.4f}"
        if view.step < view.total and view.eta_seconds:
            line += f", about {duration(view.eta_seconds)} left"
        lines.append(line)
    return "\n".join(lines)


def usage_text(name: str, subject_class: str) -> str:
    """How to use a finished LoRA."""
    subject = subject_class or "person"
    return (
        f'Use it by writing {name} in a prompt, e.g. "a portrait of {name} {subject} as an astronaut".\n'
        f"The source picture is stored as {name}.png."
    )


def summary_text(view: JobView, info_hint: str = "") -> str:
    """The message a finished job leaves behind; info_hint replaces a generation's "Reply /info" line."""
    job = view.job
    took = ""
    if job is not None and job.finished_at and job.created_at:
        took = f" in {duration(job.finished_at - job.created_at)}"
    if view.generating:
        return generation_summary(view, took, info_hint)
    if view.state == pb.JOB_STATE_SUCCEEDED:
        lines = [f"{view.lora_name} is ready{took}."]
        likeness = _likeness(view.lora) or _likeness(job)
        if likeness is not None:
            lines.append(likeness.summary)
        if view.subject_class:
            lines.append(f"Class: {view.subject_class}")
        if view.caption:
            lines.append(f"Caption: {view.caption}")
        lines.append(usage_text(view.lora_name, view.subject_class))
        return "\n".join(lines)
    if view.state == pb.JOB_STATE_CANCELLED:
        return f"{view.lora_name} was cancelled."
    reason = view.error or view.last_text or "unknown error"
    return f"{view.lora_name} failed: {reason}"


def message_text(view: JobView, info_hint: str = "") -> str:
    """Whichever of progress and summary fits the job's state now."""
    return summary_text(view, info_hint) if view.finished else progress_text(view)


# The last line of a generation's summary; a platform without replies to pictures passes its own way.
INFO_HINT = "Reply /info to an image for all its parameters."


def generation_summary(view: JobView, took: str = "", info_hint: str = "") -> str:
    """A finished generation: what was made, how to make it again and how to see an image's parameters."""
    if view.state == pb.JOB_STATE_CANCELLED:
        return "The generation was cancelled."
    if view.state != pb.JOB_STATE_SUCCEEDED:
        return f"The generation failed: {view.error or view.last_text or 'unknown error'}"
    count = len(view.images)
    lines = [f"{'Your image is' if count == 1 else f'Your {count} images are'} ready{took}."]
    spec = view.generate
    if spec is not None:
        lines.append(f"Prompt: {spec.full_prompt or spec.prompt}")
        if spec.loras:
            lines.append("LoRAs: " + ", ".join(f"{use.name} ({use.weight:g})" for use in spec.loras))
        seeds = f"seed {spec.seed}" if count <= 1 else f"seeds {spec.seed}-{spec.seed + count - 1}"
        size = f"{spec.width}x{spec.height}"
        made = (view.images[0].width, view.images[0].height) if view.images else (0, 0)
        if made[0] and made != (spec.width, spec.height):  # the hires pass (--power, /upscale) enlarged it
            size = f"{made[0]}x{made[1]} (from {size})"
        lines.append(f"{size}, {spec.steps} steps, CFG {spec.cfg:g}, {seeds}")
        if spec.upscale_image:
            method = spec.upscale_method or "latent"
            lines.append(f"Upscaled from {spec.upscale_image}: {spec.power_scale or 2:g} times, {method}")
    lines.append(info_hint or INFO_HINT)
    return "\n".join(lines)


def image_caption(info: pb.ImageInfo) -> str:
    """The caption under a generated image; it starts with the image's name, which /info looks up."""
    loras = ", ".join(f"{use.name} {use.weight:g}" for use in info.loras)
    return f"{info.name} - seed {info.seed}" + (f" - {loras}" if loras else "")


def image_info_text(info: pb.ImageInfo) -> str:
    """/info: a generated image's parameters as AUTOMATIC1111 writes them, or a source image's facts."""
    if info.generated:
        return f"{info.name} ({info.width}x{info.height})\n{info.parameters}"
    made = f"; the source picture of {info.lora_name}" if info.lora_name else ""
    return f"{info.name}: {info.width}x{info.height}, {info.size_bytes // 1024} KB{made}."


def same_person(a: pb.Requester, b: pb.Requester) -> bool:
    """Whether two requesters are one user (the chat they write from does not matter)."""
    return (a.platform, a.workspace, a.user) == (b.platform, b.workspace, b.user)


def _likeness(record: pb.Lora | pb.Job | None) -> pb.Likeness | None:
    """A LoRA's or job's likeness; None for records from before likeness was measured."""
    return record.likeness if record is not None and record.HasField("likeness") else None


def likeness_short(lora: pb.Lora) -> str:
    """The likeness in a few words, for lists: "likeness 78/100" or "likeness not measured"."""
    likeness = _likeness(lora)
    if likeness is None:
        return ""
    return f"likeness {likeness.score}/100" if likeness.measured else "likeness not measured"


def lora_line(lora: pb.Lora, requester: pb.Requester) -> str:
    """One line of /loras."""
    whose = "yours" if same_person(lora.owner, requester) else "shared"
    visibility = "public" if lora.public else "private"
    line = f"{lora.name} - {CLASS_NAMES.get(lora.subject_class, 'person')}, {whose}, {visibility}"
    short = likeness_short(lora)
    line += f", {short}" if short else ""
    return line + (f" - {lora.description}" if lora.description else "")


def loras_text(loras: list[pb.Lora], requester: pb.Requester) -> str:
    """/loras: the user's LoRAs first, then public ones."""
    if not loras:
        return "No LoRAs yet. Send /distill with a portrait to make one."
    mine = [lora for lora in loras if same_person(lora.owner, requester)]
    shared = [lora for lora in loras if not same_person(lora.owner, requester)]
    lines = []
    if mine:
        lines += ["Your LoRAs:", *(lora_line(lora, requester) for lora in mine)]
    if shared:
        lines += ["Public LoRAs:", *(lora_line(lora, requester) for lora in shared)]
    lines.append("/lora <name> for details; /serve <prompt> --lora <name> to use one.")
    return "\n".join(lines)


def lora_text(lora: pb.Lora, requester: pb.Requester) -> str:
    """/lora <name>: everything a user may know about a LoRA."""
    mine = same_person(lora.owner, requester)
    created = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(lora.created_at)) if lora.created_at else "unknown"
    training = lora.training
    settings = ", ".join(
        f"{key} {training[key]}"
        for key in ("steps", "rank", "learning_rate", "resolution", "flip")
        if key in training
    )
    lines = [
        f"{lora.name}" + (f" - {lora.description}" if lora.description else ""),
        f"Owner: {'you' if mine else lora.owner.user}; {'public' if lora.public else 'private'}",
        f"Created: {created}",
        f"Class: {CLASS_NAMES.get(lora.subject_class, 'person')}",
        f"Caption: {lora.caption}" if lora.caption else "",
        f"Base model: {lora.base_model}",
        f"Training: {settings}" if settings else "",
        likeness.summary if (likeness := _likeness(lora)) is not None else "",
        f"Size: {lora.size_bytes / 1e6:.1f} MB",
    ]
    if mine:
        shown = "others see it" if lora.show_image and lora.public else "only you see it"
        lines.append(f"Source picture: {lora.image_name} ({shown})")
    elif lora.show_image:
        lines.append(f"Source picture: {lora.image_name}")
    lines.append(f'Use it: /serve "a portrait of {lora.name} as an astronaut" --lora {lora.name}')
    return "\n".join(line for line in lines if line)


def models_text(status: pb.Status) -> str:
    """The models /serve --model may name (/models), after the base model that training uses."""
    lines = [f"base: {status.base_model} (the default, and what training uses)"]
    lines += [f"{name}: /serve ... --model {name}" for name in status.models]
    if not status.models:
        lines.append("No other models are configured.")
    return "\n".join(lines)


def stats_text(stats: pb.UserStats) -> str:
    """A user's numbers (/stats), with what is left of the daily quotas where the operator set them."""

    def today(used: int, field: str) -> str:
        return f"{used} ({getattr(stats, field)} left)" if stats.HasField(field) else str(used)

    lines = [
        f"LoRAs: {stats.loras_owned} ({stats.public_loras} public)",
        f"Distill jobs: {stats.distill_jobs}",
        f"Generations: {stats.generate_jobs}, {stats.images_generated} images",
    ]
    if stats.HasField("images_left_today") or stats.HasField("distills_left_today"):
        # Only where the operator set daily quotas: then what is used and left today matters.
        lines.append(
            f"Today: {today(stats.images_today, 'images_left_today')} images, "
            f"{today(stats.distills_today, 'distills_left_today')} LoRAs distilled; "
            "the count starts again at 00:00 UTC."
        )
    return "\n".join(lines)


STATE_WORDS = {
    pb.JOB_STATE_QUEUED: "queued",
    pb.JOB_STATE_RUNNING: "running",
    pb.JOB_STATE_SUCCEEDED: "ready",
    pb.JOB_STATE_FAILED: "failed",
    pb.JOB_STATE_CANCELLED: "cancelled",
}


def jobs_text(jobs: list[pb.Job]) -> str:
    """A user's jobs, newest first, one line each (for /jobs)."""
    if not jobs:
        return "You have no jobs yet. Send /distill with a portrait to start one."
    lines = ["Your jobs:"]
    for job in jobs:
        label = job.lora_name
        if job.kind == pb.JOB_KIND_GENERATE:
            count = job.generate.count or 1
            label = f"{'an image' if count == 1 else f'{count} images'} ({job.id})"
        line = f"{label}: {STATE_WORDS.get(job.state, 'unknown')}"
        if job.state == pb.JOB_STATE_RUNNING:
            line += f" ({STAGE_LABELS.get(job.stage, 'working').lower()})"
        if job.error and job.state == pb.JOB_STATE_FAILED:
            line += f" - {job.error}"
        lines.append(line)
    return "\n".join(lines)
