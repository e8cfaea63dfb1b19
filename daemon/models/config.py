"""Which models the daemon keeps resident, and where they run.

One frozen ``ModelConfig`` is built at start (settings) and passed to ``load_resident``. The ``demo`` preset
points at tiny random-weight models that ``daemon.models.demo`` builds locally; ``resolve_model_config`` swaps
their folders in, so from then on both presets take exactly the same loading path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Real weights for the ``sd15`` preset; any diffusers folder or single-file checkpoint may replace the base.
SD15_BASE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# Sub-1B instruct VLM: good enough at gender/age/hair/clothing for a caption, small next to the UNet.
SD15_CAPTIONER_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"

# Each preset's default (base model, captioner). The demo's are "": its tiny models are built on first start
# under the state folder (``resolve_model_config``).
PRESET_MODELS: dict[str, tuple[str, str]] = {
    "demo": ("", ""),
    "sd15": (SD15_BASE_MODEL, SD15_CAPTIONER_MODEL),
}
PRESETS = tuple(PRESET_MODELS)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@dataclass(frozen=True)
class ModelConfig:
    """Model choice for one daemon process.

    ``base_model`` is a hub id, a local diffusers folder, or a single ``.safetensors``/``.ckpt`` file (loaded
    with ``from_single_file``); ``captioner_model`` is a hub id or a folder of a transformers VLM. For the
    ``demo`` preset both are filled in by ``resolve_model_config``.
    """

    preset: str
    base_model: str
    captioner_model: str
    device: str = "auto"  # "auto": cuda when available, else cpu
    dtype: str = "auto"  # "auto": bf16 on cuda if supported, else fp16 on cuda; fp32 on cpu
    # For a single-file base model: a local diffusers folder whose configs and tokenizer describe it (any SD 1.5
    # diffusers folder). Empty: SD 1.5's configs shipped in daemon.models.sd15_arch plus SD 1.5's tokenizer.
    base_config: str = ""
    # IP-Adapter for /serve --adapt: a hub id (h94/IP-Adapter) or a local folder laid out like it; empty: off.
    ip_adapter: str = ""
    # Its weights file within that folder; the CLIP image encoder is the ``image_encoder`` folder beside it.
    ip_adapter_weight: str = "models/ip-adapter_sd15.safetensors"
    # The face IP-Adapter for /serve --adaptface, from the same hub id or folder and with the same image encoder
    # (h94's SD 1.5 "plus face" model); off unless switched on, and only with ip_adapter set.
    face_ip_adapter: bool = False
    face_ip_adapter_weight: str = "models/ip-adapter-plus-face_sd15.safetensors"
    # More SD 1.5 checkpoints /serve --model may use, as (name, source) with sources like base_model's. One model
    # is resident at a time: switching reloads its weights, and training always runs on base_model.
    serve_models: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown model preset {self.preset!r}; expected one of {', '.join(PRESETS)}")
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; expected auto or one of {', '.join(_DTYPES)}")

    @classmethod
    def for_preset(cls, preset: str, *, device: str = "auto", dtype: str = "auto") -> ModelConfig:
        """The default models of a preset; the demo's folders are filled in later by ``resolve_model_config``."""
        base_model, captioner_model = PRESET_MODELS[preset]
        return cls(preset, base_model, captioner_model, device=device, dtype=dtype)

    @property
    def is_single_file(self) -> bool:
        """True when the base model is one checkpoint file rather than a diffusers folder or hub id."""
        return self.base_model.endswith((".safetensors", ".ckpt"))

    def torch_device(self) -> torch.device:
        """The device the models live on."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_dtype(self) -> torch.dtype:
        """The weight dtype: half precision on GPU (bf16 where supported), fp32 on CPU where half is slow."""
        if self.dtype != "auto":
            return _DTYPES[self.dtype]
        if self.torch_device().type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
