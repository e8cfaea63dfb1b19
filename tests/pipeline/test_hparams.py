"""TrainConfig: defaults, the demo shrink, validation and the metadata strings."""

from __future__ import annotations

import dataclasses

import pytest

from daemon.pipeline.hparams import TrainConfig


def test_defaults_are_a_single_subject_sd15_run() -> None:
    cfg = TrainConfig()
    assert (cfg.steps, cfg.rank, cfg.alpha, cfg.learning_rate, cfg.resolution) == (500, 16, 16, 1e-4, 512)
    assert cfg.prior_loss_weight == 1.0 and cfg.mixed_precision == "auto"
    # 1000 subject samples in 500 steps; a text-encoder LoRA at half the UNet's rate.
    assert cfg.steps * cfg.batch_size == 1000
    assert cfg.text_encoder and cfg.text_encoder_learning_rate == cfg.learning_rate / 2
    assert cfg.snapshot_steps() == [300, 400, 500] and cfg.likeness_samples == 8


def test_demo_is_tiny() -> None:
    cfg = TrainConfig.demo()
    assert cfg.resolution == 64 and cfg.steps <= 50 and cfg.rank == 4 and cfg.batch_size == 1
    assert len(cfg.snapshot_steps()) * cfg.likeness_samples <= 4


@pytest.mark.parametrize(
    ("steps", "snapshots", "start", "expected"),
    [(500, 3, 0.6, [300, 400, 500]), (30, 2, 0.6, [18, 30]), (10, 1, 0.5, [10]), (1, 3, 0.6, [1]),
     (4, 5, 0.5, [2, 3, 4]), (100, 2, 1.0, [100])],
)
def test_snapshot_steps_are_late_in_training_and_end_at_the_last_step(
    steps: int, snapshots: int, start: float, expected: list[int]
) -> None:
    cfg = TrainConfig(steps=steps, snapshots=snapshots, snapshot_from=start)
    assert cfg.snapshot_steps() == expected


def test_as_strings_has_every_field_as_text() -> None:
    cfg = TrainConfig.demo().with_steps(7)
    strings = cfg.as_strings()
    assert set(strings) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert strings["steps"] == "7" and strings["learning_rate"] == "0.001"
    assert all(isinstance(v, str) for v in strings.values())


@pytest.mark.parametrize(
    "changes",
    [
        {"steps": 0},
        {"rank": 0},
        {"resolution": 100},
        {"mixed_precision": "fp8"},
        {"batch_size": 0},
        {"log_every": 0},
        {"snapshots": 0},
        {"snapshot_from": 0.0},
        {"snapshot_from": 1.5},
        {"likeness_samples": 0},
    ],
)
def test_invalid_values_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**changes)  # type: ignore[arg-type]
