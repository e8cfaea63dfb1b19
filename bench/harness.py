"""Training-speed benchmark: the daemon's ``train_lora`` against a plain DreamBooth-LoRA loop, side by side.

Run ``python -m bench.harness --help``. Three model sets:

* ``demo``: the demo preset's tiny models (64 px), loaded through ``load_resident``: runs anywhere in seconds.
* ``sd15``: the full SD 1.5 architecture (860 M UNet, KL-f8 VAE, CLIP ViT-L text encoder) with random weights,
  which cost exactly what real weights cost (``bench.models``). Meant for CUDA.
* ``tiny``: the same assembly shrunk to 64 px, for smoke runs.

Both loops train the same resident UNet with the same LoRA (rank, targets), resolution, batch (one instance and
one class sample per step) and step count:

* ``ours``: ``daemon.pipeline.train.train_lora`` as a job runs it (cached latents of the photo and its mirror,
  cached text embeddings, the resident dtype, SDPA, fused AdamW on CUDA).
* ``reference``: written the way diffusers' ``examples/dreambooth/train_dreambooth_lora.py`` runs: every step
  preprocesses the two images, VAE-encodes them (sampling the posterior), tokenizes and text-encodes the two
  prompts, and runs the UNet under autocast; AdamW unfused, GradScaler for fp16.

Reported per loop: steady-state steps/s (after ``--warmup`` steps), time to the first step in its first run
in the process (for ours, which runs first, a truly cold step) and in a second run (warm), the whole run's wall
time, peak allocated CUDA memory, FLOPs per step (``torch.utils.flop_counter``, UNet forward + backward,
counted after the timed loops) and MFU against the device's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from daemon.jobs.model import SubjectClass
from daemon.models.resident import Resident, image_tensor
from daemon.pipeline.hparams import TrainConfig
from daemon.pipeline.regularization import RegularizationSet
from daemon.pipeline.train import TARGET_MODULES, train_lora

INSTANCE = "a photo of skiockcou woman, a woman in a white spacesuit in front of a flag"
CLASS = "a photo of a woman"
# Dense bf16 tensor-core peaks from the vendors' datasheets (TFLOP/s, no sparsity), keyed by what
# ``torch.cuda.get_device_name`` reports. The longest key contained in the name wins, so "NVIDIA L40S" is an L40S,
# "NVIDIA L40" is not an L4, and "NVIDIA H100 80GB HBM3" (the SXM part: HBM3 is SXM-only) is not a PCIe card.
BF16_PEAK_TFLOPS = {
    "H200": 989.0,  # SXM; nvidia-smi names it plainly "NVIDIA H200"
    "H200 NVL": 835.0,
    "H100 80GB HBM3": 989.0,  # SXM5
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 756.0,  # an unrecognised H100 variant: the lower, PCIe figure, never an overstated MFU
    "A100": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}


def peak_for_name(name: str) -> float | None:
    """The dense bf16 peak of a device called ``name``: the longest table key it contains, or None."""
    matches = [key for key in BF16_PEAK_TFLOPS if key in name]
    return BF16_PEAK_TFLOPS[max(matches, key=len)] if matches else None


def peak_tflops(device: torch.device) -> float | None:
    """The device's dense bf16 peak, or None when unknown (every CPU)."""
    if device.type != "cuda":
        return None
    return peak_for_name(torch.cuda.get_device_name(device))


def demo_resident(models_dir: Path, device: str) -> Resident:
    """The demo preset's models through the daemon's own loader."""
    from daemon.models.config import ModelConfig
    from daemon.models.demo import ensure_demo_models
    from daemon.models.resident import load_resident

    base, captioner = ensure_demo_models(models_dir)
    return load_resident(ModelConfig("demo", str(base), str(captioner), device=device))


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times mean what they say."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def peak_memory(device: torch.device, into: dict[str, Any]) -> Iterator[None]:
    """Record the peak allocated CUDA memory (GiB) of the block under ``into['peak_gib']``."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    into["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


class StepClock:
    """Wall-clock times at the end of the first step, the last warm-up step and the last step.

    Only those three steps wait for the device, so a loop that does not read its loss back every step keeps
    the overlap of host and GPU it has; the rate between two synced marks is exact either way.
    """

    def __init__(self, device: torch.device, total: int, warmup: int) -> None:
        self.device = device
        self.total = total
        # Too few steps to leave the warm-up out: count from the end of step 1.
        self.warmup = warmup if 1 <= warmup < total else 1
        self.started = time.perf_counter()
        self.times: dict[int, float] = {}

    def tick(self, step: int) -> None:
        """Call at the end of every step (1-based)."""
        if step in (1, self.warmup, self.total):
            sync(self.device)
            self.times[step] = time.perf_counter()

    def figures(self) -> dict[str, float]:
        """Time to the end of step 1 and the steady steps/s after the warm-up."""
        return {
            "first_step_s": self.times[1] - self.started,
            "steps_per_s": steady_rate(self.times, self.warmup, self.total),
        }


def steady_rate(times: dict[int, float], warmup: int, total: int) -> float:
    """Steps per second from the end of step ``warmup`` to the end of step ``total`` (NaN for one step)."""
    span = times[total] - times[warmup] if total > warmup else 0.0
    return (total - warmup) / span if span > 0 else float("nan")


def run_ours(
    resident: Resident, cfg: TrainConfig, image: Image.Image, reg: RegularizationSet, warmup: int
) -> dict[str, Any]:
    """One timed ``train_lora`` run, exactly as a job calls it."""
    clock = StepClock(resident.device, cfg.steps, warmup)
    result = train_lora(
        resident, image, INSTANCE, CLASS, reg, cfg, True, lambda step, total, loss: clock.tick(step), lambda: False
    )
    return {**clock.figures(), "wall_s": time.perf_counter() - clock.started, "final_loss": result.final_loss}


def run_reference(
    resident: Resident, cfg: TrainConfig, image: Image.Image, class_images: list[Image.Image], warmup: int
) -> dict[str, Any]:
    """The plain loop of diffusers' DreamBooth-LoRA script, same model, LoRA, batch, resolution and steps.

    It reads the loss back every step, as the script does for its progress bar.
    """
    from peft import LoraConfig

    unet, vae, device = resident.unet, resident.vae, resident.device
    amp = resident.dtype if resident.dtype in (torch.float16, torch.bfloat16) else None
    pick = random.Random(cfg.seed)
    clock = StepClock(device, cfg.steps, warmup)
    torch.manual_seed(cfg.seed)
    unet.add_adapter(
        LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights="gaussian", target_modules=TARGET_MODULES)
    )
    try:
        params = [p for p in unet.parameters() if p.requires_grad]
        for param in params:
            param.data = param.data.float()
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
        scheduler = resident.noise_scheduler
        loss_value = float("nan")
        for step in range(1, cfg.steps + 1):
            # The script's dataset: random flip, resize, crop, to tensor, normalise; on every step.
            instance = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if pick.random() < 0.5 else image
            pixels = torch.stack(
                [image_tensor(instance, cfg.resolution), image_tensor(pick.choice(class_images), cfg.resolution)]
            ).to(device, dtype=resident.dtype)
            with torch.no_grad():
                latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
                tokens = resident.tokenizer(
                    [INSTANCE, CLASS],
                    padding="max_length",
                    max_length=resident.tokenizer.model_max_length,
                    truncation=True,
                    return_tensors="pt",
                ).input_ids.to(device)
                embeddings = resident.text_encoder(tokens)[0]
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (2,), device=device)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                pred = unet(noisy, timesteps, embeddings).sample
            pred_instance, pred_class = pred.float().chunk(2)
            noise_instance, noise_class = noise.float().chunk(2)
            loss = F.mse_loss(pred_instance, noise_instance) + cfg.prior_loss_weight * F.mse_loss(
                pred_class, noise_class
            )
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            loss_value = loss.item()
            clock.tick(step)
    finally:
        unet.unload_lora()
        unet.requires_grad_(False)
    return {**clock.figures(), "wall_s": time.perf_counter() - clock.started, "final_loss": loss_value}


def unet_step_flops(resident: Resident, cfg: TrainConfig, batch: int = 2) -> int:
    """FLOPs of one training step's UNet forward + backward (the VAE/text work of ours is cached).

    Count it after the timed loops: this is a full forward and backward, and before them it would warm up
    every kernel and the allocator for the "cold" first step.
    """
    from peft import LoraConfig
    from torch.utils.flop_counter import FlopCounterMode

    unet, device = resident.unet, resident.device
    side = cfg.resolution // resident.pipeline.vae_scale_factor
    latents = torch.randn(batch, 4, side, side, device=device, dtype=resident.dtype)
    embeddings = resident.encode_prompts([INSTANCE, CLASS] * (batch // 2))
    timesteps = torch.linspace(10, 990, batch, device=device).long()
    unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=TARGET_MODULES))
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            unet(latents, timesteps, embeddings).sample.float().pow(2).mean().backward()
        return int(counter.get_total_flops())
    finally:
        unet.unload_lora()
        unet.requires_grad_(False)


def with_flops(figures: dict[str, Any], flops: int, peak: float | None) -> dict[str, Any]:
    """Add the achieved UNet TFLOP/s and the MFU (None without a known peak) to a run's figures."""
    rate = figures["steps_per_s"]
    mfu = flops * rate / (peak * 1e12) if peak else None
    return {**figures, "tflops_per_s": flops * rate / 1e12, "mfu": mfu}


def environment(device: torch.device) -> dict[str, str]:
    """What the figures were measured on."""
    import diffusers
    import peft
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": str(torch.get_num_threads()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = str(torch.version.cuda)
    return info


def train_config(preset: str, steps: int, resolution: int | None, rank: int | None) -> TrainConfig:
    """The daemon's defaults for the preset (rank, resolution, rate), with the benchmark's step count."""
    base = TrainConfig() if preset == "sd15" else TrainConfig.demo()
    return dataclasses.replace(
        base,
        steps=steps,
        resolution=resolution or base.resolution,
        rank=rank or base.rank,
        alpha=rank or base.alpha,
    )


def class_samples(
    cfg: TrainConfig, latent_scale: int, count: int = 8
) -> tuple[RegularizationSet, list[Image.Image]]:
    """Class samples: random latents for ours (what its cache holds), random pixels for the reference."""
    side = cfg.resolution // latent_scale
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(count, 4, side, side, generator=generator)
    reg = RegularizationSet(SubjectClass.WOMAN, latents, count, "generated")
    noise = torch.randint(
        0, 256, (count, cfg.resolution, cfg.resolution, 3), generator=generator, dtype=torch.uint8
    )
    return reg, [Image.fromarray(array.numpy()) for array in noise]


def portrait() -> Image.Image:
    """scikit-image's astronaut (Eileen Collins, NASA, public domain), the demo's portrait."""
    from skimage import data

    return Image.fromarray(data.astronaut())  # type: ignore[no-untyped-call]


def run(
    preset: str,
    device: str,
    steps: int,
    warmup: int,
    resolution: int | None,
    rank: int | None,
    models_dir: Path,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Build the models once, then time ours (cold, warm) and the reference (first, second run) on them."""
    from bench.models import random_resident

    load_started = time.perf_counter()
    if preset == "demo":
        resident = demo_resident(models_dir, device)
    else:
        resident = random_resident(preset, device, models_dir / "tokenizer")
    sync(resident.device)
    load_s = time.perf_counter() - load_started
    cfg = train_config(preset, steps, resolution, rank)
    image = portrait()
    reg, class_images = class_samples(cfg, resident.pipeline.vae_scale_factor)
    if channels_last:
        # NHWC convolutions are the fast layout for tensor cores; LoRA's Linear layers do not care.
        resident.unet.to(memory_format=torch.channels_last)

    # Ours runs first in this fresh process with nothing run before it, so its first step is truly cold: CUDA
    # context, kernel selection and allocator growth. The reference's first run comes after ours.
    loops: dict[str, Callable[[], dict[str, Any]]] = {
        "ours": lambda: run_ours(resident, cfg, image, reg, warmup),
        "reference": lambda: run_reference(resident, cfg, image, class_images, warmup),
    }
    # Interleaved (ours, reference, ours, reference) so a drift in background load hits both loops alike.
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in loops}
    for _ in range(2):
        for name, loop in loops.items():
            sync(resident.device)
            measured: dict[str, Any] = {}
            with peak_memory(resident.device, measured):
                figures = loop()
            runs[name].append(figures | measured)
    flops = unet_step_flops(resident, cfg)
    peak = peak_tflops(resident.device)
    results: dict[str, Any] = {}
    for name, (first, second) in runs.items():
        warm = with_flops(second, flops, peak)
        peaks = [run["peak_gib"] for run in (first, second) if run["peak_gib"] is not None]
        results[name] = {
            "steps_per_s": warm["steps_per_s"],
            "tflops_per_s": warm["tflops_per_s"],
            "mfu": warm["mfu"],
            "first_step_cold_s": first["first_step_s"],
            "first_step_warm_s": second["first_step_s"],
            "run_wall_s": second["wall_s"],
            "peak_gib": max(peaks) if peaks else None,
            "final_loss": second["final_loss"],
        }
    ours, reference = results["ours"], results["reference"]
    return {
        "preset": preset,
        "device": str(resident.device),
        "dtype": str(resident.dtype).removeprefix("torch."),
        "steps": cfg.steps,
        "warmup": warmup,
        "resolution": cfg.resolution,
        "rank": cfg.rank,
        "batch": 2,
        "channels_last": channels_last,
        "load_s": load_s,
        "unet_step_gflop": flops / 1e9,
        "bf16_peak_tflops": peak,
        "ours": ours,
        "reference": reference,
        "speedup": ours["steps_per_s"] / reference["steps_per_s"],
        "environment": environment(resident.device),
    }


def render(report: dict[str, Any]) -> str:
    """A Markdown table of one report."""

    def fmt(value: Any, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    rows = [
        ("steps/s (steady)", "steps_per_s", ".2f"),
        ("first step, cold (s)", "first_step_cold_s", ".2f"),
        ("first step, warm (s)", "first_step_warm_s", ".3f"),
        (f"{report['steps']}-step run, warm (s)", "run_wall_s", ".2f"),
        ("achieved TFLOP/s (UNet)", "tflops_per_s", ".4f"),
        ("MFU vs bf16 peak", "mfu", ".1%"),
        ("peak CUDA memory (GiB)", "peak_gib", ".2f"),
    ]
    lines = [
        f"{report['preset']} on {report['device']} ({report['dtype']}), {report['resolution']} px, rank "
        f"{report['rank']}, batch {report['batch']}, {report['steps']} steps ({report['warmup']} warm-up); "
        f"UNet step {report['unet_step_gflop']:.2f} GFLOP; speed-up **{report['speedup']:.2f}x**",
        "",
        "| | ours | reference |",
        "| --- | --- | --- |",
    ]
    for label, key, spec in rows:
        lines.append(f"| {label} | {fmt(report['ours'][key], spec)} | {fmt(report['reference'][key], spec)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> dict[str, Any]:
    """Command line: run, print a Markdown table, optionally write the JSON report."""
    parser = argparse.ArgumentParser(prog="python -m bench.harness", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["demo", "sd15", "tiny"], default="demo")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the steady-state rate")
    parser.add_argument("--resolution", type=int, help="default: the preset's training resolution")
    parser.add_argument("--rank", type=int, help="default: the preset's LoRA rank")
    parser.add_argument("--channels-last", action="store_true", help="UNet in NHWC memory format")
    parser.add_argument("--models-dir", type=Path, default=Path("state/bench/models"),
                        help="where the demo models (or the random models' tokenizer) are kept")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    report = run(
        args.preset,
        args.device,
        args.steps,
        args.warmup,
        args.resolution,
        args.rank,
        args.models_dir,
        channels_last=args.channels_last,
    )
    out(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
