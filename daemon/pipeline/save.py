"""Turn trained LoRA weights into the one file users download, and load such a file back into a pipeline.

The file is safetensors in kohya's key format, because that is what AUTOMATIC1111, ComfyUI, SD.Next and
InvokeAI load, and diffusers' ``load_lora_weights`` converts it on load too: one file for every client.

* UNet modules: ``lora_unet_<diffusers module path, dots as underscores>`` (``lora_unet_down_blocks_1_
  attentions_0_transformer_blocks_0_attn1_to_q``), which A1111 maps to its LDM names;
* text-encoder modules: ``lora_te_text_model_encoder_layers_<n>_<...>``, the SD 1.5 form (``lora_te1_`` is
  SDXL's first encoder, which A1111 would not look for in an SD 1.5 model);
* per module ``.lora_down.weight``, ``.lora_up.weight`` and an fp32 ``.alpha``.

Weights are stored in fp16, as kohya saves them; it halves the file and the rounding is far below what a
LoRA's effect notices. The header carries the caller's strings plus kohya's ``ss_*`` entries (``kohya_metadata``)
that those UIs' LoRA browsers show, and ``sshs_model_hash``, the sha256 of the tensor data as kohya computes it.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from typing import Any

import safetensors.torch
import torch

# Kohya's name for a plain LoRA network; UIs use it to tell LoRA from LyCORIS variants.
NETWORK_MODULE = "networks.lora"
UNET_PREFIX = "lora_unet_"
TEXT_ENCODER_PREFIX = "lora_te_"
# SD 1.5 in kohya's ss_base_model_version vocabulary (sd_v2, sdxl_base_v1-0, ... for the others).
BASE_MODEL_VERSION = "sd_v1"
_SUFFIXES = {
    "lora.down.weight": "lora_down.weight",
    "lora.up.weight": "lora_up.weight",
    "lora_A.weight": "lora_down.weight",
    "lora_B.weight": "lora_up.weight",
}


def kohya_key(key: str) -> str:
    """The kohya name of one diffusers/PEFT LoRA key (``[unet.|text_encoder.]<module>.lora.down.weight``)."""
    found = [(key[: -len(ours) - 1], kohya) for ours, kohya in _SUFFIXES.items() if key.endswith("." + ours)]
    if not found:
        raise ValueError(f"not a LoRA weight key: {key!r}")
    module, suffix = found[0]
    if module.startswith("text_encoder."):
        module = module.removeprefix("text_encoder.")
        # transformers 5 flattened CLIPTextModel (no text_model level); kohya and A1111 name it.
        if not module.startswith("text_model."):
            module = "text_model." + module
        return f"{TEXT_ENCODER_PREFIX}{module.replace('.', '_')}.{suffix}"
    return f"{UNET_PREFIX}{module.removeprefix('unet.').replace('.', '_')}.{suffix}"


def lora_file(
    state_dict: dict[str, torch.Tensor], metadata: Mapping[str, str], *, alpha: float | None = None
) -> bytes:
    """Safetensors bytes of a LoRA in kohya format, with ``metadata`` in the header.

    ``state_dict`` is what ``train_lora`` returns (diffusers or PEFT keys; UNet keys bare or under ``unet.``,
    text-encoder keys under ``text_encoder.``), whose up weights already carry the alpha / rank scale; so each
    module's alpha defaults to its rank, and ``alpha`` is only for state dicts that were not normalised that way.
    """
    if not state_dict:
        raise ValueError("empty LoRA state dict")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = kohya_key(key)
        tensors[name] = value.detach().to("cpu", torch.float16).contiguous()
        if name.endswith(".lora_down.weight"):
            module_alpha = float(value.shape[0]) if alpha is None else float(alpha)
            tensors[name.removesuffix(".lora_down.weight") + ".alpha"] = torch.tensor(module_alpha)
    unet_ranks = [int(v.shape[0]) for k, v in tensors.items() if k.startswith(UNET_PREFIX) and "lora_down" in k]
    rank = max(unet_ranks or [int(v.shape[0]) for k, v in tensors.items() if k.endswith(".lora_down.weight")])
    header = {
        "ss_network_module": NETWORK_MODULE,
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(float(rank) if alpha is None else float(alpha)),
        **metadata,
        "sshs_model_hash": tensor_data_sha256(safetensors.torch.save(tensors)),
        "format": "pt",
    }
    return safetensors.torch.save(tensors, metadata=header)


def tensor_data_sha256(data: bytes) -> str:
    """sha256 of a safetensors file's tensor bytes, header excluded: kohya's ``sshs_model_hash``, which stays
    the same whatever the metadata says."""
    (header_size,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(data[8 + header_size :]).hexdigest()


def kohya_metadata(
    *,
    name: str,
    base_model: str,
    resolution: int,
    train_images: int,
    learning_rate: float,
    text_encoder_learning_rate: float | None,
    steps: int,
    network_args: Mapping[str, str],
    started_at: float,
    instance_prompt: str,
    likeness: Mapping[str, str] | None = None,
    comment: str = "",
) -> dict[str, str]:
    """kohya's ``ss_*`` entries for one LoRA, as A1111's and ComfyUI's LoRA browsers read them.

    ``ss_tag_frequency`` counts the instance prompt's comma-separated parts under a folder named after the
    LoRA, as kohya counts caption tags per training folder, and ``ss_dataset_dirs`` gives that folder's image
    count (A1111 shows it as the dataset size). ``likeness`` (``Likeness.metadata()``) goes in
    under ``ss_`` names too, and ``comment`` (the likeness sentence) as ``ss_training_comment``, which the
    browsers display.
    """
    tags: dict[str, int] = {}
    for tag in (part.strip() for part in instance_prompt.split(",")):
        if tag:
            tags[tag] = tags.get(tag, 0) + 1
    out = {
        "ss_output_name": name,
        "ss_base_model_version": BASE_MODEL_VERSION,
        "ss_sd_model_name": base_model,
        "ss_resolution": f"({resolution}, {resolution})",
        "ss_num_train_images": str(train_images),
        "ss_learning_rate": str(learning_rate),
        "ss_unet_lr": str(learning_rate),
        "ss_max_train_steps": str(steps),
        "ss_network_args": json.dumps(dict(network_args), sort_keys=True),
        "ss_training_started_at": str(started_at),
        "ss_tag_frequency": json.dumps({name: tags}),
        "ss_dataset_dirs": json.dumps({name: {"n_repeats": 1, "img_count": train_images}}),
    }
    if text_encoder_learning_rate is not None:
        out["ss_text_encoder_lr"] = str(text_encoder_learning_rate)
    if comment:
        out["ss_training_comment"] = comment
    for key, value in (likeness or {}).items():
        out[f"ss_{key}"] = value
    return out


def load_lora_into(pipe: Any, data: bytes, adapter_name: str) -> None:
    """Load ``lora_file`` bytes into a StableDiffusionPipeline as the adapter ``adapter_name``."""
    state_dict = safetensors.torch.load(data)
    # Kohya keys carry their alphas, so the dict path needs no file header to get the scale right.
    pipe.load_lora_weights(state_dict, adapter_name=adapter_name)
