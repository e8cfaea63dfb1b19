"""Turn trained LoRA weights into the one file users download, and load such a file back into a pipeline.

The file is safetensors in kohya's key format (``lora_unet_..._to_q.lora_down.weight`` plus a per-module
``.alpha``), because that is what AUTOMATIC1111, ComfyUI, SD.Next and InvokeAI load, and diffusers'
``load_lora_weights`` converts it on load too: one file for every client. Weights are stored in fp16, as kohya
saves them; it halves the file and the rounding is far below what a LoRA's effect notices. The metadata carries
the caller's strings plus kohya's ``ss_network_*`` entries that those UIs show.
"""

from __future__ import annotations

from typing import Any

import safetensors.torch
import torch

# Kohya's name for a plain LoRA network; UIs use it to tell LoRA from LyCORIS variants.
NETWORK_MODULE = "networks.lora"


def _peft_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PEFT-format keys (``lora_A``/``lora_B``), from either diffusers (``lora.down``) or PEFT format."""
    # diffusers' convert_state_dict_to_peft only knows the older "lora_linear_layer" names, not "lora.down".
    out = {}
    for key, value in state_dict.items():
        key = key.replace(".lora.down.", ".lora_A.").replace(".lora.up.", ".lora_B.")
        out[key] = value
    return out


def lora_file(
    state_dict: dict[str, torch.Tensor], metadata: dict[str, str], *, alpha: float | None = None
) -> bytes:
    """Safetensors bytes of a UNet LoRA in kohya format, with ``metadata`` in the header.

    ``state_dict`` is what ``train_lora`` returns (diffusers or PEFT keys, without the ``unet.`` prefix),
    whose up weights already carry the alpha / rank scale; so ``alpha`` defaults to the rank, and is only for
    state dicts that were not normalised that way.
    """
    from diffusers.utils import convert_state_dict_to_kohya  # type: ignore[attr-defined]

    if not state_dict:
        raise ValueError("empty LoRA state dict")
    peft = {f"unet.{key}": value for key, value in _peft_keys(state_dict).items()}
    kohya: dict[str, torch.Tensor] = convert_state_dict_to_kohya(peft)  # type: ignore[no-untyped-call]
    rank = max(int(v.shape[0]) for k, v in kohya.items() if k.endswith(".lora_down.weight"))
    if alpha is None:
        alpha = float(rank)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in kohya.items():
        if key.endswith(".alpha"):
            # diffusers' converter writes alpha = rank; the real alpha is what sets the LoRA's scale.
            tensors[key] = torch.tensor(float(alpha), dtype=torch.float32)
        else:
            tensors[key] = value.detach().to("cpu", torch.float16).contiguous()
    header = {
        "ss_network_module": NETWORK_MODULE,
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        **metadata,
        "format": "pt",
    }
    return safetensors.torch.save(tensors, metadata=header)


def load_lora_into(pipe: Any, data: bytes, adapter_name: str) -> None:
    """Load ``lora_file`` bytes into a StableDiffusionPipeline as the adapter ``adapter_name``."""
    state_dict = safetensors.torch.load(data)
    # Kohya keys carry their alphas, so the dict path needs no file header to get the scale right.
    pipe.load_lora_weights(state_dict, adapter_name=adapter_name)
