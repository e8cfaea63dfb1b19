"""Training hyper-parameters for one LoRA, with the reason behind every default.

The defaults are a single-image DreamBooth-LoRA on SD 1.5 with prior preservation, as diffusers'
``train_dreambooth_lora.py`` and kohya's scripts run it; ``TrainConfig.demo()`` shrinks them so a whole job on
the tiny demo models takes seconds on a laptop CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """How one LoRA is trained; frozen, and recorded in the LoRA's metadata via ``as_strings``."""

    # 800-1200 steps is the usual single-subject range with prior preservation: fewer under-fits the face,
    # more starts to copy the one photo's pose and lighting.
    steps: int = 1000
    # Rank 16 holds one identity comfortably (~6 MB file in fp16); higher ranks mostly memorise the photo.
    rank: int = 16
    # alpha == rank gives a LoRA scale of 1, so the learning rate means the same thing at any rank.
    alpha: int = 16
    # The DreamBooth-LoRA default for the UNet with AdamW; 1e-3 fries SD 1.5 within a few hundred steps.
    learning_rate: float = 1e-4
    # SD 1.5's native size; training elsewhere makes the LoRA worse at the size people generate at.
    resolution: int = 512
    # Instance and class losses weigh the same, as in the DreamBooth paper; lower lets the class drift.
    prior_loss_weight: float = 1.0
    # A constant rate after warm-up; with AdamW's bias correction a warm-up is not needed at 1e-4.
    lr_warmup_steps: int = 0
    # Fixes LoRA init, noise, timesteps, flips and class-sample order: same inputs, same LoRA.
    seed: int = 0
    # "auto": autocast in the resident weight dtype (bf16 where supported, else fp16) on CUDA, fp32 on CPU.
    mixed_precision: str = "auto"
    # Clipping guards the few steps that draw a timestep near 0, where epsilon-MSE gradients spike.
    max_grad_norm: float = 1.0
    # AdamW's decoupled weight decay as diffusers' script sets it; keeps LoRA weights from growing unchecked.
    weight_decay: float = 1e-2
    # Off: offset noise helps very dark/bright images but shifts SD 1.5's colours for ordinary portraits.
    noise_offset: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.rank < 1 or self.resolution < 8 or self.resolution % 8:
            raise ValueError("steps and rank must be positive and resolution a positive multiple of 8")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}")

    @classmethod
    def demo(cls) -> TrainConfig:
        """Tiny values for the demo models: 64 px, 30 steps, rank 4 - a whole job in seconds on two cores."""
        # A higher rate so 30 steps visibly move the random-weight UNet.
        return cls(steps=30, rank=4, alpha=4, learning_rate=1e-3, resolution=64)

    def with_steps(self, steps: int) -> TrainConfig:
        """The same settings with a different step count (a job may ask for its own)."""
        return dataclasses.replace(self, steps=steps)

    def as_strings(self) -> dict[str, str]:
        """Every field as a string, for safetensors metadata and the LoRA record."""
        return {field.name: str(getattr(self, field.name)) for field in dataclasses.fields(self)}
