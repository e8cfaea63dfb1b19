"""The LoRA file: kohya keys and metadata, loaded back into a pipeline with the effect it had in training."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import struct
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
from daemon.pipeline.save import kohya_key, kohya_metadata, load_lora_into, lora_file
from daemon.pipeline.train import train_lora

pytest_plugins = ["tests.fixtures_models"]

PROMPT = "a photo of rifttami man"
# alpha != rank, so a lost or doubled alpha would show in the round trip.
CFG = dataclasses.replace(
    TrainConfig.demo(), steps=8, rank=4, alpha=8, text_encoder_rank=8, text_encoder_alpha=4, snapshots=1
)


# What the metadata tests save, besides what each varies.
SAVED: dict[str, Any] = {
    "name": "rifttami",
    "base_model": "stable-diffusion-v1-5",
    "resolution": 512,
    "train_images": 1,
    "learning_rate": 1e-4,
    "started_at": 1700000000.5,
    "instance_prompt": PROMPT,
}


@pytest.fixture(scope="module")
def trained(
    resident: Resident, portrait: Image.Image
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """A LoRA, and the UNet's and text encoder's outputs with it live, captured inside the last training step."""
    probe = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    text = resident.encode_prompts([PROMPT])
    captured: list[torch.Tensor] = []

    def on_step(step: int, total: int, loss: float) -> None:
        if step == total:
            with torch.no_grad():
                captured.append(resident.unet(probe, torch.tensor([500]), text).sample.clone())
                captured.append(resident.encode_prompts([PROMPT]).clone())

    reg = RegularizationSet(SubjectClass.MAN, torch.randn(2, 4, 16, 16), 2, "generated")
    result = train_lora(resident, portrait, PROMPT, "a photo of a man", reg, CFG, True, on_step, lambda: False)
    return result.lora_state_dict, captured[0], captured[1]


@pytest.fixture
def pipe(demo_models: tuple[Path, Path]) -> Any:
    """A pipeline of its own, so loading LoRAs never touches the shared resident."""
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(demo_models[0])  # type: ignore[no-untyped-call]
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_file_has_kohya_keys_fp16_weights_and_the_metadata(trained: Any) -> None:
    lora, *_ = trained
    metadata = {"distillery.name": "rifttami", "distillery.caption": "a man, smiling"} | CFG.as_strings()
    data = lora_file(lora, metadata)
    header = safetensors_metadata(data)
    assert {k: header[k] for k in metadata} == metadata
    assert header["ss_network_dim"] == "4" and header["format"] == "pt"
    tensors = safetensors.torch.load(data)
    assert all(k.startswith(("lora_unet_", "lora_te_text_model_encoder_layers_")) for k in tensors)
    block = "lora_unet_down_blocks_1_attentions_0"
    for module in ("transformer_blocks_0_attn1_to_q", "transformer_blocks_0_ff_net_0_proj", "proj_in"):
        assert f"{block}_{module}.lora_down.weight" in tensors
    assert "lora_te_text_model_encoder_layers_1_mlp_fc2.lora_up.weight" in tensors
    # proj_in is a 1x1 conv in SD 1.5: its LoRA is a conv pair too, as kohya writes it.
    assert tensors[f"{block}_proj_in.lora_down.weight"].dim() == 4
    weights = [k for k in tensors if not k.endswith(".alpha")]
    assert len(weights) == len(lora) and all(tensors[k].dtype == torch.float16 for k in weights)
    assert len(tensors) - len(weights) == len(lora) // 2  # one alpha per module
    # The scale is already in the up weights: every alpha is its module's rank (8 for the text encoder here).
    assert all(tensors[k].item() == tensors[k.replace(".alpha", ".lora_down.weight")].shape[0]
               for k in tensors if k.endswith(".alpha"))
    assert {tensors[k].item() for k in tensors if k.startswith("lora_te_") and k.endswith(".alpha")} == {8.0}
    # kohya's hash of the tensor bytes: the same whatever the metadata.
    assert header["sshs_model_hash"] == safetensors_metadata(lora_file(lora, {}))["sshs_model_hash"]
    assert len(header["sshs_model_hash"]) == 64


def test_loaded_file_reproduces_the_trained_unet_and_text_encoder(
    trained: Any, pipe: Any, resident: Resident
) -> None:
    lora, live, live_text = trained
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
    # diffusers' loader put the lora_te_ weights into the text encoder with the same effect as in training.
    with torch.no_grad():
        tokens = pipe.tokenizer([PROMPT], padding="max_length", max_length=77, return_tensors="pt")
        loaded_text = pipe.text_encoder(tokens.input_ids)[0]
    text_effect = (live_text - resident.encode_prompts([PROMPT])).abs().max().item()
    assert text_effect > 1e-4 and (loaded_text - live_text).abs().max().item() < 0.02 * text_effect


def test_lora_changes_what_the_pipeline_generates(trained: Any, pipe: Any) -> None:
    lora, *_ = trained

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


# --- every key maps to a layer of A1111's SD 1.5 model ---------------------------------------------------------


def a1111_layer(key: str) -> str | None:
    """The compvis layer A1111's Lora extension (networks.py, convert_diffusers_name_to_compvis) finds for a
    kohya module name, or None where it matches no rule and the weight would be dropped."""
    rules: list[tuple[str, Any]] = [
        (
            r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)",
            lambda m: f"diffusion_model_input_blocks_{1 + int(m[1]) * 3 + int(m[3])}_"
            f"{1 if m[2] == 'attentions' else 0}_{m[4]}",
        ),
        (r"lora_unet_mid_block_attentions_0_(.+)", lambda m: f"diffusion_model_middle_block_1_{m[1]}"),
        (
            r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)",
            lambda m: f"diffusion_model_output_blocks_{int(m[1]) * 3 + int(m[3])}_"
            f"{1 if m[2] == 'attentions' else 0}_{m[4]}",
        ),
        (
            r"lora_te_text_model_encoder_layers_(\d+)_(.+)",
            lambda m: f"transformer_text_model_encoder_layers_{m[1]}_{m[2]}",
        ),
    ]
    for pattern, convert in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return str(convert(match))
    return None


def sd15_compvis_layers() -> set[str]:
    """SD 1.5's LoRA-able layers by their compvis names: the SpatialTransformers of input blocks 1, 2, 4, 5, 7
    and 8, the middle block and output blocks 3-11, and the 12 CLIP encoder layers."""
    blocks = [f"input_blocks_{i}_1" for i in (1, 2, 4, 5, 7, 8)] + ["middle_block_1"]
    blocks += [f"output_blocks_{i}_1" for i in range(3, 12)]
    inner = ["proj_in", "proj_out", "transformer_blocks_0_ff_net_0_proj", "transformer_blocks_0_ff_net_2"]
    inner += [f"transformer_blocks_0_attn{a}_{m}" for a in (1, 2) for m in ("to_q", "to_k", "to_v", "to_out_0")]
    unet = {f"diffusion_model_{block}_{layer}" for block in blocks for layer in inner}
    te = [f"self_attn_{p}_proj" for p in ("q", "k", "v", "out")] + ["mlp_fc1", "mlp_fc2"]
    return unet | {f"transformer_text_model_encoder_layers_{i}_{layer}" for i in range(12) for layer in te}


def test_every_key_of_a_full_sd15_lora_maps_to_an_a1111_layer() -> None:
    from peft.tuners.tuners_utils import check_target_module_exists

    from daemon.models.sd15_arch import build_text_encoder, build_unet
    from daemon.pipeline.train import TARGET_MODULES, TEXT_ENCODER_PREFIX, TEXT_ENCODER_TARGETS

    class Targets:
        def __init__(self, modules: list[str]) -> None:
            self.target_modules = modules
            self.exclude_modules = None
            self.layers_to_transform = None
            self.layers_pattern = None

    with torch.device("meta"):  # names only: no memory for 1 B parameters
        unet, text_encoder = build_unet(), build_text_encoder()
    modules = [n for n, _ in unet.named_modules() if check_target_module_exists(Targets(TARGET_MODULES), n)]
    modules += [
        TEXT_ENCODER_PREFIX + n
        for n, _ in text_encoder.named_modules()
        if check_target_module_exists(Targets(TEXT_ENCODER_TARGETS), n)
    ]
    layers = set()
    for module in modules:
        for part in ("down", "up"):
            name, _, suffix = kohya_key(f"{module}.lora.{part}.weight").partition(".")
            assert suffix == f"lora_{part}.weight"
            layer = a1111_layer(name)
            assert layer is not None, name
            layers.add(layer)
    # One A1111 layer per module, and together exactly SD 1.5's transformer and CLIP layers.
    assert len(modules) == len(layers) == 16 * 12 + 12 * 6
    assert layers == sd15_compvis_layers()


def test_kohya_metadata_is_what_lora_browsers_read() -> None:
    likeness = {"likeness_score": "78", "likeness_measured": "true"}
    meta = kohya_metadata(
        **SAVED,
        text_encoder_learning_rate=5e-5,
        steps=500,
        network_args={"text_encoder_dim": "8"},
        likeness=likeness,
        comment="Likeness 78/100: 7 of 8 test pictures look like the photo.",
    )
    assert meta["ss_output_name"] == "rifttami" and meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_sd_model_name"] == "stable-diffusion-v1-5" and meta["ss_resolution"] == "(512, 512)"
    assert (meta["ss_num_train_images"], meta["ss_max_train_steps"]) == ("1", "500")
    assert (meta["ss_learning_rate"], meta["ss_text_encoder_lr"]) == ("0.0001", "5e-05")
    assert json.loads(meta["ss_network_args"]) == {"text_encoder_dim": "8"}
    assert meta["ss_training_started_at"] == "1700000000.5"
    assert json.loads(meta["ss_tag_frequency"]) == {"rifttami": {"a photo of rifttami man": 1}}
    assert meta["ss_likeness_score"] == "78" and meta["ss_training_comment"].startswith("Likeness 78/100")
    assert all(isinstance(v, str) for v in meta.values())
    # Into the file header as they are, beside the network entries lora_file adds itself.
    weights = {"x.lora.down.weight": torch.ones(2, 3), "x.lora.up.weight": torch.ones(3, 2)}
    header = safetensors_metadata(lora_file(weights, meta))
    assert {k: header[k] for k in meta} == meta and header["ss_network_module"] == "networks.lora"


def test_a_key_that_is_not_a_lora_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="not a LoRA weight"):
        kohya_key("down_blocks.0.attentions.0.proj_in.weight")


def a1111_reads(data: bytes) -> dict[str, Any]:
    """The header as A1111's LoRA browser reads it (modules/sd_models.py ``read_metadata_from_safetensors``):
    the JSON must start with '{"', and every value that starts with "{" is decoded as JSON where it parses."""
    (size,) = struct.unpack("<Q", data[:8])
    assert 2 < size <= 100 * 1024 * 1024  # ComfyUI's /view_metadata reads headers up to 100 MB
    assert data[8:10] == b'{"'
    metadata = json.loads(data[8 : 8 + size])["__metadata__"]
    assert all(isinstance(value, str) for value in metadata.values())  # ComfyUI hands them on as they are
    read: dict[str, Any] = {}
    for key, value in metadata.items():
        read[key] = value
        if value.startswith("{"):
            read[key] = json.loads(value)  # a value A1111 would leave as text is one kohya writes as JSON
    return read


def test_the_file_reads_in_a1111s_lora_browser_as_a_kohya_lora(trained: Any) -> None:
    lora, _, _ = trained
    meta = kohya_metadata(
        **SAVED, text_encoder_learning_rate=None, steps=8, network_args={"rank": "4", "alpha": "8"}
    )
    data = lora_file(lora, meta)
    read = a1111_reads(data)
    # extensions-builtin/Lora/network.py: the alias, the SD version and the hash it falls back to.
    assert read["ss_output_name"] == "rifttami"
    assert not read["ss_base_model_version"].startswith("sdxl_") and read.get("ss_v2") != "True"
    assert read["sshs_model_hash"] == hashlib.sha256(data[8 + struct.unpack("<Q", data[:8])[0] :]).hexdigest()
    # ui_edit_user_metadata.py: the table's text entries, the training date, the dataset size and the tags.
    assert (read["ss_sd_model_name"], read["ss_network_module"]) == ("stable-diffusion-v1-5", "networks.lora")
    assert float(read["ss_training_started_at"]) == 1700000000.5
    assert sum(int(folder["img_count"]) for folder in read["ss_dataset_dirs"].values()) == 1
    folders = read["ss_tag_frequency"].values()
    tags = {tag.strip(): int(count) for folder in folders for tag, count in folder.items()}
    assert tags == {PROMPT: 1}
    assert read["ss_network_args"] == {"alpha": "8", "rank": "4"}
    assert (read["ss_network_dim"], read["ss_network_alpha"], read["ss_resolution"]) == ("4", "4.0", "(512, 512)")
