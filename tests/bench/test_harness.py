"""The benchmark harness runs end to end: both loops train, and every reported figure is there and sane."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bench.harness import StepClock, main, render, steady_rate


def test_steady_rate_leaves_out_the_warm_up() -> None:
    # Steps 1 and 2 are slow warm-up (ending at 5 s and 10 s), then one step every 0.5 s up to step 6.
    assert steady_rate({1: 5.0, 2: 10.0, 6: 12.0}, 2, 6) == pytest.approx(2.0)
    # One step: no rate rather than a made-up one.
    assert math.isnan(steady_rate({1: 1.0}, 1, 1))


def test_the_clock_waits_only_at_its_marks() -> None:
    clock = StepClock(torch.device("cpu"), total=6, warmup=2)
    for step in range(1, 7):
        clock.tick(step)
    assert sorted(clock.times) == [1, 2, 6]
    figures = clock.figures()
    assert figures["first_step_s"] > 0 and figures["steps_per_s"] > 0
    # Fewer steps than the warm-up: the rate counts from the end of step 1.
    assert StepClock(torch.device("cpu"), total=3, warmup=5).warmup == 1


def test_the_demo_benchmark_reports_both_loops(demo_models: tuple[Path, Path], tmp_path: Path) -> None:
    printed: list[str] = []
    out = tmp_path / "report.json"
    models_dir = demo_models[0].parent
    report = main(
        ["--device", "cpu", "--steps", "4", "--warmup", "1", "--models-dir", str(models_dir), "--json", str(out)],
        out=printed.append,
    )
    assert json.loads(out.read_text())["steps"] == 4
    assert report["device"] == "cpu" and report["resolution"] == 64 and report["batch"] == 2
    assert report["unet_step_gflop"] > 0
    for name in ("ours", "reference"):
        figures = report[name]
        assert figures["steps_per_s"] > 0 and figures["first_step_cold_s"] > 0 and figures["run_wall_s"] > 0
        assert figures["final_loss"] > 0
        # No CUDA: memory and MFU are reported as not measured rather than as zeros.
        assert figures["peak_gib"] is None and figures["mfu"] is None
    assert report["speedup"] == pytest.approx(report["ours"]["steps_per_s"] / report["reference"]["steps_per_s"])
    assert printed == [render(report)] and "| steps/s (steady) |" in printed[0]
