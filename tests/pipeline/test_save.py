"""The LoRA file: kohya keys and metadata, loaded back into a pipeline with the effect it had in training."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from PIL import Image

from daemon.jobs.model import SubjectClass
from daemon.models.resident import Resident
from daemon.pipeline.hparams import TrainConfig
from daemon.pipeline.regularization import RegularizationSet, safetensors_metadata
from daemon.pipeline.save import load_lora_into, lora_file
from daemon.pipeline.train import train_lora

pytest_plugins = ["tests.fixtures_models"]

PROMPT = "a photo of rifttami man"
# alpha != rank, so a lost or doubled alpha would show in the round trip.
CFG = dataclasses.replace(TrainConfig.demo(), steps=8, rank=4, alpha=8)


@pytest.fixture(scope="module")
def trained(resident: Resident, portrait: Image.Image) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A LoRA, and the UNet's output with that LoRA live, captured inside the last training step."""
    probe = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    text = resident.encode_prompts([PROMPT])
    captured: list[torch.Tensor] = []

    def on_step(step: int, total: int, loss: float) -> None:
        if step == total:
            with torch.no_grad():
                captured.append(resident.unet(probe, torch.tensor([500]), text).sample.clone())

    reg = RegularizationSet(SubjectClass.MAN, torch.randn(2, 4, 16, 16), 2, "generated")
    result = train_lora(resident, portrait, PROMPT, "a photo of a man", reg, CFG, True, on_step, lambda: False)
    return result.lora_state_dict, captured[0]


@pytest.fixture
def pipe(demo_models: tuple[Path, Path]) -> Any:
    """A pipeline of its own, so loading LoRAs never touches the shared resident."""
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(demo_models[0])  # type: ignore[no-untyped-call]
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_file_has_kohya_keys_fp16_weights_and_the_metadata(trained: Any) -> None:
    lora, _ = trained
    metadata = {"distillery.name": "rifttami", "distillery.caption": "a man, smiling"} | CFG.as_strings()
    data = lora_file(lora, metadata)
    header = safetensors_metadata(data)
    assert {k: header[k] for k in metadata} == metadata
    assert header["ss_network_dim"] == "4" and header["format"] == "pt"
    tensors = safetensors.torch.load(data)
    assert all(k.startswith("lora_unet_") for k in tensors)
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in tensors
    weights = [k for k in tensors if not k.endswith(".alpha")]
    assert len(weights) == len(lora) and all(tensors[k].dtype == torch.float16 for k in weights)
    assert len(tensors) - len(weights) == len(lora) // 2  # one alpha per module


def test_loaded_file_reproduces_the_trained_unet(trained: Any, pipe: Any, resident: Resident) -> None:
    lora, live = trained
    probe = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    text = resident.encode_prompts([PROMPT])
    with torch.no_grad():
        base = pipe.unet(probe, torch.tensor([500]), text).sample
        load_lora_into(pipe, lora_file(lora, {}), adapter_name="rifttami")
        loaded = pipe.unet(probe, torch.tensor([500]), text).sample
    effect = (live - base).abs().max().item()
    error = (loaded - live).abs().max().item()
    assert effect > 1e-4
    # fp16 rounding only; a wrong key mapping or alpha scale would make the error as large as the effect.
    assert error < 0.02 * effect


def test_lora_changes_what_the_pipeline_generates(trained: Any, pipe: Any) -> None:
    lora, _ = trained

    def generate() -> torch.Tensor:
        out = pipe(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt")
        return out.images  # type: ignore[no-any-return]

    without = generate()
    load_lora_into(pipe, lora_file(lora, {"distillery.name": "rifttami"}), adapter_name="rifttami")
    with_lora = generate()
    assert with_lora.shape == (1, 3, 64, 64)
    assert (with_lora - without).abs().max() > 1e-4
    pipe.unload_lora_weights()
    assert torch.equal(generate(), without)


def test_an_empty_state_dict_is_refused() -> None:
    with pytest.raises(ValueError):
        lora_file({}, {})
