"""Train one LoRA on the resident UNet (and text encoder): DreamBooth with prior preservation, from one portrait.

The loop reads top to bottom like nanoGPT's ``train.py``; the peft/diffusers calls are those of diffusers'
``examples/dreambooth/train_dreambooth_lora.py``. What does not change within a job is computed once before
the loop: the instance latent and its mirror image, the prompts' tokens, and (without a text-encoder LoRA) their
embeddings. Each step is one UNet forward and backward on ``batch_size`` subject samples (instance prompt) and
as many class images (class prompt), whose loss keeps the model's idea of the class from drifting to the subject.

The LoRA covers kohya's transformer set (``TARGET_MODULES``) and, with ``text_encoder`` on, the CLIP encoder's
attention and MLP (``TEXT_ENCODER_TARGETS``). The loss stays on the device and is read back every ``log_every``
steps (a read-back waits for the GPU); progress is reported every step with the last value read. The LoRA is
copied to the CPU at each of ``cfg.snapshot_steps()``, so a later stage can keep the snapshot that looks most
like the person.

The UNet and text encoder are the resident ones, shared with generation and the next job: the LoRA is added as
a named adapter for the job and removed afterwards, whatever happens, leaving the base weights bit for bit as
they were.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from daemon.errors import JobCancelled
from daemon.models.resident import Resident, center_crop_resize
from daemon.pipeline.hparams import TrainConfig
from daemon.pipeline.regularization import RegularizationSet

logger = logging.getLogger(__name__)

ADAPTER = "distillery_training"
# kohya's LoRA set for SD 1.5 (networks/lora.py): every linear and 1x1 conv of the transformer blocks. Identity
# lives in the feed-forward layers and projections as well as in attention; EasyPhoto trains this set too.
TARGET_MODULES = ["proj_in", "proj_out", "to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]
# kohya's text-encoder set: the CLIP layers' attention projections and MLP.
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
# Keys of the text encoder's LoRA in a TrainResult; the UNet's carry no prefix.
TEXT_ENCODER_PREFIX = "text_encoder."
CANCELLED = "The job was cancelled."


@dataclass
class Snapshot:
    """The LoRA as it was after ``step`` steps (keys as in ``TrainResult.lora_state_dict``)."""

    step: int
    lora_state_dict: dict[str, torch.Tensor]


@dataclass
class TrainResult:
    """A trained LoRA: diffusers-format weights (``...to_q.lora.down.weight``), fp32 on CPU.

    UNet keys carry no prefix; the text encoder's start with ``text_encoder.``. The up weights are
    pre-multiplied by ``alpha / rank``, so the dict means the same thing to any loader that assumes alpha ==
    rank (diffusers and kohya do when a file names no alpha): it needs no side information. ``snapshots`` are
    the LoRA at ``cfg.snapshot_steps()``, in order; the last is ``lora_state_dict``.
    """

    lora_state_dict: dict[str, torch.Tensor]
    steps: int
    final_loss: float
    seconds: float
    snapshots: list[Snapshot] = field(default_factory=list)


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


def lora_weights(model: torch.nn.Module, scale: float, prefix: str = "") -> dict[str, torch.Tensor]:
    """The adapter's weights on the CPU in diffusers' names, the up weights scaled by alpha / rank."""
    from peft.utils import get_peft_model_state_dict

    out = {}
    for key, value in get_peft_model_state_dict(model, adapter_name=ADAPTER).items():
        up = ".lora_B." in key
        name = key.replace(".lora_A.", ".lora.down.").replace(".lora_B.", ".lora.up.")
        out[prefix + name] = value.detach().float().cpu() * (scale if up else 1.0)
    return out


def _remove_text_encoder_adapter(model: torch.nn.Module) -> None:
    """Swap every LoRA-wrapped layer back to the original module object and forget the adapter config
    (what ``unload_lora`` does for the UNet; transformers' models have no such method)."""
    from diffusers.utils import recurse_remove_peft_layers  # type: ignore[attr-defined]

    recurse_remove_peft_layers(model)  # type: ignore[no-untyped-call]
    if hasattr(model, "peft_config"):
        del model.peft_config
    model.requires_grad_(False)


def _tokens(resident: Resident, prompts: list[str]) -> torch.Tensor:
    """Token ids padded to the tokenizer's length, as the pipeline encodes prompts."""
    ids: torch.Tensor = resident.tokenizer(
        prompts,
        padding="max_length",
        max_length=resident.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return ids.to(resident.device)


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
    """Train a LoRA of the person in ``image`` on the resident models and return its weights and snapshots.

    ``on_step(step, total, loss)`` is called after every step with the loss last read back (the mean since the
    previous read-back); ``should_stop()`` is polled before every step and raises ``JobCancelled``. The adapters
    are removed from the UNet and text encoder on success, failure and cancel alike.
    """
    from peft import LoraConfig, inject_adapter_in_model

    unet, text_encoder, device = resident.unet, resident.text_encoder, resident.device
    if getattr(unet, "peft_config", None) or getattr(text_encoder, "peft_config", None):
        # Training on top of someone else's LoRA would bake it into this one; generation must unload first.
        raise RuntimeError("the resident models already have LoRA adapters loaded; unload them before training")
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
    # The batch is always [batch_size instance samples, batch_size class samples]: rows of the two prompts.
    tokens = _tokens(resident, [instance_prompt, class_prompt])
    rows = torch.tensor([0] * cfg.batch_size + [1] * cfg.batch_size, device=device)
    cached = None if cfg.text_encoder else resident.encode_prompts([instance_prompt, class_prompt])

    scheduler = resident.noise_scheduler
    num_timesteps = int(scheduler.config.num_train_timesteps)
    prediction_type = scheduler.config.prediction_type
    amp_dtype = autocast_dtype(cfg, resident)
    # Separate generators: the job is reproducible from cfg.seed and leaves the process's global RNGs alone.
    noise_gen = torch.Generator(device).manual_seed(cfg.seed)
    pick = random.Random(cfg.seed)
    snapshot_steps = set(cfg.snapshot_steps())
    snapshots: list[Snapshot] = []

    loss_value = float("nan")
    step = 0
    try:
        # peft draws the gaussian lora_A init from the global RNG; fork it so the init follows cfg.seed.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            unet.add_adapter(
                LoraConfig(
                    r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights="gaussian", target_modules=TARGET_MODULES
                ),
                adapter_name=ADAPTER,
            )
            if cfg.text_encoder:
                text_encoder.requires_grad_(False)
                # peft's own injection: transformers' add_adapter insists on a newer peft than diffusers needs.
                inject_adapter_in_model(
                    LoraConfig(
                        r=cfg.text_encoder_rank,
                        lora_alpha=cfg.text_encoder_alpha,
                        init_lora_weights="gaussian",
                        target_modules=TEXT_ENCODER_TARGETS,
                    ),
                    text_encoder,
                    adapter_name=ADAPTER,
                )
        unet_params = [p for p in unet.parameters() if p.requires_grad]
        text_params = [p for p in text_encoder.parameters() if p.requires_grad] if cfg.text_encoder else []
        params = unet_params + text_params
        for param in params:
            # LoRA weights train in fp32 even over a bf16/fp16 base: half-precision Adam updates round to zero.
            param.data = param.data.float()
        groups = [{"params": unet_params, "lr": cfg.learning_rate}]
        if text_params:
            groups.append({"params": text_params, "lr": cfg.text_encoder_learning_rate})
        optimizer = torch.optim.AdamW(
            groups, betas=(0.9, 0.999), weight_decay=cfg.weight_decay, eps=1e-8, fused=device.type == "cuda"
        )
        warmup = max(1, cfg.lr_warmup_steps)
        lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        # The losses since the last read-back, summed on the device: no GPU sync per step.
        window = torch.zeros((), device=device)
        window_steps = 0

        for step in range(1, cfg.steps + 1):
            if should_stop():
                raise JobCancelled(CANCELLED)
            latents = torch.stack(
                [instance_latents[pick.randrange(instance_latents.shape[0])] for _ in range(cfg.batch_size)]
                + [class_latents[pick.randrange(class_latents.shape[0])] for _ in range(cfg.batch_size)]
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
                # With a text-encoder LoRA the two prompts are encoded each step (2 sequences, whatever the batch).
                embeddings = text_encoder(tokens)[0] if cached is None else cached
                pred = unet(noisy.to(resident.dtype), timesteps, embeddings[rows].to(resident.dtype)).sample
            # Losses in fp32 whatever the autocast dtype: the per-sample means are tiny differences.
            half = cfg.batch_size
            instance_loss = F.mse_loss(pred[:half].float(), target[:half].float())
            class_loss = F.mse_loss(pred[half:].float(), target[half:].float())
            loss = instance_loss + cfg.prior_loss_weight * class_loss

            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)

            window += loss.detach()
            window_steps += 1
            if step == 1 or step % cfg.log_every == 0 or step == cfg.steps:
                loss_value = window.item() / window_steps
                window.zero_()
                window_steps = 0
            if step in snapshot_steps:
                snapshots.append(Snapshot(step, _lora_state(unet, text_encoder, cfg)))
            on_step(step, cfg.steps, loss_value)
    finally:
        # Swap every LoRA-wrapped layer back to the original module object: the models are exactly as loaded.
        unet.unload_lora()
        unet.requires_grad_(False)
        if cfg.text_encoder:
            _remove_text_encoder_adapter(text_encoder)
    seconds = time.monotonic() - started
    logger.info("trained %d steps in %.1f s, final loss %.4f", step, seconds, loss_value)
    return TrainResult(
        lora_state_dict=snapshots[-1].lora_state_dict,
        steps=step,
        final_loss=loss_value,
        seconds=seconds,
        snapshots=snapshots,
    )


def _lora_state(unet: torch.nn.Module, text_encoder: torch.nn.Module, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The whole LoRA now: the UNet's weights, then the text encoder's under ``text_encoder.``."""
    state = lora_weights(unet, cfg.alpha / cfg.rank)
    if cfg.text_encoder:
        state |= lora_weights(text_encoder, cfg.text_encoder_alpha / cfg.text_encoder_rank, TEXT_ENCODER_PREFIX)
    return state
