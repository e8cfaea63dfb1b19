"""train_lora on the demo UNet: a few steps, a LoRA out, and the resident UNet left exactly as it was."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from daemon.errors import JobCancelled
from daemon.jobs.model import SubjectClass
from daemon.models.resident import Resident
from daemon.pipeline.hparams import TrainConfig
from daemon.pipeline.regularization import RegularizationSet
from daemon.pipeline.train import TEXT_ENCODER_PREFIX, TrainResult, train_lora

pytest_plugins = ["tests.fixtures_models"]

INSTANCE = "a photo of rifttami man"
CLASS = "a photo of a man"
CFG = dataclasses.replace(TrainConfig.demo(), steps=5, snapshots=2, log_every=2)


@pytest.fixture(scope="module")
def reg() -> RegularizationSet:
    # Random latents stand in for class images: training only needs their shape.
    return RegularizationSet(
        SubjectClass.MAN, torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(1)), 4, "generated"
    )


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def both(resident: Resident) -> dict[str, torch.Tensor]:
    """The UNet's and the text encoder's weights, which training must both leave as they were."""
    return snapshot(resident.unet) | {f"te.{k}": v for k, v in snapshot(resident.text_encoder).items()}


def assert_untouched(resident: Resident, before: dict[str, torch.Tensor]) -> None:
    after = both(resident)
    assert list(after) == list(before)  # same modules: no LoRA wrapper left behind
    assert all(torch.equal(after[key], before[key]) for key in before)
    for model in (resident.unet, resident.text_encoder):
        assert not getattr(model, "peft_config", None)
        assert not any(p.requires_grad for p in model.parameters())


def train(resident: Resident, portrait: Image.Image, reg: RegularizationSet, **kwargs: Any) -> TrainResult:
    options: dict[str, Any] = {
        "cfg": CFG,
        "flip": True,
        "on_step": lambda step, total, loss: None,
        "should_stop": lambda: False,
    }
    options.update(kwargs)
    return train_lora(resident, portrait, INSTANCE, CLASS, reg, **options)


def test_five_steps_give_a_lora_and_leave_the_unet_as_it_was(
    resident: Resident, portrait: Image.Image, reg: RegularizationSet
) -> None:
    before = both(resident)
    steps: list[tuple[int, int, float]] = []
    result = train(resident, portrait, reg, on_step=lambda s, t, loss: steps.append((s, t, loss)))

    assert [(s, t) for s, t, _ in steps] == [(i, 5) for i in range(1, 6)]
    assert all(math.isfinite(loss) and loss > 0 for _, _, loss in steps)
    assert result.steps == 5 and result.final_loss == steps[-1][2] and result.seconds > 0
    # Read back at step 1, every log_every (2) steps and at the end; in between the last value is repeated.
    losses = [loss for _, _, loss in steps]
    assert losses[2] == losses[1] and losses[1] != losses[0] and losses[4] != losses[3]

    lora = result.lora_state_dict
    assert lora and all(k.endswith((".lora.down.weight", ".lora.up.weight")) for k in lora)
    projections = {k.rsplit(".lora.", 1)[0] for k in lora}
    assert len(lora) == 2 * len(projections)
    unet = {p for p in projections if not p.startswith(TEXT_ENCODER_PREFIX)}
    text = projections - unet
    block = "down_blocks.1.attentions.0"
    layer = f"{block}.transformer_blocks.0"
    # kohya's transformer set: both projections, both attentions' q/k/v/out and the feed-forward pair.
    assert {f"{block}.proj_in", f"{block}.proj_out", f"{layer}.ff.net.0.proj", f"{layer}.ff.net.2"} <= unet
    assert {f"{layer}.attn{i}.{m}" for i in (1, 2) for m in ("to_q", "to_k", "to_v", "to_out.0")} <= unet
    ends = {"to_q", "to_k", "to_v", "0", "proj_in", "proj_out", "proj", "2"}
    assert {p.rsplit(".", 1)[-1] for p in unet} == ends
    # The text encoder's attention and MLP in each of the demo encoder's two layers.
    assert {p.removeprefix(TEXT_ENCODER_PREFIX).split(".", 2)[-1] for p in text} == {
        f"{i}.{m}" for i in (0, 1) for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                              "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
    }
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 for v in lora.values())
    down = lora[f"{layer}.attn1.to_q.lora.down.weight"]
    up = lora[f"{layer}.attn1.to_q.lora.up.weight"]
    assert down.shape == (4, 64) and up.shape == (64, 4)
    assert up.abs().max() > 0  # lora_B starts at zero; training moved it
    te_up = next(v for k, v in lora.items() if k.startswith(TEXT_ENCODER_PREFIX) and ".lora.up." in k)
    assert te_up.abs().max() > 0

    # Snapshots at cfg.snapshot_steps(), the last one being the result; earlier ones differ from it.
    assert [s.step for s in result.snapshots] == CFG.snapshot_steps() == [3, 5]
    assert result.snapshots[-1].lora_state_dict is lora
    first = result.snapshots[0].lora_state_dict
    assert set(first) == set(lora) and not all(torch.equal(first[k], lora[k]) for k in lora)

    assert_untouched(resident, before)


def test_cancel_raises_and_still_restores_the_unet(
    resident: Resident, portrait: Image.Image, reg: RegularizationSet
) -> None:
    before = both(resident)
    steps: list[int] = []
    with pytest.raises(JobCancelled):
        train(
            resident,
            portrait,
            reg,
            on_step=lambda s, t, loss: steps.append(s),
            should_stop=lambda: len(steps) == 2,
        )
    assert steps == [1, 2]
    assert_untouched(resident, before)
    # The adapter name is free again: the next job trains normally.
    assert train(resident, portrait, reg, cfg=dataclasses.replace(CFG, steps=1, snapshots=1)).steps == 1
    assert_untouched(resident, before)


def test_a_failing_callback_still_restores_the_unet(
    resident: Resident, portrait: Image.Image, reg: RegularizationSet
) -> None:
    before = both(resident)

    def boom(step: int, total: int, loss: float) -> None:
        raise OSError("event log full")

    with pytest.raises(OSError):
        train(resident, portrait, reg, on_step=boom)
    assert_untouched(resident, before)


def test_same_seed_same_lora_other_seed_other_lora(
    resident: Resident, portrait: Image.Image, reg: RegularizationSet
) -> None:
    cfg = CFG.with_steps(2)
    first = train(resident, portrait, reg, cfg=cfg).lora_state_dict
    second = train(resident, portrait, reg, cfg=cfg).lora_state_dict
    other = train(resident, portrait, reg, cfg=dataclasses.replace(cfg, seed=1)).lora_state_dict
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_flip_encodes_the_mirrored_portrait_once(
    resident: Resident, portrait: Image.Image, reg: RegularizationSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[Image.Image]] = []
    encode = resident.encode_images

    def spy(images: list[Image.Image], resolution: int) -> torch.Tensor:
        seen.append(list(images))
        return encode(images, resolution)

    monkeypatch.setattr(resident, "encode_images", spy)
    train(resident, portrait, reg, cfg=CFG.with_steps(3), flip=True)
    train(resident, portrait, reg, cfg=CFG.with_steps(3), flip=False)
    assert [len(images) for images in seen] == [2, 1]
    straight, mirrored = (np.asarray(image) for image in seen[0])
    assert straight.shape == (64, 64, 3) and np.array_equal(mirrored, straight[:, ::-1])


def test_a_set_made_at_another_resolution_is_refused(resident: Resident, portrait: Image.Image) -> None:
    small = RegularizationSet(SubjectClass.MAN, torch.zeros(2, 4, 8, 8), 2, "generated")
    with pytest.raises(ValueError, match="resolution"):
        train(resident, portrait, small)


def test_a_unet_with_a_loaded_lora_is_refused(
    resident: Resident, portrait: Image.Image, reg: RegularizationSet
) -> None:
    from peft import LoraConfig

    before = both(resident)
    resident.unet.add_adapter(LoraConfig(r=2, target_modules=["to_q"]), adapter_name="someone_else")
    try:
        with pytest.raises(RuntimeError, match="unload"):
            train(resident, portrait, reg)
    finally:
        resident.unet.unload_lora()
    assert_untouched(resident, before)


def test_without_a_text_encoder_lora_and_with_larger_batches(
    resident: Resident, portrait: Image.Image, reg: RegularizationSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = both(resident)
    batches: list[int] = []
    forward = resident.unet.forward

    def spy(sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        batches.append(sample.shape[0])
        return forward(sample, *args, **kwargs)

    monkeypatch.setattr(resident.unet, "forward", spy)
    cfg = dataclasses.replace(CFG, steps=2, batch_size=3, text_encoder=False)
    result = train(resident, portrait, reg, cfg=cfg)
    assert batches == [6, 6]  # 3 subject samples and 3 class images per step
    assert result.lora_state_dict and not any(k.startswith(TEXT_ENCODER_PREFIX) for k in result.lora_state_dict)
    assert_untouched(resident, before)
