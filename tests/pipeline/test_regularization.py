"""Class images: generated once per (model, class, resolution), served from the cache after that."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from PIL import Image

from daemon.errors import JobCancelled
from daemon.jobs.model import SubjectClass
from daemon.models.resident import Resident
from daemon.pipeline.regularization import (
    DictRegCache,
    RegularizationSet,
    import_photos,
    load_or_build,
    reg_cache_key,
    safetensors_metadata,
)

pytest_plugins = ["tests.fixtures_models"]

MAN, WOMAN = SubjectClass.MAN, SubjectClass.WOMAN


class CountingPipeline:
    """Wraps the resident pipeline and counts the images it is asked to generate."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.calls = 0
        self.images = 0

    def __call__(self, **kwargs: Any) -> Any:
        self.calls += 1
        self.images += len(kwargs["prompt"])
        return self.pipe(**kwargs)


def counting(resident: Resident) -> tuple[Resident, CountingPipeline]:
    pipe = CountingPipeline(resident.pipeline)
    return dataclasses.replace(resident, pipeline=pipe), pipe


def never() -> bool:
    return False


def test_a_set_is_generated_once_then_served_from_the_cache(resident: Resident) -> None:
    resident, pipe = counting(resident)
    cache = DictRegCache()
    progress: list[tuple[int, int]] = []
    first = load_or_build(resident, MAN, 6, 64, cache, lambda d, t: progress.append((d, t)), never)
    assert first.latents.shape == (6, 4, 16, 16) and first.latents.dtype == torch.float32
    assert (first.count, first.source, first.subject_class) == (6, "generated", MAN)
    assert progress == [(i, 6) for i in range(7)]
    assert (pipe.calls, pipe.images, cache.puts) == (2, 6, 1)  # batches of 4 on CPU

    progress.clear()
    again = load_or_build(resident, MAN, 6, 64, cache, lambda d, t: progress.append((d, t)), never)
    assert (pipe.calls, cache.puts, progress) == (2, 1, [])
    assert torch.equal(again.latents, first.latents)
    # A smaller request is served by the bigger set too.
    assert load_or_build(resident, MAN, 3, 64, cache, lambda d, t: None, never).count == 6
    assert pipe.calls == 2


def test_cancel_raises_keeps_what_finished_and_resumes_identically(resident: Resident) -> None:
    resident, pipe = counting(resident)
    cache = DictRegCache()
    done: list[int] = []

    def stop_inside_second_batch() -> bool:
        return pipe.calls == 2  # polled from the denoising loop, so this cancels mid-batch

    with pytest.raises(JobCancelled):
        load_or_build(resident, WOMAN, 6, 64, cache, lambda d, t: done.append(d), stop_inside_second_batch)
    assert done == [0, 1, 2, 3, 4] and pipe.images == 4 + 2
    partial = RegularizationSet.from_bytes(cache.data[reg_cache_key(resident.base_model_hash, WOMAN, 64)])
    assert partial.count == 4

    resumed = load_or_build(resident, WOMAN, 6, 64, cache, lambda d, t: None, never)
    assert pipe.images == 4 + 2 + 2  # only the two missing images are generated again
    fresh = load_or_build(resident, WOMAN, 6, 64, DictRegCache(), lambda d, t: None, never)
    assert resumed.count == 6 and torch.equal(resumed.latents[:4], partial.latents)
    # Image i always comes from seed i, so the interrupted build ends where an uninterrupted one does.
    assert torch.allclose(resumed.latents, fresh.latents, atol=1e-4)


def test_cancel_before_anything_is_generated_stores_nothing(resident: Resident) -> None:
    cache = DictRegCache()
    with pytest.raises(JobCancelled):
        load_or_build(resident, MAN, 2, 64, cache, lambda d, t: None, lambda: True)
    assert cache.data == {}


def test_an_unreadable_cached_value_is_rebuilt(resident: Resident) -> None:
    resident, pipe = counting(resident)
    cache = DictRegCache()
    cache.data[reg_cache_key(resident.base_model_hash, MAN, 64)] = b"not safetensors at all"
    reg = load_or_build(resident, MAN, 2, 64, cache, lambda d, t: None, never)
    assert reg.count == 2 and pipe.calls == 1


def test_imported_photos_replace_generation(resident: Resident, portrait: Image.Image) -> None:
    resident, pipe = counting(resident)
    cache = DictRegCache()
    photos = [portrait, portrait.rotate(90), Image.new("RGB", (80, 120), "gray")]
    imported = import_photos(resident, MAN, photos, 64, cache)
    assert (imported.count, imported.source) == (3, "imported")
    assert imported.latents.shape == (3, 4, 16, 16)
    reg = load_or_build(resident, MAN, 50, 64, cache, lambda d, t: None, never)
    assert reg.source == "imported" and torch.equal(reg.latents, imported.latents) and pipe.calls == 0
    with pytest.raises(ValueError):
        import_photos(resident, MAN, [], 64, cache)


def test_set_bytes_round_trip_with_metadata() -> None:
    reg = RegularizationSet(WOMAN, torch.randn(3, 4, 8, 8), 3, "generated")
    data = reg.to_bytes()
    assert safetensors_metadata(data)["subject_class"] == "woman"
    back = RegularizationSet.from_bytes(data)
    assert (back.subject_class, back.count, back.source) == (WOMAN, 3, "generated")
    assert torch.equal(back.latents, reg.latents)
    with pytest.raises(ValueError):
        RegularizationSet.from_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")


def test_cache_keys_name_everything_a_set_depends_on() -> None:
    keys = {
        reg_cache_key("abc", MAN, 512),
        reg_cache_key("abd", MAN, 512),
        reg_cache_key("abc", WOMAN, 512),
        reg_cache_key("abc", MAN, 768),
    }
    assert len(keys) == 4
    assert reg_cache_key("abc", MAN, 512) == reg_cache_key("abc", MAN, 512)
