"""The benchmark harness runs end to end: both loops train, and every reported figure is there and sane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.harness import main, render, steady_rate


def test_steady_rate_leaves_out_the_warm_up() -> None:
    # Two slow warm-up steps, then one step every 0.5 s.
    assert steady_rate([0.0, 5.0, 10.0, 10.5, 11.0, 11.5], 2) == pytest.approx(2.0)
    # Too few steps to leave any out: the whole run counts.
    assert steady_rate([0.0, 1.0], 5) == pytest.approx(1.0)


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sd15_on_cuda_fits_12_gb_and_beats_the_reference(demo_models: tuple[Path, Path]) -> None:
    report = main(["--preset", "sd15", "--device", "cuda", "--steps", "30", "--warmup", "10",
                   "--models-dir", str(demo_models[0].parent)], out=lambda text: None)  # fmt: skip
    assert report["resolution"] == 512
    assert report["ours"]["peak_gib"] < 12.0
    assert report["speedup"] > 1.0
