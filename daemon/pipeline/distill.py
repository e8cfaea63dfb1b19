"""The /distill pipeline as a worker runs it: prepare, caption, classify, regularization, train, save.

Naming, fetching and validation happen before a job is queued (daemon/service.py), so a job that reaches a
worker always has its name and its source image. The pipeline never opens the store: the portrait and the
cached regularization sets arrive in ``ctx.inputs``, and the LoRA, its preview and a regularization set built
or grown on the way leave in the ``Outcome``. Each stage reports through the JobContext. The LoRAs that
generation keeps loaded are unloaded first: the regularization images and the new LoRA must come from the bare
base model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from daemon.errors import JobCancelled
from daemon.jobs.contract import JobContext, Outcome, OutputImage, RegSet, StoppedWithResults
from daemon.jobs.model import LoraRecord, Stage, SubjectClass
from daemon.models.captioner import Captioner
from daemon.models.resident import Resident
from daemon.pipeline.adapters import AdapterCache
from daemon.pipeline.classify import Classifier
from daemon.pipeline.face import prepare_portrait
from daemon.pipeline.hparams import TrainConfig
from daemon.pipeline.image import open_png
from daemon.pipeline.regularization import DictRegCache, load_or_build, reg_cache_key
from daemon.pipeline.save import lora_file
from daemon.pipeline.train import train_lora

logger = logging.getLogger(__name__)

# ``preview(ctx, name, subject_class, lora_file)``: a picture made with a LoRA that is not stored yet.
Preview = Callable[[JobContext, str, SubjectClass, bytes], OutputImage]


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
        }
        data = lora_file(result.lora_state_dict, metadata)
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
            training=training,
        )
        images = self._preview(ctx, subject_class, data)
        summary = f"{job.lora_name} is ready: put {job.lora_name} in a prompt to call up this {subject_class}."
        return Outcome(lora=lora, lora_file=data, summary=summary, images=images, reg_set=reg_set)

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
