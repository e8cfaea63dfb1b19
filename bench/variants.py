"""The daemon's training step with one thing changed: batch size, memory layout, ``torch.compile`` or CUDA graphs.

``train_lora`` fixes its batch at one instance and one class sample and runs the UNet eagerly; to learn whether
another setting would be faster, this loop repeats its step (cached latents and embeddings, the same LoRA on
the same targets, fp32 LoRA weights, autocast in the resident dtype, fused AdamW on CUDA, clipped gradients,
fp32 losses) with the setting changed. It reads the loss back only at the clock's marks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bench.harness import CLASS, INSTANCE, StepClock, peak_memory, sync
from daemon.models.resident import Resident
from daemon.pipeline.hparams import TrainConfig
from daemon.pipeline.train import TARGET_MODULES, autocast_dtype

# torch.compile modes: "default" (Inductor kernels), "reduce-overhead" (the same inside CUDA graphs).
COMPILE_MODES = ("default", "reduce-overhead")


@dataclass(frozen=True)
class Variant:
    """One setting of the training step."""

    name: str
    batch: int = 2  # instance + class samples per step, half each
    channels_last: bool = False
    compile_mode: str = ""  # "" for eager, else one of COMPILE_MODES
    compile_backend: str = "inductor"  # "eager" checks the compile path without compiling (CPU smoke)


def run_variant(resident: Resident, cfg: TrainConfig, variant: Variant, warmup: int) -> dict[str, Any]:
    """Train ``cfg.steps`` steps of ``variant`` on random latents; steps/s, samples/s, first step, peak memory."""
    from peft import LoraConfig

    unet, device = resident.unet, resident.device
    half = variant.batch // 2
    side = cfg.resolution // resident.pipeline.vae_scale_factor
    generator = torch.Generator(device).manual_seed(cfg.seed)
    latents = torch.randn(variant.batch, 4, side, side, generator=generator, device=device)
    embeddings = resident.encode_prompts([INSTANCE] * half + [CLASS] * half)
    amp = autocast_dtype(cfg, resident)
    scheduler = resident.noise_scheduler
    memory_format = torch.channels_last if variant.channels_last else torch.contiguous_format
    unet.to(memory_format=memory_format)
    torch.manual_seed(cfg.seed)
    unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights="gaussian",
                                target_modules=TARGET_MODULES))  # fmt: skip
    figures: dict[str, Any] = {"variant": variant.name, "batch": variant.batch}
    try:
        params = [p for p in unet.parameters() if p.requires_grad]
        for param in params:
            param.data = param.data.float()
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                      fused=device.type == "cuda")  # fmt: skip
        forward: Any = unet
        if variant.compile_mode:
            # A clean slate per variant, so one variant's compiled graphs never serve another.
            torch._dynamo.reset()
            # Compiled lazily: the first call pays for it, which is why the first step is reported apart.
            forward = torch.compile(unet, mode=variant.compile_mode, backend=variant.compile_backend)
        clock = StepClock(device, cfg.steps, warmup)
        loss = torch.zeros((), device=device)
        with peak_memory(device, figures):
            for step in range(1, cfg.steps + 1):
                noise = torch.randn(latents.shape, generator=generator, device=device)
                timesteps = torch.randint(0, 1000, (variant.batch,), generator=generator, device=device)
                noisy = scheduler.add_noise(latents, noise, timesteps).to(
                    resident.dtype, memory_format=memory_format
                )
                if variant.compile_mode == "reduce-overhead":
                    # Each CUDA-graph replay reuses its output buffers: mark where one step ends.
                    torch.compiler.cudagraph_mark_step_begin()  # type: ignore[no-untyped-call]
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    pred = forward(noisy, timesteps, embeddings).sample
                loss = F.mse_loss(pred[:half].float(), noise[:half]) + cfg.prior_loss_weight * F.mse_loss(
                    pred[half:].float(), noise[half:]
                )
                loss.backward()  # type: ignore[no-untyped-call]
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                clock.tick(step)
        timing = clock.figures()
        figures |= timing
        figures["samples_per_s"] = timing["steps_per_s"] * variant.batch
        figures["wall_s"] = time.perf_counter() - clock.started
        figures["final_loss"] = float(loss.item())
    finally:
        unet.unload_lora()
        unet.requires_grad_(False)
        unet.to(memory_format=torch.contiguous_format)
        sync(device)
    return figures
