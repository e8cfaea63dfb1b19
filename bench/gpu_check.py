"""The parts of the GPU check, one per process: ``python -m bench.gpu_check PART --out DIR [--smoke]``.

``bench/gpu_check.sh`` runs each part in a fresh process under its own time limit and each writes
``DIR/PART.json``, rewritten after every measurement, so a part stopped at its limit still leaves what it had
measured (``"complete": false``). Parts:

* ``env``: what the figures were measured on: GPU, driver, torch, CUDA, library versions and where they came from.
* ``train``: ours against the reference loop (``bench.harness``) at the daemon's resolution, batch and rank.
* ``profile``: the daemon's own loop under ``torch.profiler`` for a few steps: how busy the GPU is.
* ``sweep``: the daemon's step at 2, 4 and 8 instance + class samples per step.
* ``job``: a whole distill job through the worker, dequeue to stored LoRA, then a second job's first step.
* ``generate``: generation with 0, 1 and 3 LoRAs, and what switching LoRAs costs.
* ``compile``: eager against channels_last, ``torch.compile`` and CUDA graphs (``reduce-overhead``).

The full sizes use SD 1.5's architecture with random weights at 512 px on CUDA; ``--smoke`` runs every part at
tiny sizes on the CPU, to prove the script works where no GPU and no network are.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from bench.models import WEIGHTS_NOTE

PARTS = ("env", "train", "profile", "sweep", "job", "generate", "compile")
# Imported by the run; reported with their version and the folder they were loaded from.
LIBRARIES = ("diffusers", "lmdb", "transformers", "peft", "accelerate", "safetensors", "huggingface_hub", "daemon")


@dataclass(frozen=True)
class Sizes:
    """How big each part runs."""

    arch: str
    device: str
    train_steps: int
    warmup: int
    profile_steps: int
    sweep_batches: tuple[int, ...]
    sweep_steps: int
    compile_steps: int
    job_steps: int
    second_job_steps: int
    generate_steps: int


FULL = Sizes("sd15", "cuda", 60, 10, 10, (2, 4, 8), 25, 30, 1000, 20, 25)
SMOKE = Sizes("tiny", "cpu", 4, 1, 3, (2, 4, 8), 3, 3, 12, 3, 2)


class Report:
    """One part's JSON file, rewritten whole (via a temporary file) after every measurement."""

    def __init__(self, out: Path, part: str, sizes: Sizes, smoke: bool, budget: float | None = None) -> None:
        self.path = out / f"{part}.json"
        self.deadline = time.monotonic() + budget if budget else None
        self.data: dict[str, Any] = {
            "part": part,
            "smoke": smoke,
            "complete": False,
            "sizes": dataclasses.asdict(sizes),
            "models": WEIGHTS_NOTE,
        }
        self.save()

    def left(self) -> float:
        """Seconds left of the part's time limit (10 minutes when it was given none)."""
        return self.deadline - time.monotonic() if self.deadline is not None else 600.0

    def save(self, **figures: Any) -> None:
        """Merge ``figures`` in and write the file."""
        self.data.update(figures)
        scratch = self.path.with_suffix(".tmp")
        scratch.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        scratch.replace(self.path)


# -- env ---------------------------------------------------------------------------------------------------


def _nvidia_smi() -> str | None:
    try:
        query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit"
        done = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.strip() or None


def environment() -> dict[str, Any]:
    """Versions, devices, and the folder each library was imported from (the carried wheels or the image)."""
    from bench.harness import peak_tflops

    libraries: dict[str, dict[str, str]] = {}
    for name in LIBRARIES:
        module = importlib.import_module(name)
        libraries[name] = {
            "version": str(getattr(module, "__version__", "")),
            "from": str(Path(module.__file__ or "").resolve().parent.parent),
        }
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_from": str(Path(torch.__file__).resolve().parent.parent),
        "cuda_available": torch.cuda.is_available(),
        "libraries": libraries,
        "network_interfaces": sorted(name for _, name in socket.if_nameindex()),
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE", ""),
    }
    if torch.cuda.is_available():
        device = torch.device("cuda")
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": torch.cuda.get_device_name(device),
            "capability": ".".join(map(str, torch.cuda.get_device_capability(device))),
            "gpu_memory_gib": props.total_memory / 2**30,
            "multiprocessors": props.multi_processor_count,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
            "bf16_peak_tflops": peak_tflops(device),
            "nvidia_smi": _nvidia_smi(),
        }
    return info


def part_env(sizes: Sizes, report: Report, work: Path) -> None:
    info = environment()
    report.save(**info)
    print(json.dumps(info, indent=2, default=str))


# -- train, profile, sweep, compile -------------------------------------------------------------------------


def part_train(sizes: Sizes, report: Report, work: Path) -> None:
    from bench.harness import render, run

    result = run(sizes.arch, sizes.device, sizes.train_steps, sizes.warmup, None, None, work)
    peak = result["ours"]["peak_gib"]
    # What the daemon promises: it fits a 12 GB card and beats the plain loop.
    checks = {
        "peak_under_12_gib": None if peak is None else peak < 12.0,
        "faster_than_reference": result["speedup"] > 1,
    }
    report.save(**result, checks=checks)
    print(render(result))


def _resident(sizes: Sizes, work: Path) -> Any:
    from bench.models import timed_resident

    resident, load_s = timed_resident(sizes.arch, sizes.device, work / "tokenizer")
    return resident, load_s


def _train_config(sizes: Sizes, steps: int) -> Any:
    from bench.harness import train_config

    return train_config(sizes.arch, steps, None, None)


def busy_share(events: Any, wall_us: float) -> tuple[float | None, int]:
    """The share of ``wall_us`` in which at least one GPU kernel ran, and the number of kernels."""
    from torch.profiler import DeviceType

    spans = sorted(
        (event.time_range.start, event.time_range.end) for event in events if event.device_type == DeviceType.CUDA
    )
    if not spans:
        return None, 0
    busy, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy / wall_us, len(spans)


def part_profile(sizes: Sizes, report: Report, work: Path) -> None:
    from torch.profiler import ProfilerActivity, profile

    from bench.harness import CLASS, INSTANCE, class_samples, portrait, sync
    from daemon.pipeline.train import train_lora

    resident, load_s = _resident(sizes, work)
    first, last = sizes.warmup + 1, sizes.warmup + sizes.profile_steps
    cfg = _train_config(sizes, last)
    reg, _ = class_samples(cfg, resident.pipeline.vae_scale_factor)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if resident.device.type == "cuda" else [])
    profiler = profile(activities=activities)
    window: dict[str, float] = {}

    def on_step(step: int, total: int, loss: float) -> None:
        # The window is the steps after the warm-up, from the end of one synced step to the end of the last.
        if step == first - 1:
            sync(resident.device)
            profiler.start()
            window["start"] = time.perf_counter()
        elif step == last:
            sync(resident.device)
            window["stop"] = time.perf_counter()
            profiler.stop()

    train_lora(resident, portrait(), INSTANCE, CLASS, reg, cfg, True, on_step, lambda: False)
    wall_us = (window["stop"] - window["start"]) * 1e6
    share, kernels = busy_share(profiler.events(), wall_us)  # type: ignore[no-untyped-call]
    top = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    report.save(
        load_s=load_s,
        profiled_steps=sizes.profile_steps,
        wall_ms_per_step=wall_us / 1e3 / sizes.profile_steps,
        gpu_busy_share=share,
        kernels_per_step=kernels / sizes.profile_steps,
        cpu_ops_per_step=sum(e.count for e in profiler.key_averages()) / sizes.profile_steps,
        top_cpu_ops=[{"name": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "count": e.count} for e in top],
    )


def _variants(report: Report, resident: Any, cfg: Any, variants: list[Any], warmup: int, key: str) -> None:
    """Run each variant in turn, saving after each; one that fails (out of memory, say) is noted and skipped."""
    from bench.harness import peak_tflops, unet_step_flops, with_flops
    from bench.variants import run_variant

    results: dict[str, Any] = {}
    for variant in variants:
        try:
            results[variant.name] = run_variant(resident, cfg, variant, warmup)
        except Exception as error:
            results[variant.name] = {"error": f"{type(error).__name__}: {error}"[:500]}
            if resident.device.type == "cuda":
                torch.cuda.empty_cache()
        report.save(**{key: results})
    # FLOPs last: counting runs a forward and backward that would otherwise warm the first variant up.
    peak = peak_tflops(resident.device)
    for variant in variants:
        figures = results[variant.name]
        if "steps_per_s" in figures:
            flops = unet_step_flops(resident, cfg, variant.batch)
            results[variant.name] = with_flops(figures, flops, peak) | {"unet_step_gflop": flops / 1e9}
    report.save(**{key: results, "bf16_peak_tflops": peak})


def part_sweep(sizes: Sizes, report: Report, work: Path) -> None:
    from bench.variants import Variant

    resident, load_s = _resident(sizes, work)
    report.save(load_s=load_s)
    variants = [Variant(f"batch_{batch}", batch=batch) for batch in sizes.sweep_batches]
    _variants(report, resident, _train_config(sizes, sizes.sweep_steps), variants, sizes.warmup, "batches")


def part_compile(sizes: Sizes, report: Report, work: Path) -> None:
    from bench.variants import Variant

    resident, load_s = _resident(sizes, work)
    cuda = resident.device.type == "cuda"
    # Without a GPU, Inductor would spend minutes in a C++ compiler: the smoke run checks the path, not the speed.
    backend = "inductor" if cuda else "eager"
    variants = [
        Variant("eager"),
        Variant("channels_last", channels_last=True),
        Variant("compile", compile_mode="default", compile_backend=backend),
    ]
    notes = {"compile_backend": backend}
    if cuda:
        variants.append(Variant("compile_cuda_graphs", compile_mode="reduce-overhead"))
    else:
        notes["compile_cuda_graphs"] = "not run: CUDA graphs need a GPU"
    report.save(load_s=load_s, **notes)
    _variants(report, resident, _train_config(sizes, sizes.compile_steps), variants, sizes.warmup, "variants")
    figures = report.data["variants"]
    eager_rate = figures["eager"].get("steps_per_s")
    for name in ("compile", "compile_cuda_graphs"):
        first = figures.get(name, {}).get("first_step_s")
        if first is not None and eager_rate:
            # The first compiled step less one steady eager step: what compiling itself cost.
            figures[name]["compile_s"] = first - 1 / eager_rate
    report.save(variants=figures)


# -- job, generate ------------------------------------------------------------------------------------------


def part_job(sizes: Sizes, report: Report, work: Path) -> None:
    from bench.job import JobBench

    resident, load_s = _resident(sizes, work)
    # A store of its own, even in a scratch folder that an earlier run left behind.
    store_folder = Path(tempfile.mkdtemp(prefix="job-", dir=work))
    bench = JobBench(resident, store_folder, _train_config(sizes, sizes.job_steps))
    try:
        # The first job may take what the part has left, less a margin for the imports before the clock started,
        # the second job and the report.
        first = bench.run_job("benchfirst", sizes.job_steps, timeout=max(report.left() - 35.0, 10.0))
        report.save(load_s=load_s, first_job=first)
        if not first["finished"]:
            raise TimeoutError(f"the {sizes.job_steps}-step job did not finish in the time left")
        second = bench.run_job("benchsecond", sizes.second_job_steps, timeout=max(report.left() - 5.0, 10.0))
        report.save(second_job=second)
    finally:
        bench.close()


class _Context:
    """The little of a JobContext that rendering uses: the job's id, progress and cancellation."""

    def __init__(self, job_id: str) -> None:
        self.job = type("JobId", (), {"id": job_id})()
        self.steps = 0

    def should_stop(self) -> bool:
        return False

    def progress(self, step: int, total: int, loss: float = 0.0, what: str = "Step") -> None:
        self.steps = step


def _loras(resident: Any, arch: str, count: int) -> dict[str, bytes]:
    """``count`` LoRA files as distill jobs store them, each from one training step with its own seed."""
    from bench.harness import CLASS, INSTANCE, class_samples, portrait, train_config
    from daemon.pipeline.save import lora_file
    from daemon.pipeline.train import train_lora

    files: dict[str, bytes] = {}
    for index in range(count):
        cfg = dataclasses.replace(train_config(arch, 1, None, None), seed=index)
        reg, _ = class_samples(cfg, resident.pipeline.vae_scale_factor)
        result = train_lora(resident, portrait(), INSTANCE, CLASS, reg, cfg, True, lambda *_: None, lambda: False)
        files[f"lora{index}"] = lora_file(result.lora_state_dict, {"distillery.name": f"lora{index}"})
    return files


def part_generate(sizes: Sizes, report: Report, work: Path) -> None:
    from bench.harness import sync
    from daemon.jobs.contract import JobContext
    from daemon.jobs.model import GenerateParams, LoraUse
    from daemon.pipeline.adapters import AdapterCache
    from daemon.pipeline.generate import GeneratePipeline

    resident, load_s = _resident(sizes, work)
    files = _loras(resident, sizes.arch, 4)
    adapters = AdapterCache(resident.pipeline)
    pipeline = GeneratePipeline(resident=resident, adapters=adapters)
    side = resident.resolution

    def timed(what: Callable[[], object]) -> float:
        sync(resident.device)
        started = time.perf_counter()
        what()
        sync(resident.device)
        return time.perf_counter() - started

    def generate(names: list[str]) -> float:
        params = GenerateParams(
            prompt="a portrait", full_prompt="a portrait", loras=[LoraUse(n, 1.0) for n in names],
            negative_prompt="", seed=0, cfg=7.0, steps=sizes.generate_steps, width=side, height=side, count=1,
        )  # fmt: skip
        context = cast(JobContext, _Context("bench"))
        return timed(lambda: pipeline.render(context, params, files.__getitem__, prefix="bench"))

    def activate(names: list[str]) -> float:
        return timed(lambda: adapters.activate([LoraUse(n, 1.0) for n in names], files.__getitem__))

    figures: dict[str, Any] = {"load_s": load_s, "resolution": side, "steps": sizes.generate_steps}
    figures["first_generation_s"] = generate([])
    report.save(**figures)
    cases = {"no_lora": [], "one_lora": ["lora0"], "three_loras": ["lora0", "lora1", "lora2"]}
    for case, names in cases.items():
        figures[f"{case}_load_s"] = activate(names)  # loads the LoRAs not yet resident
        seconds = generate(names)
        figures[case] = {"seconds": seconds, "steps_per_s": sizes.generate_steps / seconds}
        report.save(**figures)
    figures["switch_loaded_s"] = activate(["lora1"])  # all loaded: only which adapters are on changes
    figures["switch_new_s"] = activate(["lora3"])  # one more file read and injected
    figures["unload_all_s"] = timed(adapters.clear)  # what a distill job pays before it trains
    report.save(**figures)


RUNNERS: dict[str, Callable[[Sizes, Report, Path], None]] = {
    "env": part_env,
    "train": part_train,
    "profile": part_profile,
    "sweep": part_sweep,
    "job": part_job,
    "generate": part_generate,
    "compile": part_compile,
}


def main(argv: list[str] | None = None) -> int:
    """Run one part; 0 when it completed, 1 when it failed (its JSON says why)."""
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=PARTS)
    parser.add_argument("--out", type=Path, required=True, help="folder for PART.json")
    parser.add_argument("--work", type=Path, help="scratch folder shared by the parts (default: a temporary one)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--budget", type=float, help="the part's time limit (s), for parts that pace themselves")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out, args.part, sizes, args.smoke, args.budget)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        work = args.work or Path(scratch)
        try:
            RUNNERS[args.part](sizes, report, work)
        except Exception as error:
            traceback.print_exc()
            report.save(error=f"{type(error).__name__}: {error}"[:2000], seconds=time.perf_counter() - started)
            return 1
    report.save(complete=True, seconds=time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
