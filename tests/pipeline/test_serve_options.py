"""/serve's richer options on the demo models: prompt weights, samplers, the hires pass, image to image.

Each is deterministic by seed and changes the picture against the same request without it.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from daemon.errors import BadInput
from daemon.jobs.model import AdaptUse
from daemon.models.resident import Resident
from daemon.pipeline.adapters import AdapterCache
from daemon.pipeline.generate import GeneratePipeline
from daemon.pipeline.samplers import DEFAULT_SAMPLER, SAMPLERS, sampler_name
from daemon.store.lmdb_store import Store
from tests.pipeline.generate_fixtures import NAMES, context, params, parse_infotext, pixels, run, texts

pytest_plugins = ["tests.fixtures_models", "tests.pipeline.generate_fixtures"]


def picture(generate: GeneratePipeline, store: Store, journal: Any, **changes: Any) -> np.ndarray[Any, Any]:
    return pixels(run(generate, store, journal, params(NAMES[0], **changes)).images[0].png)


def test_prompt_weights_change_the_picture_and_unit_weights_do_not(
    generate: GeneratePipeline, store: Store, journal: Any
) -> None:
    plain = picture(generate, store, journal, full_prompt="a photo of rifttami in a red hat")
    unit = picture(generate, store, journal, full_prompt="a photo of (rifttami:1.0) in a red hat")
    weighted = picture(generate, store, journal, full_prompt="a photo of (rifttami:1.4) in a [red] hat")
    again = picture(generate, store, journal, full_prompt="a photo of (rifttami:1.4) in a [red] hat")
    assert np.array_equal(unit, plain)
    assert np.array_equal(weighted, again)
    assert np.abs(weighted.astype(int) - plain).max() > 10
    negative = picture(generate, store, journal, negative_prompt="(blurry:1.5), lowres")
    assert np.abs(negative.astype(int) - picture(generate, store, journal)).max() > 10


def test_each_sampler_is_deterministic_differs_from_the_default_and_is_named_in_the_infotext(
    generate: GeneratePipeline, store: Store, journal: Any
) -> None:
    default = picture(generate, store, journal)
    assert np.array_equal(default, picture(generate, store, journal, sampler="DPM++ 2M"))
    for name, sampler in SAMPLERS.items():
        if name == DEFAULT_SAMPLER:
            continue
        outcome = run(generate, store, journal, params(NAMES[0], sampler=name))
        image = pixels(outcome.images[0].png)
        assert np.array_equal(image, picture(generate, store, journal, sampler=name)), name
        assert not np.array_equal(image, default), name  # UniPC and DPM++ 2M are close at 3 steps
        _, _, fields = parse_infotext(texts(outcome.images[0].png)["parameters"])
        assert (fields["Sampler"], fields["Schedule type"]) == (sampler.a1111, sampler.schedule)


@pytest.mark.parametrize(
    ("written", "name"),
    [("", "DPM++ 2M"), ("euler a", "Euler a"), ("Euler_A", "Euler a"), ("dpmpp_2m_karras", "DPM++ 2M Karras")],
)
def test_sampler_names_are_read_loosely(written: str, name: str) -> None:
    assert sampler_name(written) == name


def test_an_unknown_sampler_is_refused_with_the_list() -> None:
    with pytest.raises(BadInput, match=r"There is no sampler 'k_lms'; choose one of DPM\+\+ 2M, .*Euler a"):
        sampler_name("k_lms")


@pytest.mark.parametrize(("upscaler", "scale", "side"), [("Latent", 2.0, 128), ("Lanczos", 1.5, 96)])
def test_power_upscales_denoises_again_and_its_infotext_parses_back(
    generate: GeneratePipeline, store: Store, journal: Any, upscaler: str, scale: float, side: int
) -> None:
    hires = {"hires_scale": scale, "hires_steps": 4, "hires_denoise": 0.5, "hires_upscaler": upscaler}
    ctx = context(store, journal, params(NAMES[0], steps=4, **hires))
    outcome = generate(ctx)
    image = pixels(outcome.images[0].png)
    assert image.shape == (side, side, 3)
    assert np.array_equal(image, picture(generate, store, journal, steps=4, **hires))
    # Not the base picture stretched: the second pass drew new detail.
    base = run(generate, store, journal, params(NAMES[0], steps=4)).images[0].png
    stretched = np.asarray(Image.open(io.BytesIO(base)).resize((side, side), Image.Resampling.LANCZOS))
    assert np.abs(image.astype(int) - stretched).max() > 10
    _, _, fields = parse_infotext(texts(outcome.images[0].png)["parameters"])
    assert fields["Size"] == "64x64"  # A1111 writes the base size; the upscale says the rest
    hires_fields = (fields["Hires upscale"], fields["Hires steps"], fields["Hires upscaler"])
    assert hires_fields == (f"{scale:g}", "4", upscaler)
    assert fields["Denoising strength"] == "0.5"
    assert outcome.images[0].info["width"] == side
    # Progress counts both passes as one: 4 base steps, then 4 x 0.5 hires steps (the journal thins it out).
    steps = [e.step for e in store.events_after(ctx.job.id, 0) if e.kind == "progress"]
    assert steps == sorted(steps) and steps[-1] == 6
    assert {e.total for e in store.events_after(ctx.job.id, 0) if e.kind == "progress"} == {6}


def put_picture(store: Store, name: str, seed: int, size: tuple[int, int]) -> Image.Image:
    image = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    store.put_image(name, "telegram//111", buf.getvalue(), "0" * 64)
    return image


def test_image_to_image_keeps_the_picture_at_0_ignores_it_at_1_and_mixes_in_between(
    generate: GeneratePipeline, store: Store, journal: Any
) -> None:
    wide = put_picture(store, "wide.png", 1, (96, 48))
    put_picture(store, "other.png", 2, (96, 48))
    size = {"width": 88, "height": 48, "steps": 4}  # what fit_picture gives a 2:1 picture on the demo model

    kept = picture(generate, store, journal, init_image="wide.png", init_denoise=0.0, **size)
    assert np.array_equal(kept, np.asarray(wide.resize((88, 48), Image.Resampling.LANCZOS)))

    ignored = picture(generate, store, journal, init_image="wide.png", init_denoise=1.0, **size)
    assert np.array_equal(
        ignored, picture(generate, store, journal, init_image="other.png", init_denoise=1.0, **size)
    )
    assert np.array_equal(ignored, picture(generate, store, journal, **size))

    outcome = run(generate, store, journal, params(NAMES[0], init_image="wide.png", init_denoise=0.5, **size))
    mixed = pixels(outcome.images[0].png)
    assert mixed.shape == (48, 88, 3)
    assert np.array_equal(
        mixed, picture(generate, store, journal, init_image="wide.png", init_denoise=0.5, **size)
    )
    assert np.abs(mixed.astype(int) - kept).max() > 10 and np.abs(mixed.astype(int) - ignored).max() > 10
    other = picture(generate, store, journal, init_image="other.png", init_denoise=0.5, **size)
    assert np.abs(mixed.astype(int) - other).max() > 10
    _, _, fields = parse_infotext(texts(outcome.images[0].png)["parameters"])
    assert fields["Denoising strength"] == "0.5" and fields["Size"] == "88x48"

    # With --power on top: the picture's size, doubled.
    hires = {"hires_scale": 2.0, "hires_steps": 4, "hires_denoise": 0.5, "hires_upscaler": "Latent"}
    powered = picture(generate, store, journal, init_image="wide.png", init_denoise=0.5, **size, **hires)
    assert powered.shape == (96, 176, 3)


def test_several_adapt_pictures_each_with_its_weight(
    ip_resident: Resident, store: Store, journal: Any, adapters_for_ip: AdapterCache
) -> None:
    put_picture(store, "second.png", 3, (48, 48))
    put_picture(store, "third.png", 4, (48, 48))
    generate = GeneratePipeline(resident=ip_resident, adapters=adapters_for_ip)
    one = [AdaptUse("adapt.png", 0.8)]
    three = [*one, AdaptUse("second.png", 0.5), AdaptUse("third.png", 0.7)]

    def adapted(uses: list[AdaptUse]) -> Any:
        return run(generate, store, journal, params(adapt_image="adapt.png", adapt_weight=0.8, adapts=uses))

    single = pixels(adapted(one).images[0].png)
    outcome = adapted(three)
    several = pixels(outcome.images[0].png)
    assert np.array_equal(several, pixels(adapted(three).images[0].png))
    assert np.abs(several.astype(int) - single).max() > 10
    # Each picture has its own say: at weight 0 the extra pictures change nothing.
    silent = [*one, AdaptUse("second.png", 0.0), AdaptUse("third.png", 0.0)]
    assert np.abs(pixels(adapted(silent).images[0].png).astype(int) - single).max() <= 1
    _, _, fields = parse_infotext(texts(outcome.images[0].png)["parameters"])
    assert fields["IP-Adapter weight"] == "0.8, 0.5, 0.7"
    # Off again afterwards: the UNet has its own processors and no projection.
    assert ip_resident.unet.encoder_hid_proj is None
    assert not any(hasattr(p, "to_k_ip") for p in ip_resident.unet.attn_processors.values())
