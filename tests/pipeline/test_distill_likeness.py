"""The likeness stage of /distill: every snapshot draws its test pictures, and the one that looks most like the
photo is the LoRA stored. Training, the class images and the pictures are fakes; the choice is the real one."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

import daemon.pipeline.distill as distill
from daemon.jobs.contract import JobInputs, OutputImage
from daemon.jobs.model import GenerateParams, LikenessScore, Stage, SubjectClass, lora_from_json, to_json
from daemon.pipeline.distill import DistillPipeline
from daemon.pipeline.hparams import TrainConfig
from daemon.pipeline.likeness import SampleScore, display_score
from daemon.pipeline.regularization import RegularizationSet
from daemon.pipeline.save import kohya_key
from daemon.pipeline.train import Snapshot, TrainResult
from tests.records import make_job

STEPS = (18, 24, 30)
BEST = 24
KEY = "down_blocks.0.attentions.0.proj_in.lora.down.weight"
UP = "down_blocks.0.attentions.0.proj_in.lora.up.weight"


def weights(step: int) -> dict[str, torch.Tensor]:
    """A LoRA whose every weight is its step / 100: the picture it draws can tell which snapshot it was."""
    return {KEY: torch.full((2, 4), step / 100), UP: torch.full((4, 2), step / 100)}


class Context:
    """A JobContext that records what the stage reports."""

    def __init__(self, png: bytes) -> None:
        self.job = make_job("job-1", "rifttami")
        self.inputs: JobInputs[bytes] = JobInputs(source_png=png, source_sha256="abc")
        self.stages: list[Stage] = []
        self.progress_seen: list[tuple[Stage, int, int, str]] = []
        self.notes: list[str] = []

    def check(self) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def stage(self, stage: Stage, text: str) -> None:
        self.stages.append(stage)

    def captioned(self, caption: str) -> None:
        pass

    def classified(self, subject_class: SubjectClass, from_user: bool) -> None:
        pass

    def note(self, text: str) -> None:
        self.notes.append(text)

    def progress(self, step: int, total: int, loss: float = 0.0, what: str = "Step") -> None:
        self.progress_seen.append((self.stages[-1], step, total, what))


def fake_render(ctx: Any, params: GenerateParams, load: Any, prefix: str) -> list[OutputImage]:
    """A grey picture whose level is the LoRA's step, as a drawing would depend on the LoRA; it reports
    denoising steps as the real renderer does."""
    [use] = params.loras
    level = round(float(safetensors.torch.load(load(use.name))[kohya_key(KEY)][0, 0]) * 100)
    ctx.progress(1, params.steps, what="Step")
    buf = io.BytesIO()
    Image.new("RGB", (params.width, params.height), (level, level, level)).save(buf, format="PNG")
    return [OutputImage(name=f"{prefix}-1.png", png=buf.getvalue(), info={})]


def fake_scorer(photo: Image.Image) -> Any:
    """Pictures of the middle snapshot are close to the photo, the others are strangers."""

    def score(picture: Image.Image) -> SampleScore:
        step = int(np.asarray(picture)[0, 0, 0])
        return SampleScore(distance=0.3 if step == BEST else 0.8)

    return score


def fake_train(resident: Any, image: Any, prompt: str, class_prompt: str, reg: Any, cfg: TrainConfig,
               **kwargs: Any) -> TrainResult:  # fmt: skip
    assert cfg.snapshot_steps() == list(STEPS)
    snapshots = [Snapshot(step, weights(step)) for step in STEPS]
    return TrainResult(weights(STEPS[-1]), cfg.steps, 0.1, 0.0, snapshots)


@pytest.fixture
def pipeline(monkeypatch: pytest.MonkeyPatch) -> DistillPipeline:
    monkeypatch.setattr(distill, "train_lora", fake_train)
    reg = RegularizationSet(SubjectClass.WOMAN, torch.zeros(1, 4, 8, 8), 1, "generated")
    monkeypatch.setattr(distill, "load_or_build", lambda *args, **kwargs: reg)
    resident = SimpleNamespace(
        base_model="demo",
        base_model_hash="0" * 64,
        tokenizer=SimpleNamespace(tokenize=lambda name: ["rift", "tami"]),
        resolution=16,
        sample_steps=4,
    )
    return DistillPipeline(
        resident=resident,  # type: ignore[arg-type]
        captioner=SimpleNamespace(caption=lambda image: "a woman in a space suit"),  # type: ignore[arg-type]
        classifier=SimpleNamespace(classify=lambda image, caption: SubjectClass.WOMAN),  # type: ignore[arg-type]
        train=dataclasses.replace(TrainConfig.demo(), snapshots=3),
        reg_images=1,
        adapters=SimpleNamespace(clear=lambda: None),  # type: ignore[arg-type]
        render=fake_render,
        scorer=fake_scorer,
    )


def test_the_snapshot_that_looks_most_like_the_photo_is_the_lora_stored(
    pipeline: DistillPipeline, portrait_png: bytes
) -> None:
    ctx = Context(portrait_png)
    outcome = pipeline(ctx)  # type: ignore[arg-type]

    assert outcome.lora is not None and outcome.lora_file is not None
    stored = safetensors.torch.load(outcome.lora_file)
    values = [float(value.flatten()[0]) for key, value in stored.items() if key.endswith("weight")]
    assert len(values) == 2 and values == pytest.approx([BEST / 100] * 2, abs=1e-3)
    likeness = outcome.lora.likeness
    assert likeness == LikenessScore(
        measured=True, score=display_score(0.3), under_threshold=2, samples=2, median_distance=0.3, step=BEST
    )
    assert f"Likeness {display_score(0.3)}/100: 2 of 2 test pictures look like the photo." in outcome.summary
    (size,) = struct.unpack("<Q", outcome.lora_file[:8])
    header = json.loads(outcome.lora_file[8 : 8 + size])["__metadata__"]
    assert header["ss_likeness_step"] == str(BEST) and header["ss_likeness_score"] == str(display_score(0.3))
    assert header["ss_max_train_steps"] == str(BEST)
    # The stage comes between training and saving; its progress counts test pictures, not denoising steps.
    assert ctx.stages.index(Stage.TRAIN) < ctx.stages.index(Stage.LIKENESS) < ctx.stages.index(Stage.SAVE)
    counted = [(step, total, what) for stage, step, total, what in ctx.progress_seen if stage == Stage.LIKENESS]
    assert counted == [(n, 6, "Test picture") for n in range(1, 7)]
    # The record keeps the likeness through a JSON round trip, and records from before it load without one.
    assert lora_from_json(to_json(outcome.lora)).likeness == likeness
    old = json.loads(to_json(outcome.lora))
    del old["likeness"]
    assert lora_from_json(json.dumps(old).encode()).likeness is None


def test_a_photo_without_a_face_keeps_the_last_snapshot_unmeasured(
    pipeline: DistillPipeline, portrait_png: bytes
) -> None:
    pipeline.scorer = lambda photo: None
    ctx = Context(portrait_png)
    outcome = pipeline(ctx)  # type: ignore[arg-type]

    assert outcome.lora is not None and outcome.lora.likeness is not None
    assert not outcome.lora.likeness.measured and outcome.lora.likeness.step == STEPS[-1]
    assert "Likeness not measured: no face in the photo." in outcome.summary
    assert Stage.LIKENESS not in ctx.stages


def test_pictures_too_small_for_a_face_count_as_faceless(portrait_png: bytes) -> None:
    from daemon.pipeline.image import open_png

    photo = open_png(portrait_png)
    score = distill.face_scorer(photo)
    assert score is not None
    # The photo itself, shrunk below what dlib can measure, has no face; at full size it is the same person.
    assert score(photo.resize((64, 64))) == SampleScore(distance=None)
    full = score(photo)
    assert full.distance is not None and full.distance < 0.1


def test_the_kept_snapshots_test_pictures_are_the_preview_sheet(
    pipeline: DistillPipeline, portrait_png: bytes
) -> None:
    drawn: list[str] = []

    def preview(ctx: Any, name: str, subject_class: SubjectClass, data: bytes) -> OutputImage:
        drawn.append(name)
        return OutputImage(name="unused.png", png=b"", info={})

    pipeline.preview = preview
    outcome = pipeline(Context(portrait_png))  # type: ignore[arg-type]

    # The sheet replaces the single first picture: no preview drawn, the kept snapshot's two pictures shown.
    assert drawn == []
    [sheet] = outcome.images
    assert sheet.name == "job-1-preview-1.png" and sheet.info["seed"] == 0
    lines = sheet.info["parameters"].splitlines()
    assert lines[0].startswith(f"Likeness test pictures of rifttami, the LoRA after {BEST} training steps.")
    score = f"{display_score(0.3)}/100"
    assert lines[1:] == [
        f"1: {score}, seed 0: a portrait photo of rifttami woman, looking at the camera <lora:rifttami:1>",
        f"2: {score}, seed 1: a photo of rifttami woman in a park, smiling <lora:rifttami:1>",
    ]
    picture = Image.open(io.BytesIO(sheet.png))
    assert (picture.width, picture.height) == (sheet.info["width"], sheet.info["height"])
    assert picture.text["parameters"] == sheet.info["parameters"]  # type: ignore[attr-defined]
    # Each cell is a picture the kept snapshot drew (the fake renderer's grey level is its step).
    assert tuple(np.asarray(picture.convert("RGB"))[10, 10]) == (BEST, BEST, BEST)


def test_without_test_pictures_the_single_first_picture_is_the_preview(
    pipeline: DistillPipeline, portrait_png: bytes
) -> None:
    first = OutputImage(name="job-1-preview-1.png", png=b"PNG", info={})
    pipeline.preview = lambda ctx, name, subject_class, data: first
    pipeline.scorer = lambda photo: None
    ctx = Context(portrait_png)
    outcome = pipeline(ctx)  # type: ignore[arg-type]
    assert outcome.images == [first] and Stage.PREVIEW in ctx.stages
