"""The /distill pipeline as a worker runs it: prepare, caption, classify, regularization, train, likeness, save.

Naming, fetching and validation happen before a job is queued (daemon/service.py), so a job that reaches a
worker always has its name and its source image. The pipeline never opens the store: the portrait and the
cached regularization sets arrive in ``ctx.inputs``, and the LoRA, its preview and a regularization set built
or grown on the way leave in the ``Outcome``. Each stage reports through the JobContext. The LoRAs that
generation keeps loaded are unloaded first: the regularization images and the new LoRA must come from the bare
base model.

The likeness stage draws the same test pictures (``likeness.sample_plan``) with each snapshot training kept,
scores their faces against the photo and keeps the snapshot ``likeness.choose_snapshot`` picks: that one is
the LoRA stored, with its likeness in the file's header, on the LoRA record and in the chat summary. The kept
snapshot's test pictures, each with its score, become the job's preview (``daemon.pipeline.sheet``); only a job
that drew no test pictures (no face in the photo) draws a single first picture instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from daemon.errors import JobCancelled
from daemon.jobs.contract import JobContext, Outcome, OutputImage, RegSet, StoppedWithResults
from daemon.jobs.model import GenerateParams, Job, LoraRecord, LoraUse, Stage, SubjectClass
from daemon.models.captioner import Captioner
from daemon.models.resident import Resident
from daemon.pipeline.adapters import AdapterCache
from daemon.pipeline.classify import Classifier
from daemon.pipeline.face import prepare_portrait
from daemon.pipeline.generate import png_with_text
from daemon.pipeline.hparams import TrainConfig
from daemon.pipeline.image import open_png
from daemon.pipeline.likeness import (
    NO_SOURCE_FACE,
    SAMPLE_STEPS,
    Likeness,
    SampleRequest,
    SampleScore,
    choose_snapshot,
    sample_plan,
    score_sample,
    source_face,
)
from daemon.pipeline.regularization import DictRegCache, load_or_build, reg_cache_key
from daemon.pipeline.save import kohya_metadata, lora_file
from daemon.pipeline.sheet import SheetPicture, label, preview_sheet
from daemon.pipeline.train import TrainResult, train_lora

logger = logging.getLogger(__name__)

# ``preview(ctx, name, subject_class, lora_file)``: a picture made with a LoRA that is not stored yet.
Preview = Callable[[JobContext, str, SubjectClass, bytes], OutputImage]
# ``render(ctx, params, load, prefix)``: pictures as generation draws them (GeneratePipeline.render).
Render = Callable[[JobContext, GenerateParams, Callable[[str], bytes], str], list[OutputImage]]
# ``scorer(photo)``: how a test picture is scored against the training photo; None when the photo has no face.
Scorer = Callable[[Image.Image], Callable[[Image.Image], SampleScore] | None]
# The test pictures' guidance: the usual SD 1.5 default, as the preview and /serve use.
SAMPLE_CFG = 7.0
# A test picture smaller than this holds no face dlib can measure (its descriptor reads a 150 px face chip,
# its detector's smallest face is 40 px after upsampling): such pictures (the demo's 64 px) count as faceless
# instead of letting the enlarged pixels pass for a face.
MIN_PICTURE_SIDE = 128


def face_scorer(photo: Image.Image) -> Callable[[Image.Image], SampleScore] | None:
    """dlib's face distance to the photo's face, copies of the photo marked (daemon/pipeline/likeness.py)."""
    source = source_face(photo)
    if source is None:
        return None

    def score(picture: Image.Image) -> SampleScore:
        if min(picture.size) < MIN_PICTURE_SIDE:
            return SampleScore(distance=None)
        return score_sample(source, picture)

    return score


class _SampleContext:
    """The job's context for drawing test pictures: everything passes through but the denoising steps'
    progress, since the likeness stage counts pictures, not steps."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx
        self.job: Job = ctx.job
        self.inputs = ctx.inputs

    def check(self) -> None:
        self._ctx.check()

    def should_stop(self) -> bool:
        return self._ctx.should_stop()

    def stage(self, stage: Stage, text: str) -> None:
        self._ctx.stage(stage, text)

    def captioned(self, caption: str) -> None:
        self._ctx.captioned(caption)

    def classified(self, subject_class: SubjectClass, from_user: bool) -> None:
        self._ctx.classified(subject_class, from_user)

    def note(self, text: str) -> None:
        self._ctx.note(text)

    def progress(self, step: int, total: int, loss: float = 0.0, what: str = "Step") -> None:
        """Denoising steps of one test picture: not reported."""


def instance_prompt(name: str, subject_class: SubjectClass, caption: str) -> str:
    """How training describes the subject: ``a photo of NAME CLASS``, the name as a new word for this person.

    The caption stays out (it is shown in the chat and kept in the metadata): words that describe hair, age
    or face would take the identity that the name should learn. DreamBooth and EasyPhoto train on fixed
    prompts; FaceChain dropped its descriptive tags for that reason.
    """
    return f"a photo of {name} {subject_class.value}"


def class_prompt(subject_class: SubjectClass) -> str:
    """The prompt of the regularization images, which keep the class itself from drifting."""
    return f"a photo of a {subject_class.value}"


@dataclass
class DistillPipeline:
    """Everything a job needs that outlives the job: resident models and the settings."""

    resident: Resident
    captioner: Captioner
    classifier: Classifier
    train: TrainConfig
    reg_images: int
    adapters: AdapterCache  # generation's LoRAs in the shared pipeline
    # Draws the first picture with the new LoRA (GeneratePipeline.preview); None for no preview.
    preview: Preview | None = None
    # Draws the likeness test pictures (GeneratePipeline.render); None: the last snapshot, likeness not measured.
    render: Render | None = None
    scorer: Scorer = face_scorer

    def __call__(self, ctx: JobContext) -> Outcome:
        job = ctx.job
        ctx.stage(Stage.PREPARE, f"Preparing {job.image_name}.")
        # Before anything uses the UNet: a generation LoRA left on would be in the class images and baked into
        # the new LoRA (train_lora refuses to start over one).
        self.adapters.clear()
        source = ctx.inputs.source_png
        if source is None:
            raise ValueError(f"job {job.id} reached the pipeline without its portrait")
        image = open_png(source)
        # Face check and crop on the CPU, so a photo without a usable face is flagged before any GPU time.
        prepared = prepare_portrait(image, self.train.resolution)
        for warning in prepared.warnings:
            ctx.note(warning)
        image = prepared.image

        ctx.stage(Stage.CAPTION, "Describing the portrait.")
        caption = self.captioner.caption(image)
        ctx.captioned(caption)

        ctx.stage(Stage.CLASSIFY, "Deciding man, woman or person.")
        if job.requested_class is not None:
            subject_class, from_user = job.requested_class, True
        else:
            subject_class, from_user = self.classifier.classify(image, caption), False
        ctx.classified(subject_class, from_user)

        config = self.train
        if job.train_steps:
            config = dataclasses.replace(config, steps=job.train_steps)

        ctx.stage(Stage.REGULARIZATION, f"Gathering {self.reg_images} regularization photos of a {subject_class}.")
        # The class's cached set came with the job; a set built or grown here leaves with the outcome.
        reg_key = reg_cache_key(self.resident.base_model_hash, subject_class, config.resolution)
        reg_cache = DictRegCache()
        cached = ctx.inputs.reg_sets.get(subject_class)
        if cached is not None:
            reg_cache.data[reg_key] = cached
        try:
            reg = load_or_build(
                self.resident,
                subject_class,
                self.reg_images,
                config.resolution,
                reg_cache,
                on_progress=lambda done, total: ctx.progress(done, total, what="Regularization image"),
                should_stop=ctx.should_stop,
            )
        except JobCancelled:
            if not reg_cache.puts:
                raise
            # The images made before the cancel are kept: the next job of this class continues from them.
            kept = Outcome(summary="", reg_set=RegSet(reg_key, reg_cache.data[reg_key]))
            raise StoppedWithResults(kept) from None
        reg_set = RegSet(reg_key, reg_cache.data[reg_key]) if reg_cache.puts else None
        ctx.note(f"Using {reg.count} {reg.source} regularization photos of a {subject_class}.")

        ctx.stage(Stage.TRAIN, f"Training {job.lora_name} for {config.steps} steps.")
        prompt = instance_prompt(job.lora_name, subject_class, caption)
        started_at = time.time()
        result = train_lora(
            self.resident,
            image,
            prompt,
            class_prompt(subject_class),
            reg,
            config,
            flip=job.flip,
            on_step=lambda step, total, loss: ctx.progress(step, total, loss, what="Training step"),
            should_stop=ctx.should_stop,
        )

        likeness, state_dict, tested = self._likeness(ctx, image, subject_class, config, result)

        ctx.stage(Stage.SAVE, f"Saving {job.lora_name}.")
        tokens = self.resident.tokenizer.tokenize(job.lora_name)
        training = config.as_strings() | {"flip": str(job.flip).lower(), "final_loss": f"{result.final_loss:.5f}"}
        metadata = {
            "distillery.name": job.lora_name,
            "distillery.tokens": json.dumps(tokens),
            "distillery.class": subject_class.value,
            "distillery.caption": caption,
            "distillery.instance_prompt": prompt,
            "distillery.base_model": self.resident.base_model,
            "distillery.base_model_sha256": self.resident.base_model_hash,
            "distillery.source_image_sha256": ctx.inputs.source_sha256,
            "distillery.training": json.dumps(training, sort_keys=True),
            "distillery.job_id": job.id,
        } | kohya_metadata(
            name=job.lora_name,
            base_model=self.resident.base_model,
            resolution=config.resolution,
            train_images=1,
            learning_rate=config.learning_rate,
            text_encoder_learning_rate=config.text_encoder_learning_rate if config.text_encoder else None,
            steps=likeness.step,
            network_args={"rank": str(config.rank), "alpha": str(config.alpha)},
            started_at=started_at,
            instance_prompt=prompt,
            likeness=likeness.metadata(),
            comment=likeness.summary(),
        )
        data = lora_file(state_dict, metadata)
        lora = LoraRecord(
            name=job.lora_name,
            owner=job.owner,
            job_id=job.id,
            subject_class=subject_class,
            caption=caption,
            instance_prompt=prompt,
            base_model=self.resident.base_model,
            base_model_hash=self.resident.base_model_hash,
            image_name=job.image_name,
            image_sha256=ctx.inputs.source_sha256,
            size_bytes=len(data),
            created_at=time.time(),
            tokens=tokens,
            training=training | {"likeness_step": str(likeness.step)},
            likeness=likeness.record(),
        )
        images = [self._sheet(ctx, likeness, tested)] if tested else self._preview(ctx, subject_class, data)
        summary = f"{job.lora_name} is ready: put {job.lora_name} in a prompt to call up this {subject_class}. "
        summary += likeness.summary()
        return Outcome(lora=lora, lora_file=data, summary=summary, images=images, reg_set=reg_set)

    def _likeness(
        self,
        ctx: JobContext,
        photo: Image.Image,
        subject_class: SubjectClass,
        config: TrainConfig,
        result: TrainResult,
    ) -> tuple[Likeness, dict[str, torch.Tensor], list[tuple[SampleRequest, SheetPicture]]]:
        """Draw the test pictures with every snapshot, score them and keep the snapshot that looks most like
        the photo: the likeness, that snapshot's weights and its test pictures with their scores. Without a face
        in the photo or a renderer, the last snapshot is kept, the likeness is not measured and no picture is
        drawn."""
        snapshots = {snapshot.step: snapshot.lora_state_dict for snapshot in result.snapshots}
        last = result.steps
        snapshots.setdefault(last, result.lora_state_dict)
        score = self.scorer(photo)
        if score is None:
            return Likeness.not_measured(last, NO_SOURCE_FACE), snapshots[last], []
        if self.render is None:
            return Likeness.not_measured(last, "likeness not measured: no test pictures here"), snapshots[last], []
        name = ctx.job.lora_name
        steps = sorted(snapshots)
        plan = sample_plan(f"{name} {subject_class.value}", steps, config.likeness_samples)
        ctx.stage(Stage.LIKENESS, f"Drawing {len(plan)} test pictures of {name} to measure the likeness.")
        drawn: dict[int, list[tuple[SampleRequest, SheetPicture]]] = {}

        def scorer(step: int) -> Sequence[SampleScore]:
            data = lora_file(snapshots[step], {})
            pictures = drawn.setdefault(step, [])
            for request in (r for r in plan if r.step == step):
                picture = self._sample(ctx, name, data, request)
                pictures.append((request, SheetPicture(picture, score(picture))))
                ctx.progress(sum(map(len, drawn.values())), len(plan), what="Test picture")
            return [sheet_picture.score for _, sheet_picture in pictures]

        likeness = choose_snapshot(steps, scorer)
        ctx.note(f"{likeness.summary()} Keeping the LoRA after {likeness.step} of {last} steps.")
        return likeness, snapshots[likeness.step], drawn[likeness.step]

    def _sample(self, ctx: JobContext, name: str, data: bytes, request: SampleRequest) -> Image.Image:
        """One test picture with one snapshot's LoRA file, at the model's own size."""
        assert self.render is not None
        side = self.resident.resolution
        params = GenerateParams(
            prompt=request.prompt,
            full_prompt=request.prompt,
            loras=[LoraUse(name=name, weight=1.0)],
            negative_prompt="",
            seed=request.seed,
            cfg=SAMPLE_CFG,
            steps=min(SAMPLE_STEPS, self.resident.sample_steps),
            width=side,
            height=side,
            count=1,
        )
        prefix = f"{ctx.job.id}-likeness-{request.step}-{request.index}"
        [image] = self.render(_SampleContext(ctx), params, lambda _: data, prefix)
        return open_png(image.png)

    def _sheet(
        self, ctx: JobContext, likeness: Likeness, tested: list[tuple[SampleRequest, SheetPicture]]
    ) -> OutputImage:
        """The kept snapshot's test pictures as the job's preview, each labelled with its score. Its
        ``parameters`` text lists every picture's score, seed and prompt, so /info explains the sheet."""
        name = ctx.job.lora_name
        heading = f"Likeness test pictures of {name}, the LoRA after {likeness.step} training steps."
        lines = [f"{heading} {likeness.summary()}"]
        for number, (request, picture) in enumerate(tested, start=1):
            text, _ = label(picture.score)
            lines.append(f"{number}: {text}, seed {request.seed}: {request.prompt} <lora:{name}:1>")
        parameters = "\n".join(lines)
        sheet = preview_sheet([picture for _, picture in tested])
        facts = {"job_id": ctx.job.id, "lora": name, "likeness_step": likeness.step, "sheet": len(tested)}
        png = png_with_text(sheet, {"parameters": parameters, "distillery": json.dumps(facts)})
        info = {
            "seed": tested[0][0].seed,
            "width": sheet.width,
            "height": sheet.height,
            "parameters": parameters,
            "loras": [{"name": name, "weight": 1.0}],
        }
        return OutputImage(name=f"{ctx.job.id}-preview-1.png", png=png, info=info)

    def _preview(self, ctx: JobContext, subject_class: SubjectClass, data: bytes) -> list[OutputImage]:
        """The first picture with the new LoRA; a failure costs the picture, never the LoRA (a cancel stops
        the job as anywhere else)."""
        if self.preview is None:
            return []
        name = ctx.job.lora_name
        ctx.stage(Stage.PREVIEW, f"Drawing a first picture of {name}.")
        try:
            return [self.preview(ctx, name, subject_class, data)]
        except JobCancelled:
            raise
        except Exception as error:
            logger.exception("job %s: the preview failed", ctx.job.id)
            ctx.note(f"No first picture this time ({type(error).__name__}); the LoRA is fine.")
            return []
