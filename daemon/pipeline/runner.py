"""A worker's one pipeline: each job goes to the pipeline of its kind, all sharing one set of resident models.

``build_runner`` wires the distill, generate and import pipelines around a ``Resident``; the local worker
thread and every Ray actor build theirs the same way, so a job runs the same code wherever it runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daemon.jobs.contract import JobContext, Outcome, Pipeline
from daemon.jobs.model import JobKind, Stage, SubjectClass
from daemon.models.config import ModelConfig
from daemon.models.resident import Resident
from daemon.models.switch import ModelSwitcher
from daemon.pipeline.adapters import AdapterCache
from daemon.pipeline.classify import CaptionClassifier
from daemon.pipeline.distill import DistillPipeline
from daemon.pipeline.generate import GeneratePipeline
from daemon.pipeline.hparams import TrainConfig
from daemon.pipeline.reg_import import RegImportPipeline
from daemon.pipeline.regularization import reg_cache_key


@dataclass(frozen=True)
class WorkerFacts:
    """What a worker's resident models are, as the daemon needs them to name LoRAs and accept /serve."""

    base_model: str
    base_model_hash: str
    captioner_model: str
    device: str
    resolution: int
    size_multiple: int
    sample_steps: int
    adapt_available: bool
    tokenizer: Any  # the base model's CLIP tokenizer, which LoRA names are minted from
    node: str = ""
    pid: int = 0
    face_adapt_available: bool = False

    @classmethod
    def of(cls, resident: Resident, node: str = "", pid: int = 0) -> WorkerFacts:
        """The facts of loaded models."""
        return cls(
            base_model=resident.base_model,
            base_model_hash=resident.base_model_hash,
            captioner_model=str(getattr(resident.captioner, "name", "")),
            device=str(resident.device),
            resolution=resident.resolution,
            size_multiple=resident.size_multiple,
            sample_steps=resident.sample_steps,
            adapt_available=resident.ip_adapter is not None,
            face_adapt_available=resident.ip_adapter is not None and resident.ip_adapter.face is not None,
            tokenizer=resident.tokenizer,
            node=node,
            pid=pid,
        )

    def reg_key(self, train_resolution: int) -> Callable[[SubjectClass], str]:
        """Where the store keeps each class's regularization set for these models."""

        def key(subject_class: SubjectClass) -> str:
            return reg_cache_key(self.base_model_hash, subject_class, train_resolution)

        return key


@dataclass
class JobRunner:
    """The worker's one pipeline: a job goes to the pipeline of its kind."""

    distill: Pipeline
    generate: Pipeline
    reg_import: Pipeline | None = None
    models: ModelSwitcher | None = None

    def __call__(self, ctx: JobContext) -> Outcome:
        kind = ctx.job.kind
        if kind != JobKind.GENERATE and self.models is not None:
            # Training and regularization images always use the configured base, whatever /serve left resident.
            self.models.ensure("", lambda text: ctx.stage(Stage.PREPARE, text))
        if kind == JobKind.GENERATE:
            return self.generate(ctx)
        if kind == JobKind.DISTILL:
            return self.distill(ctx)
        if kind == JobKind.REG_IMPORT and self.reg_import is not None:
            return self.reg_import(ctx)
        raise ValueError(f"job {ctx.job.id} has an unknown kind {kind!r}")


def build_runner(
    resident: Resident, train: TrainConfig, reg_images: int, lora_cache: int, models: ModelConfig | None = None
) -> JobRunner:
    """Every pipeline over one set of resident models; with ``models`` naming /serve checkpoints, a switcher
    that loads them into the resident modules on demand."""
    # One LoRA cache for both pipelines: generation fills it, distillation empties it before training.
    adapters = AdapterCache(resident.pipeline, lora_cache)
    switcher = None
    if models is not None and models.serve_models:
        # The base as loaded (the demo preset's folders are only known once built).
        switcher = ModelSwitcher(resident, dataclasses.replace(models, base_model=resident.base_model), adapters)
    generate = GeneratePipeline(resident=resident, adapters=adapters, models=switcher)
    distill = DistillPipeline(
        resident=resident,
        captioner=resident.captioner,
        # The fallback asks the resident captioner about the image when the caption names nobody.
        classifier=CaptionClassifier(ask=getattr(resident.captioner, "ask", None)),
        train=train,
        reg_images=reg_images,
        adapters=adapters,
        preview=generate.preview,
        render=generate.render,
    )
    reg_import = RegImportPipeline(resident=resident, resolution=train.resolution)
    return JobRunner(distill=distill, generate=generate, reg_import=reg_import, models=switcher)
