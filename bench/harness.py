"""Training-speed benchmark: the daemon's ``train_lora`` against a plain DreamBooth-LoRA loop, side by side.

Run ``python -m bench.harness --help``. Two model sets:

* ``demo``: the demo preset's tiny models (64 px), loaded through ``load_resident``: runs anywhere in seconds.
* ``sd15``: the full SD 1.5 architecture (860 M UNet, KL-f8 VAE, CLIP ViT-L text encoder) with random weights,
  which cost exactly what real weights cost. Meant for CUDA; the tokenizer is the demo's (only token ids
  reach the GPU, so the vocabulary does not change the timing).

Both loops train the same resident UNet with the same LoRA (rank, targets), resolution, batch (one instance and
one class sample per step) and step count:

* ``ours``: ``daemon.pipeline.train.train_lora`` as a job runs it (cached latents of the photo and its mirror,
  cached text embeddings, the resident dtype, SDPA, fused AdamW on CUDA).
* ``reference``: written the way diffusers' ``examples/dreambooth/train_dreambooth_lora.py`` runs: every step
  preprocesses the two images, VAE-encodes them (sampling the posterior), tokenizes and text-encodes the two
  prompts, and runs the UNet under autocast; AdamW unfused, GradScaler for fp16.

Reported per loop: steady-state steps/s (after ``--warmup`` steps), time to the first step in a fresh process
(cold) and in a second run (warm), the whole run's wall time, peak allocated CUDA memory, FLOPs per step
(``torch.utils.flop_counter``, UNet forward + backward) and MFU against the device's dense bf16 peak.
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
# Dense bf16 tensor-core peaks from the vendors' datasheets (TFLOP/s, no sparsity), matched on the device name.
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 756.0,  # an unrecognised H100 variant: the lower, PCIe figure
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}


def peak_tflops(device: torch.device) -> float | None:
    """The device's dense bf16 peak, or None when unknown (every CPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def demo_resident(models_dir: Path, device: str) -> Resident:
    """The demo preset's models through the daemon's own loader."""
    from daemon.models.config import ModelConfig
    from daemon.models.demo import ensure_demo_models
    from daemon.models.resident import load_resident

    base, captioner = ensure_demo_models(models_dir)
    return load_resident(ModelConfig("demo", str(base), str(captioner), device=device))


def sd15_resident(models_dir: Path, device: str) -> Resident:
    """The full SD 1.5 architecture with random weights, assembled like ``load_resident`` assembles real ones."""
    from diffusers import DDPMScheduler, PNDMScheduler, StableDiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0
    from transformers import CLIPTokenizer

    from daemon.models import sd15_arch
    from daemon.models.captioner import FixedCaptioner
    from daemon.models.config import ModelConfig
    from daemon.models.demo import ensure_demo_models

    cfg = ModelConfig("sd15", "random", "none", device=device)
    torch_device, dtype = cfg.torch_device(), cfg.torch_dtype()
    base, _ = ensure_demo_models(models_dir)
    torch.manual_seed(0)
    unet = sd15_arch.build_unet(dtype, torch_device)
    vae = sd15_arch.build_vae(dtype, torch_device)
    text_encoder = sd15_arch.build_text_encoder(dtype, torch_device)
    scheduler_config = {k: v for k, v in sd15_arch.SCHEDULER.items() if not k.startswith("_")}
    scheduler = PNDMScheduler.from_config(scheduler_config)  # type: ignore[no-untyped-call]
    tokenizer = CLIPTokenizer.from_pretrained(base / "tokenizer")
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False).eval()
    unet.set_attn_processor(AttnProcessor2_0())  # type: ignore[no-untyped-call]
    vae.set_attn_processor(AttnProcessor2_0())  # type: ignore[no-untyped-call]
    pipe = StableDiffusionPipeline(  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return Resident(
        pipeline=pipe,
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        noise_scheduler=DDPMScheduler.from_config(scheduler_config),  # type: ignore[no-untyped-call]
        captioner=FixedCaptioner("a woman"),
        device=torch_device,
        dtype=dtype,
        base_model="sd15-random",
        base_model_hash="random",
        resolution=512,
    )


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


def steady_rate(stamps: list[float], warmup: int) -> float:
    """Steps per second over the steps after ``warmup`` (compile, allocator and cache warm-up excluded)."""
    if len(stamps) <= warmup + 1:
        warmup = 0
    span = stamps[-1] - stamps[warmup]
    return (len(stamps) - 1 - warmup) / span if span > 0 else float("nan")


def run_ours(resident: Resident, cfg: TrainConfig, image: Image.Image, reg: RegularizationSet) -> dict[str, Any]:
    """One timed ``train_lora`` run: step timestamps, time to first step, whole-run seconds."""
    stamps: list[float] = []

    def on_step(step: int, total: int, loss: float) -> None:
        # on_step follows loss.item(), which already waited for the GPU: the stamp is the step's real end.
        stamps.append(time.perf_counter())

    started = time.perf_counter()
    result = train_lora(resident, image, INSTANCE, CLASS, reg, cfg, True, on_step, lambda: False)
    return {
        "first_step_s": stamps[0] - started,
        "wall_s": time.perf_counter() - started,
        "stamps": stamps,
        "final_loss": result.final_loss,
    }


def run_reference(
    resident: Resident, cfg: TrainConfig, image: Image.Image, class_images: list[Image.Image]
) -> dict[str, Any]:
    """The plain loop of diffusers' DreamBooth-LoRA script, same model, LoRA, batch, resolution and steps."""
    from peft import LoraConfig

    unet, vae, device = resident.unet, resident.vae, resident.device
    amp = resident.dtype if resident.dtype in (torch.float16, torch.bfloat16) else None
    pick = random.Random(cfg.seed)
    stamps: list[float] = []
    started = time.perf_counter()
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
        for _ in range(cfg.steps):
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
            stamps.append(time.perf_counter())
    finally:
        unet.unload_lora()
        unet.requires_grad_(False)
    return {
        "first_step_s": stamps[0] - started,
        "wall_s": time.perf_counter() - started,
        "stamps": stamps,
        "final_loss": loss_value,
    }


def unet_step_flops(resident: Resident, cfg: TrainConfig) -> int:
    """FLOPs of one training step's UNet forward + backward at batch 2 (the VAE/text work of ours is cached)."""
    from peft import LoraConfig
    from torch.utils.flop_counter import FlopCounterMode

    unet, device = resident.unet, resident.device
    side = cfg.resolution // resident.pipeline.vae_scale_factor
    latents = torch.randn(2, 4, side, side, device=device, dtype=resident.dtype)
    embeddings = resident.encode_prompts([INSTANCE, CLASS])
    timesteps = torch.tensor([10, 500], device=device)
    unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=TARGET_MODULES))
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            unet(latents, timesteps, embeddings).sample.float().pow(2).mean().backward()
        return int(counter.get_total_flops())
    finally:
        unet.unload_lora()
        unet.requires_grad_(False)


def summarise(raw: dict[str, Any], warmup: int, flops: int, peak: float | None) -> dict[str, Any]:
    """Turn a run's timestamps into the reported figures."""
    rate = steady_rate(raw.pop("stamps"), warmup)
    mfu = flops * rate / (peak * 1e12) if peak else None
    return {**raw, "steps_per_s": rate, "tflops_per_s": flops * rate / 1e12, "mfu": mfu}


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
    """Build the models once, then time ours (cold, warm) and the reference (cold, warm) on them."""
    from skimage import data

    load_started = time.perf_counter()
    resident = (demo_resident if preset == "demo" else sd15_resident)(models_dir, device)
    load_s = time.perf_counter() - load_started
    base = TrainConfig.demo() if preset == "demo" else TrainConfig()
    cfg = dataclasses.replace(
        base,
        steps=steps,
        resolution=resolution or base.resolution,
        rank=rank or base.rank,
        alpha=rank or base.alpha,
    )
    image = Image.fromarray(data.astronaut())  # type: ignore[no-untyped-call]
    side = cfg.resolution // resident.pipeline.vae_scale_factor
    generator = torch.Generator().manual_seed(0)
    # Class samples: random latents for ours (what the cache holds), random pixels for the reference.
    reg = RegularizationSet(SubjectClass.WOMAN, torch.randn(8, 4, side, side, generator=generator), 8, "generated")
    noise = torch.randint(0, 256, (8, cfg.resolution, cfg.resolution, 3), generator=generator, dtype=torch.uint8)
    class_images = [Image.fromarray(array.numpy()) for array in noise]

    if channels_last:
        # NHWC convolutions are the fast layout for tensor cores; LoRA's Linear layers do not care.
        resident.unet.to(memory_format=torch.channels_last)

    # The first UNet call of the process (kernel selection, allocator growth), reported on its own.
    first_call = time.perf_counter()
    flops = unet_step_flops(resident, cfg)
    sync(resident.device)
    first_unet_s = time.perf_counter() - first_call
    peak = peak_tflops(resident.device)
    results: dict[str, Any] = {}
    peak_known = resident.device.type == "cuda"
    # Ours runs first in the fresh process, so its cold start carries the first-use costs (kernels, allocator).
    loops: dict[str, Callable[[], dict[str, Any]]] = {
        "ours": lambda: run_ours(resident, cfg, image, reg),
        "reference": lambda: run_reference(resident, cfg, image, class_images),
    }
    # Interleaved (ours, reference, ours, reference) so a drift in background load hits both loops alike.
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in loops}
    for _ in range(2):
        for name, loop in loops.items():
            sync(resident.device)
            measured: dict[str, Any] = {}
            with peak_memory(resident.device, measured):
                raw = loop()
            runs[name].append(summarise(raw, warmup, flops, peak) | measured)
    for name, (cold, warm) in runs.items():
        results[name] = {
            "steps_per_s": warm["steps_per_s"],
            "tflops_per_s": warm["tflops_per_s"],
            "mfu": warm["mfu"],
            "first_step_cold_s": cold["first_step_s"],
            "first_step_warm_s": warm["first_step_s"],
            "run_wall_s": warm["wall_s"],
            "peak_gib": max(cold["peak_gib"] or 0.0, warm["peak_gib"] or 0.0) if peak_known else None,
            "final_loss": warm["final_loss"],
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
        "first_unet_step_s": first_unet_s,
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
        f"UNet step {report['unet_step_gflop']:.2f} GFLOP; first UNet step of the process "
        f"{report['first_unet_step_s']:.2f} s; speed-up **{report['speedup']:.2f}x**",
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
    parser.add_argument("--preset", choices=["demo", "sd15"], default="demo")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the steady-state rate")
    parser.add_argument("--resolution", type=int, help="default: the preset's training resolution")
    parser.add_argument("--rank", type=int, help="default: the preset's LoRA rank")
    parser.add_argument("--channels-last", action="store_true", help="UNet in NHWC memory format")
    parser.add_argument("--models-dir", type=Path, default=Path("state/bench/models"))
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
