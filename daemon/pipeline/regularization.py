"""The class images for prior preservation: made once per (base model, class, resolution), then kept.

DreamBooth trains on the subject and, alongside, on generic images of its class ("a photo of a man") so the
model keeps knowing what other men look like. Those images depend only on the base model and the class, so
they are generated (or imported) once, stored VAE-encoded in the LMDB store through ``RegCache``, and reused by
every later job: a job never pays for them twice.

Generated images are kept as the pipeline's final latents (``output_type="latent"``), which are exactly what
the VAE encoder would return for them, without the decode and re-encode round trip through pixels. Imported
photos are center-cropped, resized and VAE-encoded. The store gets safetensors bytes: the latents in float32
plus metadata (class, source, count).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import safetensors.torch
import torch
from PIL import Image

from daemon.errors import JobCancelled
from daemon.jobs.model import SubjectClass

if TYPE_CHECKING:
    from daemon.models.resident import Resident

# Photos VAE-encoded at once when importing: the resident's own encoder batch.
ENCODE_BATCH = 8

logger = logging.getLogger(__name__)

# Bumped when the way sets are made changes, so old cached sets are not mixed with new ones.
CACHE_VERSION = "1"
SOURCES = ("generated", "imported")
# Classifier-free guidance as SD 1.5 is normally sampled: class images should look like its usual output.
GUIDANCE_SCALE = 7.5
CANCELLED = "The job was cancelled."


@dataclass
class RegularizationSet:
    """Class-image latents (N x 4 x h x w, float32, CPU), ready to be sampled by training."""

    subject_class: SubjectClass
    latents: torch.Tensor
    count: int
    source: str  # "generated" | "imported"

    def to_bytes(self) -> bytes:
        """Safetensors bytes with the latents and the set's description in the metadata."""
        metadata = {
            "format": "pt",
            "version": CACHE_VERSION,
            "subject_class": self.subject_class.value,
            "source": self.source,
            "count": str(self.count),
        }
        return safetensors.torch.save({"latents": self.latents.float().contiguous()}, metadata=metadata)

    @classmethod
    def from_bytes(cls, data: bytes) -> RegularizationSet:
        """The set ``to_bytes`` wrote; ValueError when the bytes are not one."""
        metadata = safetensors_metadata(data)
        if metadata.get("version") != CACHE_VERSION or metadata.get("source") not in SOURCES:
            raise ValueError("not a regularization set of this version")
        latents = safetensors.torch.load(data)["latents"]
        if latents.ndim != 4 or latents.shape[0] != int(metadata["count"]):
            raise ValueError("regularization set latents do not match their metadata")
        return cls(SubjectClass(metadata["subject_class"]), latents, latents.shape[0], metadata["source"])


class RegCache(Protocol):
    """Where regularization sets are kept between jobs (the LMDB store implements it)."""

    def get_reg_set(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or None."""
        ...

    def put_reg_set(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing what was there."""
        ...


class DictRegCache:
    """An in-memory ``RegCache`` for tests; counts reads and writes."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.gets = 0
        self.puts = 0

    def get_reg_set(self, key: str) -> bytes | None:
        """The stored bytes, or None."""
        self.gets += 1
        return self.data.get(key)

    def put_reg_set(self, key: str, data: bytes) -> None:
        """Store the bytes."""
        self.puts += 1
        self.data[key] = data


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes: an 8-byte little-endian header length, then a JSON header."""
    if len(data) < 8:
        raise ValueError("too short for safetensors")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise ValueError("safetensors header runs past the end")
    header: dict[str, Any] = json.loads(data[8 : 8 + size])
    metadata = header.get("__metadata__") or {}
    return {str(key): str(value) for key, value in metadata.items()}


def reg_cache_key(base_model_hash: str, subject_class: SubjectClass, resolution: int) -> str:
    """The store key of a set: what the images depend on, and nothing else."""
    # The store files these under its own "reg/" prefix.
    return f"v{CACHE_VERSION}/{base_model_hash}/{subject_class.value}/{resolution}"


def class_prompt(subject_class: SubjectClass) -> str:
    """The prompt the class images are generated with; training pairs them with the same prompt."""
    return f"a photo of a {subject_class.value}"


def _cached(cache: RegCache, key: str) -> RegularizationSet | None:
    data = cache.get_reg_set(key)
    if data is None:
        return None
    try:
        return RegularizationSet.from_bytes(data)
    except (ValueError, KeyError, safetensors.SafetensorError) as error:
        # A set from an older version or a damaged value: make a new one rather than fail every job.
        logger.warning("ignoring unreadable regularization set %s: %s", key, error)
        return None


def _check_clean(resident: Resident) -> None:
    if getattr(resident.unet, "peft_config", None):
        raise RuntimeError("the resident UNet has LoRA adapters loaded; unload them before making class images")


def load_or_build(
    resident: Resident,
    subject_class: SubjectClass,
    count: int,
    resolution: int,
    cache: RegCache,
    on_progress: Callable[[int, int], None],
    should_stop: Callable[[], bool],
) -> RegularizationSet:
    """The cached set for this model/class/resolution, or generate the missing images, cache and return it.

    A cached imported set is used as it is. A cached generated set smaller than ``count`` (an older, smaller
    setting, or a build that was cancelled half-way) is topped up: image ``i`` always comes from seed ``i``, so
    the result is the same as one uninterrupted build. ``on_progress(done, count)`` is called per generated
    image, and never when the cache answers (nothing to wait for); ``should_stop`` is polled at every
    denoising step and raises ``JobCancelled``, after saving what is done.
    """
    if count < 1:
        raise ValueError("a regularization set needs at least one image")
    key = reg_cache_key(resident.base_model_hash, subject_class, resolution)
    existing = _cached(cache, key)
    if existing is not None and (existing.source == "imported" or existing.count >= count):
        return existing
    _check_clean(resident)
    done: list[torch.Tensor] = [existing.latents] if existing is not None else []
    have = existing.count if existing is not None else 0
    logger.info("generating %d %s class images at %d px", count - have, subject_class.value, resolution)
    on_progress(have, count)

    def stop_check(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        # Inside the denoising loop, so a cancel takes effect within one UNet call, not one batch.
        if should_stop():
            raise JobCancelled(CANCELLED)
        return kwargs

    prompt = class_prompt(subject_class)
    batch_size = 8 if resident.device.type == "cuda" else 4
    try:
        while have < count:
            if should_stop():
                raise JobCancelled(CANCELLED)
            n = min(batch_size, count - have)
            # One CPU generator per image: the same image whatever the batch size or device.
            generators = [torch.Generator("cpu").manual_seed(index) for index in range(have, have + n)]
            with torch.no_grad():
                out = resident.pipeline(
                    prompt=[prompt] * n,
                    height=resolution,
                    width=resolution,
                    num_inference_steps=resident.sample_steps,
                    guidance_scale=GUIDANCE_SCALE,
                    generator=generators,
                    output_type="latent",
                    callback_on_step_end=stop_check,
                )
            done.append(out.images.float().cpu())
            for _ in range(n):
                have += 1
                on_progress(have, count)
    finally:
        # Keep whatever finished, cancelled or not: the next job continues from here.
        if done and have > (existing.count if existing is not None else 0):
            partial = torch.cat(done)
            cache.put_reg_set(key, RegularizationSet(subject_class, partial, have, "generated").to_bytes())
    latents = torch.cat(done)
    return RegularizationSet(subject_class, latents, latents.shape[0], "generated")


def import_photos(
    resident: Resident,
    subject_class: SubjectClass,
    images: Iterable[Image.Image],
    resolution: int,
    cache: RegCache,
    on_progress: Callable[[int], None] = lambda done: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RegularizationSet:
    """Use real photos as the class set: center-crop, resize, VAE-encode, and cache under the same key.

    ``images`` is read a batch at a time, so an operator's set of hundreds of photos is never all in memory as
    pixels; ``on_progress(done)`` follows each batch and ``should_stop`` is checked between batches.
    """
    done: list[torch.Tensor] = []
    count = 0
    photos = iter(images)
    while batch := list(itertools.islice(photos, ENCODE_BATCH)):
        if should_stop():
            raise JobCancelled(CANCELLED)
        done.append(resident.encode_images(batch, resolution).cpu())
        count += len(batch)
        on_progress(count)
    if not done:
        raise ValueError("no photos to import")
    latents = torch.cat(done)
    reg = RegularizationSet(subject_class, latents, latents.shape[0], "imported")
    cache.put_reg_set(reg_cache_key(resident.base_model_hash, subject_class, resolution), reg.to_bytes())
    return reg
