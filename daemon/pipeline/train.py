"""Train one LoRA on the resident UNet: DreamBooth with prior preservation, from a single portrait.

The loop reads top to bottom like nanoGPT's ``train.py``; the peft/diffusers calls are those of diffusers'
``examples/dreambooth/train_dreambooth_lora.py``. What does not change within a job is computed once before
the loop: the instance latent and its mirror image, and the text embeddings of the two prompts. Each step then
costs one UNet forward and backward on a batch of two: the subject (instance prompt) and one class image
(class prompt), whose loss keeps the model's idea of the class from drifting towards the subject.

The UNet is the resident one, shared with generation and the next job: the LoRA is added as a named adapter
for the job and removed afterwards, whatever happens, leaving the base weights bit for bit as they were.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from daemon.errors import JobCancelled
from daemon.models.resident import Resident, center_crop_resize
from daemon.pipeline.hparams import TrainConfig
from daemon.pipeline.regularization import RegularizationSet

logger = logging.getLogger(__name__)

ADAPTER = "distillery_training"
# SD 1.5's attention projections: where identity LoRAs live (kohya's and diffusers' default for the UNet).
TARGET_MODULES = ["to_k", "to_q", "to_v", "to_out.0"]
CANCELLED = "The job was cancelled."


@dataclass
class TrainResult:
    """A trained LoRA: diffusers-format UNet LoRA weights (``...to_q.lora.down.weight``), fp32 on CPU.

    The up weights are pre-multiplied by ``alpha / rank``, so the dict means the same thing to any loader that
    assumes alpha == rank (diffusers and kohya do when a file names no alpha): it needs no side information.
    """

    lora_state_dict: dict[str, torch.Tensor]
    steps: int
    final_loss: float
    seconds: float


def autocast_dtype(cfg: TrainConfig, resident: Resident) -> torch.dtype | None:
    """The autocast dtype for this run, or None for no autocast.

    Half-precision weights (the GPU default) autocast in their own dtype whatever was asked: autocasting bf16
    weights to fp16 mixes dtypes that some kernels refuse. fp32 weights (the CPU default) train in plain
    fp32 unless ``mixed_precision`` names a dtype.
    """
    if cfg.mixed_precision == "no":
        return None
    if resident.dtype in (torch.float16, torch.bfloat16):
        return resident.dtype
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision)


def train_lora(
    resident: Resident,
    image: Image.Image,
    instance_prompt: str,
    class_prompt: str,
    reg: RegularizationSet,
    cfg: TrainConfig,
    flip: bool,
    on_step: Callable[[int, int, float], None],
    should_stop: Callable[[], bool],
) -> TrainResult:
    """Train a LoRA of the person in ``image`` on ``resident.unet`` and return its weights.

    ``on_step(step, total, loss)`` is called after every step; ``should_stop()`` is polled before every step
    and raises ``JobCancelled``. The adapter is removed from the UNet on success, failure and cancel alike.
    """
    from diffusers.utils import convert_state_dict_to_diffusers  # type: ignore[attr-defined]
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet, device = resident.unet, resident.device
    if getattr(unet, "peft_config", None):
        # Training on top of someone else's LoRA would bake it into this one; generation must unload first.
        raise RuntimeError("the resident UNet already has LoRA adapters loaded; unload them before training")
    started = time.monotonic()

    # Everything the loop reuses, computed once. The mirror doubles a single photo's poses for free.
    square = center_crop_resize(image, cfg.resolution)
    views = [square, ImageOps.mirror(square)] if flip else [square]
    instance_latents = resident.encode_images(views, cfg.resolution)
    class_latents = reg.latents.to(device, dtype=torch.float32)
    if class_latents.shape[1:] != instance_latents.shape[1:]:
        raise ValueError(
            f"class latents {tuple(class_latents.shape[1:])} do not match the instance latents "
            f"{tuple(instance_latents.shape[1:])}: regularization set made at another resolution?"
        )
    # Row 0 conditions the subject, row 1 the class sample: the batch is always [instance, class].
    embeddings = resident.encode_prompts([instance_prompt, class_prompt])

    scheduler = resident.noise_scheduler
    num_timesteps = int(scheduler.config.num_train_timesteps)
    prediction_type = scheduler.config.prediction_type
    amp_dtype = autocast_dtype(cfg, resident)
    # Separate generators: the job is reproducible from cfg.seed and leaves the process's global RNGs alone.
    noise_gen = torch.Generator(device).manual_seed(cfg.seed)
    pick = random.Random(cfg.seed)

    loss_value = float("nan")
    step = 0
    try:
        # peft draws the gaussian lora_A init from the global RNG; fork it so the init follows cfg.seed.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            unet.add_adapter(
                LoraConfig(
                    r=cfg.rank,
                    lora_alpha=cfg.alpha,
                    init_lora_weights="gaussian",
                    target_modules=TARGET_MODULES,
                ),
                adapter_name=ADAPTER,
            )
        params = [p for p in unet.parameters() if p.requires_grad]
        for param in params:
            # LoRA weights train in fp32 even over a bf16/fp16 base: half-precision Adam updates round to zero.
            param.data = param.data.float()
        optimizer = torch.optim.AdamW(
            params,
            lr=cfg.learning_rate,
            betas=(0.9, 0.999),
            weight_decay=cfg.weight_decay,
            eps=1e-8,
            fused=device.type == "cuda",
        )
        warmup = max(1, cfg.lr_warmup_steps)
        lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

        for step in range(1, cfg.steps + 1):
            if should_stop():
                raise JobCancelled(CANCELLED)
            latents = torch.stack(
                [
                    instance_latents[pick.randrange(instance_latents.shape[0])],
                    class_latents[pick.randrange(class_latents.shape[0])],
                ]
            )
            noise = torch.randn(latents.shape, generator=noise_gen, device=device)
            if cfg.noise_offset:
                offset = torch.randn((*latents.shape[:2], 1, 1), generator=noise_gen, device=device)
                noise = noise + cfg.noise_offset * offset
            timesteps = torch.randint(0, num_timesteps, (latents.shape[0],), generator=noise_gen, device=device)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            if prediction_type == "epsilon":
                target = noise
            elif prediction_type == "v_prediction":
                target = scheduler.get_velocity(latents, noise, timesteps)
            else:
                raise ValueError(f"unsupported prediction type {prediction_type!r}")

            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                pred = unet(noisy.to(resident.dtype), timesteps, embeddings).sample
            # Losses in fp32 whatever the autocast dtype: the per-sample means are tiny differences.
            instance_loss = F.mse_loss(pred[0].float(), target[0].float())
            class_loss = F.mse_loss(pred[1].float(), target[1].float())
            loss = instance_loss + cfg.prior_loss_weight * class_loss

            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)

            loss_value = loss.item()
            on_step(step, cfg.steps, loss_value)

        peft_state = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
        lora = convert_state_dict_to_diffusers(peft_state)  # type: ignore[no-untyped-call]
        scale = cfg.alpha / cfg.rank
        state = {
            key: value.detach().float().cpu() * (scale if ".lora.up." in key else 1.0)
            for key, value in lora.items()
        }
    finally:
        # Swap every LoRA-wrapped layer back to the original module object: the UNet is exactly as loaded.
        unet.unload_lora()
        unet.requires_grad_(False)
    seconds = time.monotonic() - started
    logger.info("trained %d steps in %.1f s, final loss %.4f", step, seconds, loss_value)
    return TrainResult(lora_state_dict=state, steps=step, final_loss=loss_value, seconds=seconds)
