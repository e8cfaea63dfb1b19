"""Random-weight models assembled into a ``Resident`` as ``load_resident`` assembles real ones.

Two sizes of one architecture:

* ``sd15``: the full SD 1.5 architecture (860 M UNet, KL-f8 VAE, CLIP ViT-L text encoder) from the published
  configs in ``daemon.models.sd15_arch``. Random weights cost exactly what real weights cost.
* ``tiny``: the same block layout shrunk to a few hundred thousand parameters, for the CPU smoke run.

Real SD 1.5 weights and its tokenizer are not needed: the tokenizer is the demo's CLIP-format BPE, learned
offline in about a second (only token ids reach the models, so the vocabulary does not change any timing),
without building the rest of the demo set.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from daemon.models import sd15_arch
from daemon.models.resident import DEMO_SAMPLE_STEPS, SAMPLE_STEPS, Resident

ARCHS = ("sd15", "tiny")
WEIGHTS_NOTE = (
    "random weights in the published SD 1.5 architecture (real weights are not on this machine); "
    "tokenizer: the demo's CLIP-format BPE learned offline"
)

# The tiny size: SD 1.5's block types and attention, fewer and narrower levels. 64 px -> 8x8 latents.
TINY_UNET: dict[str, Any] = sd15_arch.UNET | {
    "sample_size": 8,
    "layers_per_block": 1,
    "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
}
TINY_VAE: dict[str, Any] = sd15_arch.VAE | {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1}
TINY_TEXT_ENCODER: dict[str, Any] = sd15_arch.TEXT_ENCODER | {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_dim": 32,
}


def _config(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not k.startswith("_") and k not in ("architectures", "model_type")}


def _build(arch: str, dtype: torch.dtype, device: torch.device) -> tuple[Any, Any, Any]:
    """UNet, VAE and text encoder with random weights, initialised on ``device`` (seconds, not minutes)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    if arch == "sd15":
        with torch.device(device):
            return (
                sd15_arch.build_unet(dtype, device),
                sd15_arch.build_vae(dtype, device),
                sd15_arch.build_text_encoder(dtype, device),
            )
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(_config(TINY_UNET))  # type: ignore[no-untyped-call]
        vae = AutoencoderKL.from_config(_config(TINY_VAE))  # type: ignore[no-untyped-call]
        text_encoder: Any = CLIPTextModel(CLIPTextConfig(**_config(TINY_TEXT_ENCODER)))
    return unet.to(dtype=dtype), vae.to(dtype=dtype), text_encoder.to(dtype=dtype)


def tokenizer(folder: Path | None) -> Any:
    """The demo's CLIP tokenizer; learned once and kept in ``folder`` when given, so later processes load it."""
    from transformers import CLIPTokenizer

    from daemon.models.demo import build_clip_tokenizer

    if folder is not None and (folder / "vocab.json").is_file():
        return CLIPTokenizer.from_pretrained(folder)
    built = build_clip_tokenizer()
    if folder is not None:
        built.save_pretrained(folder)
    return built


def random_resident(arch: str, device: str = "auto", tokenizer_dir: Path | None = None) -> Resident:
    """A ``Resident`` of random-weight models of ``arch``, with the daemon's schedulers and attention."""
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0

    from daemon.models.captioner import FixedCaptioner
    from daemon.models.config import ModelConfig

    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    cfg = ModelConfig("sd15", "random", "none", device=device)
    torch_device, torch_dtype = cfg.torch_device(), cfg.torch_dtype()
    if arch == "tiny" and torch_device.type == "cpu":
        # As load_resident does for the demo: layers this small lose to OpenMP's spinning threads.
        torch.set_num_threads(1)
    clip_tokenizer = tokenizer(tokenizer_dir)
    unet, vae, text_encoder = _build(arch, torch_dtype, torch_device)
    scheduler_config = _config(sd15_arch.SCHEDULER)
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False).eval()
    unet.set_attn_processor(AttnProcessor2_0())  # type: ignore[no-untyped-call]
    vae.set_attn_processor(AttnProcessor2_0())  # type: ignore[no-untyped-call]
    pipe: Any = StableDiffusionPipeline(  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer,
        unet=unet,
        # The daemon's sampler (load_resident swaps it in the same way).
        scheduler=DPMSolverMultistepScheduler.from_config(scheduler_config),  # type: ignore[no-untyped-call]
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return Resident(
        pipeline=pipe,
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer,
        noise_scheduler=DDPMScheduler.from_config(scheduler_config),  # type: ignore[no-untyped-call]
        captioner=FixedCaptioner("a woman"),
        device=torch_device,
        dtype=torch_dtype,
        base_model=f"{arch}-random",
        base_model_hash=f"{arch}-random",
        resolution=int(pipe.vae_scale_factor * unet.config.sample_size),
        sample_steps=SAMPLE_STEPS if arch == "sd15" else DEMO_SAMPLE_STEPS,
    )


def timed_resident(arch: str, device: str, tokenizer_dir: Path | None) -> tuple[Resident, float]:
    """``random_resident`` and the seconds it took, the GPU's queue included."""
    started = time.perf_counter()
    resident = random_resident(arch, device, tokenizer_dir)
    if resident.device.type == "cuda":
        torch.cuda.synchronize(resident.device)
    return resident, time.perf_counter() - started
