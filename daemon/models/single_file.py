"""Write a diffusers SD 1.5-style pipeline as one original-layout (CompVis/A1111) ``.safetensors`` checkpoint.

Community SD 1.5 models ship as such single files, which the daemon loads with ``from_single_file``. This is
the inverse of diffusers' loader-side conversion, so tests can make a tiny single-file checkpoint from the demo
models and load it through the real path. Key layout of the original code (``ldm.modules.diffusionmodules``):

* UNet under ``model.diffusion_model.``: ``input_blocks.N`` (N = 0 conv_in, then per level ``layers_per_block``
  [resnet, attention] pairs and one downsampler), ``middle_block.0-2``, ``output_blocks.N`` (per level
  ``layers_per_block + 1`` [resnet, attention, upsampler] groups), ``time_embed.0/2``, ``out.0/2``.
* VAE under ``first_stage_model.``: ``encoder.down.i.block.j``, ``decoder.up.i`` numbered from the lowest
  resolution upwards (the reverse of diffusers' ``up_blocks``), ``mid.block_1/attn_1/block_2`` with 1x1-conv
  attention projections.
* Text encoder under ``cond_stage_model.transformer.`` with transformers' own names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet_part(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_RESNET[head]}.{tail}"


def unet_key(key: str, layers_per_block: int) -> str:
    """The original-layout name of one diffusers UNet key (without the ``model.diffusion_model.`` prefix)."""
    fixed = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    for old, new in fixed.items():
        if key.startswith(old + "."):
            return new + key[len(old) :]
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = level * (layers_per_block + 1) + j + 1
        return (
            f"input_blocks.{index}.0.{_resnet_part(rest)}"
            if kind == "resnets"
            else f"input_blocks.{index}.1.{rest}"
        )
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * (layers_per_block + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
        if m[1] == "attentions":
            return f"middle_block.1.{m[3]}"
        return f"middle_block.{2 * int(m[2])}.{_resnet_part(m[3])}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = level * (layers_per_block + 1) + j
        return (
            f"output_blocks.{index}.0.{_resnet_part(rest)}"
            if kind == "resnets"
            else f"output_blocks.{index}.1.{rest}"
        )
    raise KeyError(f"no original-layout name for UNet key {key!r}")


def _unet_state(unet: Any) -> dict[str, torch.Tensor]:
    layers = int(unet.config.layers_per_block)
    state: dict[str, torch.Tensor] = {}
    has_attention = {i: bool(getattr(block, "attentions", None)) for i, block in enumerate(unet.up_blocks)}
    for key, value in unet.state_dict().items():
        if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            # The upsampler follows the last resnet (and its attention, where the level has one).
            level = int(m[1])
            index = level * (layers + 1) + layers
            slot = 2 if has_attention[level] else 1
            name = f"output_blocks.{index}.{slot}.conv.{m[2]}"
        else:
            name = unet_key(key, layers)
        state["model.diffusion_model." + name] = value
    return state


def vae_key(key: str, levels: int) -> str:
    """The original-layout name of one diffusers VAE key (without the ``first_stage_model.`` prefix)."""
    key = key.replace("conv_norm_out", "norm_out").replace(".conv_shortcut.", ".nin_shortcut.")
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.upsample.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
        return f"{m[1]}.mid.attn_1.{_VAE_ATTENTION[m[2]]}.{m[3]}"
    return key  # conv_in, norm_out, conv_out, quant_conv, post_quant_conv keep their names


def _vae_state(vae: Any) -> dict[str, torch.Tensor]:
    levels = len(vae.config.block_out_channels)
    state: dict[str, torch.Tensor] = {}
    for key, value in vae.state_dict().items():
        name = vae_key(key, levels)
        if ".mid.attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            # The original attention projections are 1x1 convolutions.
            value = value[:, :, None, None]
        state["first_stage_model." + name] = value
    return state


def export_single_file(pipeline: Any, path: Path) -> Path:
    """Save ``pipeline``'s UNet, VAE and text encoder as one original-layout safetensors checkpoint."""
    state = _unet_state(pipeline.unet) | _vae_state(pipeline.vae)
    for key, value in pipeline.text_encoder.state_dict().items():
        # transformers >= 5.6 dropped the ``text_model.`` wrapper from CLIPTextModel; checkpoints keep it.
        name = key if key.startswith("text_model.") else "text_model." + key
        state["cond_stage_model.transformer." + name] = value
    contiguous = {key: value.detach().contiguous().cpu() for key, value in state.items()}
    safetensors.torch.save_file(contiguous, str(path))
    return path
