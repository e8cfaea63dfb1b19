"""SD 1.5's component configs as data, so a single-file checkpoint loads with no hub and the bench can build the
full architecture with random weights.

The values are the published architecture of Stable Diffusion 1.5 (the ``config.json`` files of the diffusers
release): an 860 M-parameter UNet at 64x64 latents with 768-wide CLIP ViT-L/14 cross-attention, the KL-f8 VAE,
and the 12-layer CLIP text encoder. The CLIP tokenizer's vocabulary (49,408 BPE entries) is data, not
configuration, and is not shipped: ``write_config_folder`` takes it from a tokenizer folder the operator has.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

UNET: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "center_input_sample": False,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "mid_block_scale_factor": 1,
}
VAE: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
TEXT_ENCODER: dict[str, Any] = {
    "architectures": ["CLIPTextModel"],
    "model_type": "clip_text_model",
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
    # SD 1.5's text encoder config keeps CLIP's original ids; eos 2 selects transformers' legacy argmax pooling.
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}
SCHEDULER: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "clip_sample": False,
    "prediction_type": "epsilon",
}
MODEL_INDEX: dict[str, Any] = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": [None, None],
    "safety_checker": [None, None],
    "requires_safety_checker": False,
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_config_folder(out: Path, tokenizer_folder: Path) -> Path:
    """A weightless diffusers folder of SD 1.5 configs plus the tokenizer files copied from ``tokenizer_folder``.

    It is what ``StableDiffusionPipeline.from_single_file(..., config=out)`` reads instead of the hub.
    """
    _write(out / "model_index.json", MODEL_INDEX)
    _write(out / "unet" / "config.json", UNET)
    _write(out / "vae" / "config.json", VAE)
    _write(out / "text_encoder" / "config.json", TEXT_ENCODER)
    _write(out / "scheduler" / "scheduler_config.json", SCHEDULER)
    shutil.copytree(tokenizer_folder, out / "tokenizer", dirs_exist_ok=True)
    return out


def build_unet(dtype: Any = None, device: Any = None) -> Any:
    """SD 1.5's UNet with random weights: same shapes and FLOPs as the real one, for benchmarks."""
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in UNET.items() if not k.startswith("_")}
    unet = UNet2DConditionModel.from_config(config)  # type: ignore[no-untyped-call]
    return unet.to(device=device, dtype=dtype)


def build_text_encoder(dtype: Any = None, device: Any = None) -> Any:
    """SD 1.5's CLIP text encoder with random weights."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(**{k: v for k, v in TEXT_ENCODER.items() if k not in ("architectures", "model_type")})
    model: Any = CLIPTextModel(config)
    return model.to(device=device, dtype=dtype)


def build_vae(dtype: Any = None, device: Any = None) -> Any:
    """SD 1.5's KL-f8 VAE with random weights."""
    from diffusers import AutoencoderKL

    config = {k: v for k, v in VAE.items() if not k.startswith("_")}
    vae = AutoencoderKL.from_config(config)  # type: ignore[no-untyped-call]
    return vae.to(device=device, dtype=dtype)
