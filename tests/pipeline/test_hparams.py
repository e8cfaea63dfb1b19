"""TrainConfig: defaults, the demo shrink, validation and the metadata strings."""

from __future__ import annotations

import dataclasses

import pytest

from daemon.pipeline.hparams import TrainConfig


def test_defaults_are_a_single_subject_sd15_run() -> None:
    cfg = TrainConfig()
    assert (cfg.steps, cfg.rank, cfg.alpha, cfg.learning_rate, cfg.resolution) == (1000, 16, 16, 1e-4, 512)
    assert cfg.prior_loss_weight == 1.0 and cfg.mixed_precision == "auto"


def test_demo_is_tiny() -> None:
    cfg = TrainConfig.demo()
    assert cfg.resolution == 64 and cfg.steps <= 50 and cfg.rank == 4


def test_as_strings_has_every_field_as_text() -> None:
    cfg = TrainConfig.demo().with_steps(7)
    strings = cfg.as_strings()
    assert set(strings) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert strings["steps"] == "7" and strings["learning_rate"] == "0.001"
    assert all(isinstance(v, str) for v in strings.values())


@pytest.mark.parametrize("changes", [{"steps": 0}, {"rank": 0}, {"resolution": 100}, {"mixed_precision": "fp8"}])
def test_invalid_values_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**changes)  # type: ignore[arg-type]
