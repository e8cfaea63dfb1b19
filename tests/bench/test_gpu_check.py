"""The GPU check is one device call away: its smoke mode runs every part offline, from the carried wheels alone.

``bench/gpu_check.sh --smoke`` cuts the network (a namespace of its own), hides every package the GPU machine
lacks, installs the wheels of ``make gpu-wheels`` into a temporary target and runs each part in its own process;
every part must leave a complete, sane JSON report.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from torch.profiler import DeviceType

from bench.gpu_check import PARTS, busy_share
from bench.harness import peak_for_name

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H200", 989.0),
        ("NVIDIA H200 NVL", 835.0),
        ("NVIDIA H100 80GB HBM3", 989.0),  # the SXM part, not the PCIe card
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA L40", 181.0),  # not an L4
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA GeForce GTX 1080", None),
    ],
)
def test_the_bf16_peak_is_the_longest_matching_name(name: str, peak: float | None) -> None:
    assert peak_for_name(name) == peak


def _kernel(start: float, end: float, device: DeviceType = DeviceType.CUDA) -> Any:
    return SimpleNamespace(device_type=device, time_range=SimpleNamespace(start=start, end=end))


def test_gpu_busy_share_counts_overlapping_kernels_once() -> None:
    events = [_kernel(0, 10), _kernel(5, 20), _kernel(30, 40), _kernel(0, 100, DeviceType.CPU)]
    share, kernels = busy_share(events, wall_us=100.0)
    assert kernels == 3
    assert share == pytest.approx(0.3)  # 0-20 and 30-40
    assert busy_share([_kernel(0, 5, DeviceType.CPU)], 10.0) == (None, 0)


def _can_cut_the_network() -> bool:
    command = ["unshare", "-n", "true"] if os.geteuid() == 0 else ["unshare", "-rn", "true"]
    return shutil.which("unshare") is not None and subprocess.run(command, capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def smoke_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every part's report from one smoke run."""
    if not _can_cut_the_network():
        pytest.skip("unshare cannot make a network namespace here, so the offline run cannot be proven")
    if not (ROOT / ".venv" / "bin" / "python").is_file():
        pytest.skip("the smoke run takes torch from the checkout's .venv; run make .venv/.installed")
    wheels = subprocess.run(["make", "-C", str(ROOT), "gpu-wheels"], capture_output=True, text=True)
    if wheels.returncode != 0:
        pytest.skip(f"make gpu-wheels could not download the wheels (no network?):\n{wheels.stderr[-2000:]}")
    out = tmp_path_factory.mktemp("gpu-check")
    run = subprocess.run(
        [str(ROOT / "bench" / "gpu_check.sh"), "--smoke"],
        env={"PATH": os.environ["PATH"], "HOME": str(out), "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    return {part: json.loads((out / f"{part}.json").read_text()) for part in PARTS}


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_every_part_completes_offline_from_the_carried_wheels(smoke_reports: dict[str, dict[str, Any]]) -> None:
    for part, report in smoke_reports.items():
        assert report["complete"] is True and report["smoke"] is True, (part, report.get("error"))
        assert "random weights" in report["models"]
    env = smoke_reports["env"]
    assert env["network_interfaces"] == ["lo"]  # a network namespace of its own: nothing reachable
    libraries = env["libraries"]
    for carried in ("diffusers", "lmdb"):  # from the temporary target the wheels went into, not an install
        assert Path(libraries[carried]["from"]).name == "site", libraries[carried]
    assert Path(libraries["daemon"]["from"]) == ROOT  # the working tree, not pip install -e


def test_the_training_figures_are_sane(smoke_reports: dict[str, dict[str, Any]]) -> None:
    train = smoke_reports["train"]
    assert train["resolution"] == 64 and train["batch"] == 2 and train["rank"] == 4
    for loop in ("ours", "reference"):
        figures = train[loop]
        assert _positive(figures["steps_per_s"]) and _positive(figures["first_step_cold_s"])
        assert figures["mfu"] is None and figures["peak_gib"] is None  # no GPU: not measured, never zero
    assert _positive(train["unet_step_gflop"])
    assert train["speedup"] == pytest.approx(train["ours"]["steps_per_s"] / train["reference"]["steps_per_s"])

    profile = smoke_reports["profile"]
    assert profile["gpu_busy_share"] is None and _positive(profile["wall_ms_per_step"])
    assert profile["top_cpu_ops"] and _positive(profile["cpu_ops_per_step"])

    batches = smoke_reports["sweep"]["batches"]
    assert sorted(batches) == ["batch_2", "batch_4", "batch_8"]
    for name, figures in batches.items():
        assert figures["samples_per_s"] == pytest.approx(figures["steps_per_s"] * figures["batch"]), name
    # FLOPs grow with the batch: each step really trained that many samples.
    assert batches["batch_8"]["unet_step_gflop"] == pytest.approx(4 * batches["batch_2"]["unet_step_gflop"])

    variants = smoke_reports["compile"]["variants"]
    assert {"eager", "channels_last", "compile"} <= set(variants)
    assert all(_positive(figures.get("steps_per_s")) for figures in variants.values()), variants
    assert "compile_s" in variants["compile"]


def test_whole_jobs_and_generation_report_their_times(smoke_reports: dict[str, dict[str, Any]]) -> None:
    job = smoke_reports["job"]
    for which in ("first_job", "second_job"):
        figures = job[which]
        assert figures["finished"] is True and _positive(figures["train_steps_per_s"]), which
        assert 0 < figures["dequeue_to_first_step_s"] < figures["dequeue_to_saved_s"], which
        assert figures["lora_bytes"] > 0 and {"train", "save"} <= set(figures["stage_seconds"])
    assert job["first_job"]["steps"] == 12 and job["second_job"]["steps"] == 3

    generate = smoke_reports["generate"]
    for case in ("no_lora", "one_lora", "three_loras"):
        assert _positive(generate[case]["seconds"]), case
    for switch in ("switch_loaded_s", "switch_new_s", "unload_all_s"):
        assert _positive(generate[switch]), switch
