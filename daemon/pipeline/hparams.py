"""Training hyper-parameters for one LoRA, with the reason behind every default.

The defaults are a single-image DreamBooth-LoRA on SD 1.5 with prior preservation, as diffusers'
``train_dreambooth_lora.py`` and kohya's scripts run it, with what the peers that do faces best publish:

* EasyPhoto (aigc-apps/sd-webui-EasyPhoto, ``scripts/easyphoto_train.py``): ``--train_text_encoder`` with
  kohya-style LoRA at rank 128 / alpha 64 on every transformer linear, ``--gradient_accumulation_steps 4``,
  ``--learning_rate 1e-4``, constant schedule, and the checkpoint whose samples are closest to the user by
  face ID kept (``--merge_best_lora_based_face_id``);
* kohya's sd-scripts (``train_network.py``): separate ``--unet_lr`` and ``--text_encoder_lr``; published
  person recipes put the text encoder at 1/2-1/10 of the UNet's rate (Akegarasu/lora-scripts ``train.ps1``:
  ``unet_lr 1e-4``, ``text_encoder_lr 1e-5``);
* diffusers' DreamBooth README: training the text encoder as well "gives much better results especially on
  faces"; its DreamBooth example uses the fixed prompt "a photo of sks dog";
* FaceChain dropped its descriptive caption tags; identity attaches to the name, not to caption words.

``TrainConfig.demo()`` shrinks the values so a whole job on the tiny demo models takes seconds on a laptop CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """How one LoRA is trained; frozen, and recorded in the LoRA's metadata via ``as_strings``."""

    # 800-1200 subject samples is the usual single-subject range with prior preservation (EasyPhoto: ~200
    # steps x 4 accumulated); 500 steps of 2 subject samples each see 1000, in half the optimizer steps.
    steps: int = 500
    # Subject samples per step, each paired with a class image: the UNet batch is 2 x batch_size. Larger
    # batches use the GPU better than more steps of batch 1, and average the gradient over both flips.
    batch_size: int = 2
    # Rank 16 holds one identity comfortably (~14 MB in fp16 on kohya's set); higher ranks memorise the photo.
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
    # On, as EasyPhoto and kohya's person recipes train it and diffusers' DreamBooth README finds it "much
    # better especially on faces": the name is a new word, and only the text encoder can give it a meaning
    # of its own instead of whatever its tokens meant before. Rank 8 is plenty for one word's worth of
    # meaning (1.3 M parameters, ~2.7 MB in fp16, on SD 1.5's 123 M-parameter encoder).
    text_encoder: bool = True
    text_encoder_rank: int = 8
    text_encoder_alpha: int = 8
    # Half the UNet's rate: within kohya's published 1/2-1/10 range, at the end nearest EasyPhoto (one rate
    # for both). The text encoder is shared by every prompt word; a high rate there bleeds the person into
    # the class word ("man") as well.
    text_encoder_learning_rate: float = 5e-5
    # Read the loss back every N steps (mean of the window): a read-back waits for the GPU to catch up.
    log_every: int = 25
    # Snapshots of the LoRA kept for the likeness check: ``snapshots`` evenly spaced steps from
    # ``snapshot_from`` of the run to its end (3 at 500 steps: 300, 400, 500). Identity settles late; the
    # last steps are where a single photo starts to be copied, so the best is often not the last.
    snapshots: int = 3
    snapshot_from: float = 0.6
    # Test pictures per snapshot for the likeness check (fixed seeds, varied prompts): 3 x 8 pictures cost
    # ~16 % of the training's UNet work (see daemon/pipeline/likeness.py).
    likeness_samples: int = 8
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
        if min(self.batch_size, self.text_encoder_rank, self.log_every, self.snapshots, self.likeness_samples) < 1:
            raise ValueError(
                "batch_size, text_encoder_rank, log_every, snapshots and likeness_samples must be positive"
            )
        if not 0.0 < self.snapshot_from <= 1.0:
            raise ValueError("snapshot_from must be a fraction of the run, above 0 and at most 1")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}")

    @classmethod
    def demo(cls) -> TrainConfig:
        """Tiny values for the demo models: 64 px, 30 steps of batch 1, rank 4 - a job in seconds on two cores."""
        # A higher rate so 30 steps visibly move the random-weight UNet; 2 snapshots x 2 test pictures keep
        # the likeness check as cheap as the demo's preview.
        return cls(
            steps=30,
            batch_size=1,
            rank=4,
            alpha=4,
            learning_rate=1e-3,
            text_encoder_rank=4,
            text_encoder_alpha=4,
            text_encoder_learning_rate=5e-4,
            resolution=64,
            log_every=10,
            snapshots=2,
            likeness_samples=2,
        )

    def with_steps(self, steps: int) -> TrainConfig:
        """The same settings with a different step count (a job may ask for its own)."""
        return dataclasses.replace(self, steps=steps)

    def snapshot_steps(self) -> list[int]:
        """The steps after which the LoRA is kept for the likeness check, ascending, always ending at ``steps``."""
        first = max(1, round(self.steps * self.snapshot_from))
        if self.snapshots == 1 or first >= self.steps:
            return [self.steps]
        spacing = (self.steps - first) / (self.snapshots - 1)
        return sorted({round(first + i * spacing) for i in range(self.snapshots)})

    def as_strings(self) -> dict[str, str]:
        """Every field as a string, for safetensors metadata and the LoRA record."""
        return {field.name: str(getattr(self, field.name)) for field in dataclasses.fields(self)}
