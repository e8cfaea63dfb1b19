"""The LoRA adapter cache on the demo pipeline: exact switching, LRU eviction, and a UNet left as it was loaded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from PIL import Image

from daemon.jobs.model import LoraUse, SubjectClass
from daemon.models.resident import Resident
from daemon.pipeline.adapters import AdapterCache
from daemon.pipeline.hparams import TrainConfig
from daemon.pipeline.regularization import RegularizationSet
from daemon.pipeline.save import lora_file
from daemon.pipeline.train import train_lora

pytest_plugins = ["tests.fixtures_models"]

PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


def random_lora_file(unet: torch.nn.Module, seed: int, rank: int = 4, scale: float = 0.3) -> bytes:
    """A kohya-format LoRA file over every attention projection of ``unet``, with strong random weights.

    Trained demo LoRAs barely move a 64 px image in a few steps; random ones move it clearly, and differ by seed.
    """
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(PROJECTIONS):
            state[f"{name}.lora.down.weight"] = scale * torch.randn(rank, module.in_features, generator=generator)
            state[f"{name}.lora.up.weight"] = scale * torch.randn(module.out_features, rank, generator=generator)
    return lora_file(state, {"distillery.name": f"lora{seed}"})


def snapshot(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in unet.state_dict().items()}


def assert_bare(resident: Resident, before: dict[str, torch.Tensor]) -> None:
    """The UNet has exactly the modules, names and weights it was loaded with, and no peft config."""
    after = resident.unet.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[key], before[key]) for key in before)
    assert not getattr(resident.unet, "peft_config", None)


def assert_trains_bare(resident: Resident, portrait: Image.Image, before: dict[str, torch.Tensor]) -> None:
    """Two training steps run on the UNet, and leave it exactly as it was loaded (``assert_bare``)."""
    reg = RegularizationSet(SubjectClass.MAN, torch.randn(2, 4, 16, 16), 2, "generated")
    result = train_lora(
        resident, portrait, "a photo of rifttami man", "a photo of a man", reg, TrainConfig.demo().with_steps(2),
        False, lambda s, t, loss: None, lambda: False,
    )  # fmt: skip
    assert result.steps == 2
    assert_bare(resident, before)


@pytest.fixture(scope="module")
def files(resident: Resident) -> dict[str, bytes]:
    return {f"lora{seed}": random_lora_file(resident.unet, seed) for seed in range(4)}


@pytest.fixture
def cache(resident: Resident) -> Iterator[AdapterCache]:
    """A cache on the shared resident pipeline, emptied afterwards so the next test sees the bare UNet."""
    adapters = AdapterCache(resident.pipeline, capacity=2)
    yield adapters
    adapters.clear()


def render(resident: Resident, seed: int = 0) -> torch.Tensor:
    out = resident.pipeline(
        "a photo of a man",
        num_inference_steps=2,
        generator=[torch.Generator().manual_seed(seed)],
        output_type="pt",
    )
    return out.images  # type: ignore[no-any-return]


def uses(*pairs: tuple[str, float]) -> list[LoraUse]:
    return [LoraUse(name, weight) for name, weight in pairs]


def test_switching_is_exact_and_clear_restores_the_loaded_unet(
    resident: Resident, cache: AdapterCache, files: dict[str, bytes]
) -> None:
    before = snapshot(resident.unet)
    # The base modules themselves, not copies: switching LoRAs must never reload or move the base model.
    base_storage = {name: p.data_ptr() for name, p in resident.unet.named_parameters()}
    bare = render(resident)

    cache.activate(uses(("lora0", 1.0)), files.__getitem__)
    one = render(resident)
    cache.activate(uses(("lora1", 1.0), ("lora2", 0.5)), files.__getitem__)
    two = render(resident)
    assert (one - bare).abs().max() > 0.01 and (two - one).abs().max() > 0.01

    cache.activate([], files.__getitem__)
    assert torch.equal(render(resident), bare)  # adapters loaded, none active: the base model bit for bit
    cache.activate(uses(("lora0", 1.0)), files.__getitem__)
    assert torch.equal(render(resident), one)

    wrapped = resident.unet.get_submodule("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")
    assert (
        wrapped.base_layer.weight.data_ptr()
        == base_storage["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"]
    )
    cache.clear()
    assert cache.loaded == []
    assert_bare(resident, before)
    assert {name: p.data_ptr() for name, p in resident.unet.named_parameters()} == base_storage
    assert torch.equal(render(resident), bare)


def test_least_recently_used_goes_first(resident: Resident, cache: AdapterCache, files: dict[str, bytes]) -> None:
    reads: list[str] = []

    def load(name: str) -> bytes:
        reads.append(name)
        return files[name]

    cache.activate(uses(("lora0", 1.0)), load)
    cache.activate(uses(("lora1", 1.0)), load)
    cache.activate(uses(("lora0", 1.0)), load)  # lora0 is now the most recently used
    cache.activate(uses(("lora2", 1.0)), load)
    assert cache.loaded == ["lora0", "lora2"]
    assert len(resident.unet.peft_config) == 2
    assert resident.pipeline.get_active_adapters() == [
        a for a in resident.unet.peft_config if a.startswith("lora2")
    ]

    # A request may name more LoRAs than the cache holds: all of them load, and the surplus goes next time.
    cache.activate(uses(("lora1", 1.0), ("lora3", 1.0), ("lora0", 1.0)), load)
    assert cache.loaded == ["lora1", "lora3", "lora0"]
    cache.activate(uses(("lora3", 1.0)), load)
    assert cache.loaded == ["lora0", "lora3"]
    assert sorted(a.split("_")[0] for a in resident.unet.peft_config) == ["lora0", "lora3"]
    # Files are read on every activation, so a cached adapter is always checked against the stored bytes.
    assert reads.count("lora3") == 2


def test_new_bytes_under_an_old_name_load_a_new_adapter(
    resident: Resident, cache: AdapterCache, files: dict[str, bytes]
) -> None:
    cache.activate(uses(("lora0", 1.0)), files.__getitem__)
    first = render(resident)
    cache.activate(uses(("lora0", 1.0)), lambda name: files["lora1"])
    assert len(resident.unet.peft_config) == 2
    assert not torch.equal(render(resident), first)


def test_a_lora_named_twice_counts_once_with_the_weights_added(
    resident: Resident, cache: AdapterCache, files: dict[str, bytes]
) -> None:
    cache.activate(uses(("lora0", 0.25), ("lora0", 0.5)), files.__getitem__)
    twice = render(resident)
    assert cache.loaded == ["lora0"]
    cache.activate(uses(("lora0", 0.75)), files.__getitem__)
    assert torch.allclose(render(resident), twice, atol=1e-6)


def test_a_broken_file_leaves_the_unet_clean(
    resident: Resident, cache: AdapterCache, files: dict[str, bytes]
) -> None:
    before = snapshot(resident.unet)
    cache.activate(uses(("lora0", 1.0)), files.__getitem__)
    with pytest.raises(Exception):  # noqa: B017 - whatever safetensors raises for garbage
        cache.activate(uses(("lora1", 1.0)), lambda name: b"not a safetensors file")
    assert cache.loaded == []
    assert_bare(resident, before)


def test_training_runs_after_generation_once_the_cache_is_cleared(
    resident: Resident, cache: AdapterCache, files: dict[str, bytes], portrait: Image.Image
) -> None:
    before = snapshot(resident.unet)
    cache.activate(uses(("lora0", 1.0), ("lora1", 1.0)), files.__getitem__)
    render(resident)
    reg = RegularizationSet(SubjectClass.MAN, torch.randn(2, 4, 16, 16), 2, "generated")
    cfg = TrainConfig.demo().with_steps(2)

    def run() -> int:
        result = train_lora(
            resident, portrait, "a photo of rifttami man", "a photo of a man", reg, cfg, False,
            lambda s, t, loss: None, lambda: False,
        )  # fmt: skip
        return result.steps

    with pytest.raises(RuntimeError, match="unload"):
        run()  # what the distill pipeline's clear() is for
    cache.clear()
    assert run() == 2
    assert_bare(resident, before)
    # And generation picks up again afterwards, loading the LoRA anew.
    cache.activate(uses(("lora0", 1.0)), files.__getitem__)
    assert cache.loaded == ["lora0"]


def test_capacity_must_hold_a_lora(resident: Resident) -> None:
    with pytest.raises(ValueError):
        AdapterCache(resident.pipeline, capacity=0)
