"""load_resident on the demo models: everything frozen, hashed, and shaped the way training expects."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from daemon.models.captioner import VlmCaptioner
from daemon.models.config import ModelConfig
from daemon.models.demo import IP_ADAPTER_DIR
from daemon.models.resident import (
    Resident,
    center_crop_resize,
    image_tensor,
    resolve_model_config,
    unet_weight_files,
)

pytest_plugins = ["tests.fixtures_models"]


def test_resident_is_loaded_frozen_on_cpu(resident: Resident) -> None:
    assert resident.device == torch.device("cpu") and resident.dtype == torch.float32
    assert torch.get_num_threads() == 1  # the demo on CPU runs single-threaded
    assert resident.resolution == 64
    assert resident.unet is resident.pipeline.unet and resident.vae is resident.pipeline.vae
    for module in (resident.unet, resident.vae, resident.text_encoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    assert isinstance(resident.captioner, VlmCaptioner)
    assert resident.pipeline.safety_checker is None


def test_attention_runs_on_sdpa(resident: Resident) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    processors = resident.unet.attn_processors
    assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors.values())


def test_training_schedule_is_ddpm_with_the_models_own_betas(resident: Resident) -> None:
    from diffusers import DDPMScheduler

    config: Any = resident.noise_scheduler.config
    assert isinstance(resident.noise_scheduler, DDPMScheduler)
    assert config.beta_schedule == "scaled_linear" and config.num_train_timesteps == 1000
    assert config.prediction_type == "epsilon" and config.beta_end == 0.012


def test_base_model_hash_is_the_sha256_of_the_unet_weights(
    resident: Resident, demo_models: tuple[Path, Path]
) -> None:
    weights = demo_models[0] / "unet" / "diffusion_pytorch_model.safetensors"
    assert resident.base_model_hash == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert resident.base_model == str(demo_models[0])


def test_unet_weight_files_skip_variants_and_prefer_safetensors(tmp_path: Path) -> None:
    unet = tmp_path / "unet"
    unet.mkdir()
    for name in (
        "config.json",
        "diffusion_pytorch_model.bin",
        "diffusion_pytorch_model.fp16.safetensors",
        "diffusion_pytorch_model-00002-of-00002.safetensors",
        "diffusion_pytorch_model-00001-of-00002.safetensors",
    ):
        (unet / name).write_bytes(b"x")
    assert [p.name for p in unet_weight_files(tmp_path)] == [
        "diffusion_pytorch_model-00001-of-00002.safetensors",
        "diffusion_pytorch_model-00002-of-00002.safetensors",
    ]


def test_resolve_points_the_demo_preset_at_the_built_folders(
    tmp_path: Path, demo_models: tuple[Path, Path]
) -> None:
    (tmp_path / "models").mkdir()
    # The session's build stands in for this state dir's, so nothing is built again.
    (tmp_path / "models" / "demo").symlink_to(demo_models[0].parent)
    resolved = resolve_model_config(ModelConfig.for_preset("demo"), tmp_path)
    assert Path(resolved.base_model).resolve() == demo_models[0].resolve()
    assert Path(resolved.captioner_model).resolve() == demo_models[1].resolve()
    # Its own IP-Adapters too, so --adapt and --adaptface work on the demo; an operator's choice is kept.
    assert Path(resolved.ip_adapter).resolve() == (demo_models[0].parent / IP_ADAPTER_DIR).resolve()
    assert resolved.face_ip_adapter
    chosen = resolve_model_config(dataclasses.replace(ModelConfig.for_preset("demo"), ip_adapter="/x"), tmp_path)
    assert (chosen.ip_adapter, chosen.face_ip_adapter) == ("/x", False)
    sd15 = ModelConfig.for_preset("sd15")
    assert resolve_model_config(sd15, tmp_path) is sd15


def test_model_config_defaults_and_validation() -> None:
    cfg = ModelConfig.for_preset("sd15")
    assert cfg.base_model == "stable-diffusion-v1-5/stable-diffusion-v1-5" and not cfg.is_single_file
    assert ModelConfig("sd15", "/models/v1-5-pruned.safetensors", "x").is_single_file
    assert ModelConfig("demo", "a", "b", device="cpu").torch_dtype() == torch.float32
    assert ModelConfig("demo", "a", "b", dtype="bf16").torch_dtype() == torch.bfloat16
    if not torch.cuda.is_available():
        assert cfg.torch_device() == torch.device("cpu")
    with pytest.raises(ValueError):
        ModelConfig("sdxl", "a", "b")
    with pytest.raises(ValueError):
        ModelConfig("demo", "a", "b", dtype="int8")


def test_center_crop_keeps_the_middle_square() -> None:
    image = Image.new("RGB", (300, 100), "black")
    image.paste((255, 255, 255), (100, 0, 200, 100))
    square = center_crop_resize(image, 64)
    assert square.size == (64, 64)
    assert square.getextrema() == ((255, 255), (255, 255), (255, 255))
    pixels = image_tensor(image, 64)
    assert pixels.shape == (3, 64, 64) and torch.allclose(pixels, torch.ones_like(pixels))


def test_encoders_give_latents_and_embeddings_of_the_unets_shapes(
    resident: Resident, portrait: Image.Image
) -> None:
    latents = resident.encode_images([portrait, portrait.rotate(90)], resident.resolution)
    assert latents.shape == (2, 4, 16, 16) and latents.dtype == torch.float32
    assert not torch.equal(latents[0], latents[1])
    embeddings = resident.encode_prompts(["a photo of a man", "a photo of a woman"])
    assert embeddings.shape == (2, 77, 32)
