"""/upscale on the demo models: the hires pass alone over a picture /serve made, with that picture's settings.

The job's parameters come from the real resolver (daemon/pipeline/upscale_request.py) over the record of the
/serve job that made the picture; the picture itself reaches the pipeline as a stored input, as the worker
reads it before dispatch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from daemon.errors import BadInput
from daemon.jobs.model import AdaptUse, GenerateParams
from daemon.pipeline.denoise import denoised_steps, hires_size
from daemon.pipeline.generate import GeneratePipeline
from daemon.pipeline.serve_request import GenerationDefaults, ServeRequest, fit_picture, size_for
from daemon.pipeline.upscale_request import largest_picture, upscale_params
from daemon.store.lmdb_store import Store
from tests.pipeline.generate_fixtures import NAMES, context, params, parse_infotext, pixels, run, texts

pytest_plugins = ["tests.fixtures_models", "tests.pipeline.generate_fixtures"]

DEMO = GenerationDefaults(resolution=64, size_multiple=8, steps=4)
HIRES_FIELDS = {"Denoising strength", "Hires upscale", "Hires steps", "Hires upscaler"}


@dataclasses.dataclass
class Served:
    """A /serve job's parameters and the two pictures it made, stored under their names."""

    params: GenerateParams
    names: list[str]
    pngs: list[bytes]


@pytest.fixture(scope="module")
def served(resident: Any, store: Store, journal: Any) -> Served:
    from daemon.pipeline.adapters import AdapterCache

    cache = AdapterCache(resident.pipeline, capacity=4)
    try:
        source = params(NAMES[0], NAMES[1], steps=4, count=2, seed=4321, sampler="Euler a", cfg=6.5)
        outcome = GeneratePipeline(resident=resident, adapters=cache)(context(store, journal, source))
    finally:
        cache.clear()
    for image in outcome.images:
        store.put_image(image.name, "telegram//111", image.png, hashlib.sha256(image.png).hexdigest())
    return Served(source, [image.name for image in outcome.images], [image.png for image in outcome.images])


def upscale(served: Served, index: int, **options: Any) -> GenerateParams:
    """The job /upscale makes for picture ``index`` (0-based) of the served job."""
    request = ServeRequest(prompt="", upscale_image=served.names[index], power=True, **options)
    seed = served.params.seed + index
    return upscale_params(request, served.params, seed, (64, 64), DEMO)


@pytest.mark.parametrize(("method", "scale", "upscaler"), [("", None, "Latent"), ("lanczos", 1.5, "Lanczos")])
def test_upscale_redraws_the_picture_larger_with_its_own_settings(
    generate: GeneratePipeline,
    store: Store,
    journal: Any,
    served: Served,
    method: str,
    scale: float | None,
    upscaler: str,
) -> None:
    job = upscale(served, 1, upscale_method=method, power_scale=scale)
    assert (job.seed, job.count, job.hires_upscaler, job.upscale_image) == (4322, 1, upscaler, served.names[1])
    ctx = context(store, journal, job)
    outcome = generate(ctx)
    [made] = outcome.images
    side = int(64 * (scale or 2.0))
    result = pixels(made.png)
    assert result.shape == (side, side, 3) and made.info["width"] == side and made.info["seed"] == 4322

    # Deterministic by seed: the same upscale again is the same picture.
    assert np.array_equal(result, pixels(run(generate, store, journal, job).images[0].png))
    # The picture is where it starts: the same settings and seed over the job's other picture make another
    # result. And the second pass drew details of its own: the result is not the picture stretched.
    swapped = dataclasses.replace(job, upscale_image=served.names[0])
    assert not np.array_equal(result, pixels(run(generate, store, journal, swapped).images[0].png))
    with Image.open(io.BytesIO(served.pngs[1])) as picture:
        stretched = np.asarray(picture.convert("RGB").resize((side, side), Image.Resampling.LANCZOS))
    assert np.abs(result.astype(int) - stretched).max() > 10

    # The infotext is the source picture's, with the hires pass's fields added, as A1111's PNG Info reads it.
    prompt, negative, fields = parse_infotext(texts(made.png)["parameters"])
    old_prompt, old_negative, old_fields = parse_infotext(texts(served.pngs[1])["parameters"])
    assert (prompt, negative) == (old_prompt, old_negative)
    assert prompt.startswith("a photo of rifttami and quornel") and "<lora:quornel:0.8>" in prompt
    assert set(fields) - set(old_fields) == HIRES_FIELDS
    assert {key: fields[key] for key in old_fields} == old_fields
    settings = [fields[key] for key in ("Seed", "Size", "Sampler", "CFG scale", "Steps")]
    assert settings == ["4322", "64x64", "Euler a", "6.5", "4"]
    hires = [fields[key] for key in ("Hires upscale", "Hires steps", "Hires upscaler", "Denoising strength")]
    assert hires == [f"{scale or 2.0:g}", "4", upscaler, "0.55"]

    # Only the hires pass runs: its steps are the job's whole progress, under a stage that says what runs.
    events = store.events_after(ctx.job.id, 0)
    assert {e.total for e in events if e.kind == "progress"} == {denoised_steps(4, 0.55)}
    assert f"Upscaling {served.names[1]}." in [e.text for e in events]


def test_each_picture_of_a_job_upscales_from_its_own_seed(
    generate: GeneratePipeline, store: Store, journal: Any, served: Served
) -> None:
    first, second = upscale(served, 0), upscale(served, 1)
    assert (first.seed, second.seed) == (4321, 4322)
    one = pixels(run(generate, store, journal, first).images[0].png)
    two = pixels(run(generate, store, journal, second).images[0].png)
    assert np.abs(one.astype(int) - two).max() > 10


def test_what_an_upscale_cannot_be(served: Served) -> None:
    with pytest.raises(BadInput, match=r"/upscale takes a picture's name, --power=1\.5\.\.2 and --upscalemethod"):
        upscale_params(
            ServeRequest(prompt="a cat", upscale_image=served.names[0]), served.params, 4321, (64, 64), DEMO
        )
    with pytest.raises(BadInput, match=r"upscales 1\.5 to 2 times"):
        upscale(served, 0, power_scale=3.0)
    with pytest.raises(BadInput, match="--upscalemethod takes latent or lanczos"):
        upscale(served, 0, upscale_method="esrgan")
    # An upscaled picture (twice the base size) upscaled again would pass the largest size /serve makes.
    twice = dataclasses.replace(served.params, hires_scale=2.0, hires_steps=4, hires_denoise=0.55)
    request = ServeRequest(prompt="", upscale_image="x-1.png", power=True, power_scale=1.5)
    with pytest.raises(BadInput) as refused:
        upscale_params(request, twice, 1, (128, 128), DEMO)
    assert str(refused.value) == (
        "x-1.png is already upscaled (128x128): 1.5 times more would be 192x192, larger than the largest "
        "picture /serve makes (128x144)."
    )
    # A model the operator took out of the configuration.
    gone = dataclasses.replace(served.params, model="dreamy")
    with pytest.raises(BadInput, match="made with the model dreamy, which this distillery no longer has"):
        upscale_params(request, gone, 1, (64, 64), DEMO)
    # IP-Adapter pictures the picture was made with, where the IP-Adapters are no longer configured.
    adapted = dataclasses.replace(
        served.params, adapt_image="a.png", adapt_weight=0.5, adapts=[AdaptUse("a.png", 0.5)]
    )
    with pytest.raises(BadInput, match="made with --adapt pictures, and this distillery has no IP-Adapter now"):
        upscale_params(request, adapted, 1, (64, 64), DEMO)
    faced = dataclasses.replace(served.params, adapt_face="me.png", adapt_face_weight=0.6)
    with_plain = dataclasses.replace(DEMO, adapt_available=True)
    with pytest.raises(BadInput, match="made with --adaptface, and this distillery has no face IP-Adapter now"):
        upscale_params(request, faced, 1, (64, 64), with_plain)


def test_an_upscale_keeps_the_pictures_ip_adapter_pictures_and_drops_its_start_picture(served: Served) -> None:
    made = dataclasses.replace(
        served.params,
        adapt_image="a.png",
        adapt_weight=0.5,
        adapts=[AdaptUse("a.png", 0.5), AdaptUse("b.png", 0.3)],
        adapt_face="me.png",
        adapt_face_weight=0.7,
        init_image="start.png",
        init_denoise=0.6,
    )
    both = dataclasses.replace(DEMO, adapt_available=True, face_adapt_available=True)
    request = ServeRequest(prompt="", upscale_image="x-1.png", power=True)
    job = upscale_params(request, made, 1, (64, 64), both)
    assert [(use.image, use.weight) for use in job.adapts] == [("a.png", 0.5), ("b.png", 0.3)]
    assert (job.adapt_image, job.adapt_weight) == ("a.png", 0.5)
    assert (job.adapt_face, job.adapt_face_weight) == ("me.png", 0.7)
    assert (job.init_image, job.init_denoise) == ("", 0.0)


def test_the_size_cap_is_the_largest_picture_serve_makes() -> None:
    """Every size /serve --power=2 makes, from an --ar ratio or an --image picture, against the cap."""
    probe = params()
    made = set()
    for width in range(40, 200):
        for height in range(40, 200):
            fit_picture(probe, (width, height), DEMO)
            made.add(hires_size(probe.width, probe.height, 2.0, 8))
    ratios = [f"{w}:{h}" for w in range(1, 9) for h in range(1, 9) if max(w / h, h / w) <= 2]
    made |= {hires_size(*size_for(ratio, 64, 8), 2.0, 8) for ratio in ratios}
    cap = largest_picture(64, 8)
    assert max(w * h for w, h in made) == cap[0] * cap[1] == 128 * 144
    # At SD 1.5's size: a little over 1024x1024, as snapping a ratio to the grid gives a few more pixels.
    big = largest_picture(512, 8)
    assert max(w * h for w, h in (hires_size(*size_for(r, 512, 8), 2.0, 8) for r in ratios)) <= big[0] * big[1]
    assert big == (832, 1280)
