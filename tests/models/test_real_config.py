"""Real-model configuration: single-file checkpoints load offline, and the shipped SD 1.5 configs are SD 1.5."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from daemon.models import sd15_arch
from daemon.models.config import ModelConfig
from daemon.models.resident import Resident, load_resident, sha256_files
from daemon.models.single_file import export_single_file, unet_key, vae_key
from daemon.settings import load_settings

pytest_plugins = ["tests.fixtures_models"]


@pytest.fixture(scope="module")
def checkpoint(resident: Resident, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo pipeline as one original-layout (A1111-style) safetensors file."""
    return export_single_file(resident.pipeline, tmp_path_factory.mktemp("single") / "tiny-sd15.safetensors")


def test_a_single_file_checkpoint_loads_offline_with_a_local_config(
    resident: Resident, checkpoint: Path, demo_models: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any hub call would fail the test rather than hang: the loader must not need one.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base, captioner = demo_models
    cfg = ModelConfig(
        "demo", str(checkpoint), str(captioner), device="cpu", dtype="float32", base_config=str(base)
    )
    assert cfg.is_single_file
    loaded = load_resident(cfg)

    assert loaded.base_model_hash == sha256_files([checkpoint]) != resident.base_model_hash
    for name in ("unet", "vae", "text_encoder"):
        want, got = getattr(resident, name).state_dict(), getattr(loaded, name).state_dict()
        assert want.keys() == got.keys(), name
        assert all(torch.equal(want[key], got[key]) for key in want), name
    # Same weights, same behaviour: the latents of one image agree.
    image = resident.pipeline.image_processor.numpy_to_pil(torch.rand(1, 64, 64, 3).numpy())
    assert torch.allclose(resident.encode_images(image, 64), loaded.encode_images(image, 64))


def test_original_layout_names_follow_the_ldm_numbering() -> None:
    assert unet_key("conv_in.weight", 2) == "input_blocks.0.0.weight"
    assert unet_key("down_blocks.1.resnets.1.conv1.weight", 2) == "input_blocks.5.0.in_layers.2.weight"
    assert unet_key("down_blocks.0.attentions.1.proj_in.weight", 2) == "input_blocks.2.1.proj_in.weight"
    assert unet_key("down_blocks.2.downsamplers.0.conv.bias", 2) == "input_blocks.9.0.op.bias"
    assert unet_key("mid_block.resnets.1.time_emb_proj.bias", 2) == "middle_block.2.emb_layers.1.bias"
    assert unet_key("up_blocks.3.resnets.2.conv_shortcut.weight", 2) == "output_blocks.11.0.skip_connection.weight"
    assert vae_key("decoder.up_blocks.0.resnets.0.norm1.weight", 4) == "decoder.up.3.block.0.norm1.weight"
    assert vae_key("encoder.mid_block.attentions.0.to_q.weight", 4) == "encoder.mid.attn_1.q.weight"


def test_the_shipped_configs_describe_sd15(tmp_path: Path, demo_models: tuple[Path, Path]) -> None:
    base, _ = demo_models
    folder = sd15_arch.write_config_folder(tmp_path / "sd15", base / "tokenizer")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert (folder / "tokenizer" / "tokenizer_config.json").is_file()
    # Built on the meta device: the published parameter counts, with no memory spent on weights.
    with torch.device("meta"):
        counts = [
            sum(p.numel() for p in build().parameters())
            for build in (sd15_arch.build_unet, sd15_arch.build_vae, sd15_arch.build_text_encoder)
        ]
    assert counts == [859_520_964, 83_653_863, 123_060_480]


def test_base_config_is_a_setting(tmp_path: Path) -> None:
    settings = load_settings(
        [
            "--state-dir",
            str(tmp_path),
            "--preset",
            "sd15",
            "--base-model",
            "/m/rv.safetensors",
            "--base-config",
            "/m/cfg",
        ],
        environ={},
    )
    assert settings.models.base_config == "/m/cfg" and settings.models.is_single_file
