"""/serve --adaptface through a tiny "plus face" IP-Adapter on the demo models: loaded once beside the plain one
and kept off the UNet, the picture cropped to its face, one unit of its own beside up to four --adapt pictures,
refused with a sentence when there is no face or no face model, and training untouched afterwards."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from daemon.errors import BadInput, JobCancelled
from daemon.jobs.model import AdaptUse, SubjectClass
from daemon.models.resident import Resident
from daemon.pipeline import serve_request as serve_request_module
from daemon.pipeline.adapters import AdapterCache
from daemon.pipeline.face import crop_face, detect_faces
from daemon.pipeline.generate import GeneratePipeline
from daemon.pipeline.regularization import DictRegCache, load_or_build
from daemon.store.lmdb_store import Store
from tests.pipeline.generate_fixtures import NAMES, context, params, parse_infotext, pixels, run, texts
from tests.pipeline.test_adapters import assert_trains_bare, snapshot

pytest_plugins = ["tests.fixtures_models", "tests.pipeline.generate_fixtures"]

FACE = "astronaut.png"
NO_FACE = "coffee.png"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pictures(store: Store) -> Store:
    """The module's store with a portrait (scikit-image's astronaut), a picture without a face (its coffee cup)
    and three more --adapt pictures."""
    from skimage import data

    store.put_image(FACE, "telegram//111", png(Image.fromarray(data.astronaut())), "1" * 64)
    store.put_image(NO_FACE, "telegram//111", png(Image.fromarray(data.coffee())), "2" * 64)
    for seed, name in enumerate(("b.png", "c.png", "d.png"), start=5):
        noise = np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)
        store.put_image(name, "telegram//111", png(Image.fromarray(noise)), "0" * 64)
    return store


@pytest.fixture
def face_generate(ip_resident: Resident, adapters_for_ip: AdapterCache) -> Iterator[GeneratePipeline]:
    yield GeneratePipeline(resident=ip_resident, adapters=adapters_for_ip)
    # Whatever a test did, the next one starts from the UNet's own processors.
    assert ip_resident.unet.encoder_hid_proj is None


def plain_unet(resident: Resident) -> bool:
    """No image projection and no image attention on the UNet: what training and plain generations need."""
    processors = resident.unet.attn_processors.values()
    return resident.unet.encoder_hid_proj is None and not any(hasattr(p, "to_k_ip") for p in processors)


def test_the_face_ip_adapter_is_loaded_once_beside_the_plain_one_and_kept_off_the_unet(
    ip_resident: Resident,
) -> None:
    from diffusers.models.embeddings import ImageProjection, IPAdapterPlusImageProjection

    adapter = ip_resident.ip_adapter
    assert adapter is not None and adapter.face is not None
    assert isinstance(adapter.picture.projection, ImageProjection)
    # "plus": a Resampler (detected from the file's `latents`) giving 16 image tokens to every cross-attention.
    assert isinstance(adapter.face.projection, IPAdapterPlusImageProjection)
    assert adapter.face.weights == "models/ip-adapter-plus-face_sd15.safetensors"
    cross_attentions = [name for name in ip_resident.unet.attn_processors if name.endswith("attn2.processor")]
    assert sorted(adapter.face.processors) == sorted(cross_attentions) == sorted(adapter.picture.processors)
    assert {tuple(p.num_tokens) for p in adapter.face.processors.values()} == {(16,)}
    assert {tuple(p.num_tokens) for p in adapter.picture.processors.values()} == {(4,)}
    # Frozen, and not part of the UNet: nothing of either model is among its parameters.
    face_parameters = [
        *adapter.face.projection.parameters(),
        *(q for p in adapter.face.processors.values() for q in p.parameters()),
    ]
    assert face_parameters and not any(p.requires_grad for p in face_parameters)
    unet_storage = {p.data_ptr() for p in ip_resident.unet.parameters()}
    assert not unet_storage & {p.data_ptr() for p in face_parameters}
    assert plain_unet(ip_resident)


def test_the_picture_is_cropped_to_its_face(pictures: Store) -> None:
    portrait = Image.open(io.BytesIO(pictures.get_image(FACE)))
    [face] = detect_faces(portrait)
    crop = crop_face(portrait)
    assert crop is not None
    assert crop.width == crop.height and face.side < crop.width < min(portrait.size)
    # The crop holds the face: detected again, it fills most of the square.
    [again] = detect_faces(crop)
    assert again.side > crop.width / 3
    assert crop_face(Image.open(io.BytesIO(pictures.get_image(NO_FACE)))) is None


def test_adaptface_is_deterministic_changes_the_picture_and_has_its_own_weight(
    face_generate: GeneratePipeline, pictures: Store, journal: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    crops: list[tuple[int, int]] = []

    def spy(image: Image.Image) -> Image.Image | None:
        crop = crop_face(image)
        crops.append(crop.size if crop is not None else (0, 0))
        return crop

    monkeypatch.setattr(serve_request_module, "crop_face", spy)

    def made(**changes: Any) -> Any:
        return run(face_generate, pictures, journal, params(NAMES[0], **changes))

    plain = pixels(made().images[0].png)
    outcome = made(adapt_face=FACE, adapt_face_weight=0.6)
    faced = pixels(outcome.images[0].png)
    assert np.array_equal(faced, pixels(made(adapt_face=FACE, adapt_face_weight=0.6).images[0].png))
    assert np.abs(faced.astype(int) - plain).max() > 10
    # Its scale is its own: at 0 the face picture has no say at all.
    assert np.array_equal(pixels(made(adapt_face=FACE, adapt_face_weight=0.0).images[0].png), plain)
    # The pipeline saw the face crop, not the 512 px portrait.
    assert crops and all(0 < side < 512 for size in crops for side in size)

    _, _, fields = parse_infotext(texts(outcome.images[0].png)["parameters"])
    assert fields["Face IP-Adapter"] == "ip-adapter-plus-face_sd15"
    assert fields["Face IP-Adapter weight"] == "0.6"
    assert "IP-Adapter weight" not in fields  # no --adapt picture in this one
    facts = json.loads(texts(outcome.images[0].png)["distillery"])
    assert facts["adapt_face"] == {"image": FACE, "weight": 0.6}
    assert plain_unet(face_generate.resident)


def test_an_upscale_draws_with_the_pictures_face_ip_adapter_too(
    face_generate: GeneratePipeline, pictures: Store, journal: Any
) -> None:
    made = run(face_generate, pictures, journal, params(NAMES[0], adapt_face=FACE, adapt_face_weight=0.6))
    [picture] = made.images
    pictures.put_image(picture.name, "telegram//111", picture.png, "3" * 64)
    hires = {"hires_scale": 2.0, "hires_steps": 3, "hires_denoise": 0.55, "hires_upscaler": "Latent"}

    def upscaled(weight: float) -> Any:
        job = params(NAMES[0], adapt_face=FACE, adapt_face_weight=weight, upscale_image=picture.name, **hires)
        return run(face_generate, pictures, journal, job)

    outcome = upscaled(0.6)
    big = pixels(outcome.images[0].png)
    assert big.shape[:2] == (128, 128)
    assert np.array_equal(big, pixels(upscaled(0.6).images[0].png))
    # The face unit takes part in the hires pass: without its say, the details come out otherwise.
    assert np.abs(big.astype(int) - pixels(upscaled(0.0).images[0].png)).max() > 10
    _, _, fields = parse_infotext(texts(outcome.images[0].png)["parameters"])
    assert fields["Face IP-Adapter weight"] == "0.6" and fields["Hires upscale"] == "2"
    assert plain_unet(face_generate.resident)


def test_adaptface_stacks_with_four_adapt_pictures(
    face_generate: GeneratePipeline, pictures: Store, journal: Any
) -> None:
    four = [AdaptUse("adapt.png", 0.8), AdaptUse("b.png", 0.5), AdaptUse("c.png", 0.7), AdaptUse("d.png", 0.4)]

    def made(**changes: Any) -> Any:
        p = params(NAMES[0], adapt_image="adapt.png", adapt_weight=0.8, adapts=four, **changes)
        return run(face_generate, pictures, journal, p)

    adapted = pixels(made().images[0].png)
    outcome = made(adapt_face=FACE, adapt_face_weight=0.7)
    both = pixels(outcome.images[0].png)
    assert np.array_equal(both, pixels(made(adapt_face=FACE, adapt_face_weight=0.7).images[0].png))
    assert np.abs(both.astype(int) - adapted).max() > 10
    # Five units, each with its own scale: the face at 0 leaves the four pictures' image as it was.
    assert np.array_equal(pixels(made(adapt_face=FACE, adapt_face_weight=0.0).images[0].png), adapted)
    _, _, fields = parse_infotext(texts(outcome.images[0].png)["parameters"])
    assert fields["IP-Adapter weight"] == "0.8, 0.5, 0.7, 0.4"
    assert fields["Face IP-Adapter weight"] == "0.7"
    assert plain_unet(face_generate.resident)


def test_a_picture_without_a_face_is_refused_before_any_gpu_work(
    face_generate: GeneratePipeline, pictures: Store, journal: Any, adapters_for_ip: AdapterCache
) -> None:
    with pytest.raises(BadInput, match="no face in the --adaptface picture"):
        run(face_generate, pictures, journal, params(NAMES[0], adapt_face=NO_FACE, adapt_face_weight=0.6))
    # Refused before the LoRA was even loaded, let alone a denoising step.
    assert adapters_for_ip.loaded == []


def test_adaptface_without_a_face_ip_adapter_is_refused(
    ip_resident: Resident, generate: GeneratePipeline, pictures: Store, journal: Any, adapters_for_ip: AdapterCache
) -> None:
    face_request = params(adapt_face=FACE, adapt_face_weight=0.6)
    # No IP-Adapter at all (the session's demo resident)...
    with pytest.raises(BadInput, match="no face IP-Adapter configured"):
        run(generate, pictures, journal, face_request)
    # ...or only the plain one: a job queued before a restart without the face model.
    assert ip_resident.ip_adapter is not None
    plain_only = dataclasses.replace(
        ip_resident, ip_adapter=dataclasses.replace(ip_resident.ip_adapter, face=None)
    )
    with pytest.raises(BadInput, match="no face IP-Adapter configured"):
        run(GeneratePipeline(resident=plain_only, adapters=adapters_for_ip), pictures, journal, face_request)


def test_training_and_class_images_after_adaptface_see_the_plain_unet(
    ip_resident: Resident,
    face_generate: GeneratePipeline,
    pictures: Store,
    journal: Any,
    adapters_for_ip: AdapterCache,
    portrait: Image.Image,
) -> None:
    before = snapshot(ip_resident.unet)
    both = params(NAMES[0], adapt_image="adapt.png", adapt_weight=0.5, adapt_face=FACE, adapt_face_weight=0.6)
    run(face_generate, pictures, journal, both)

    # A cancelled --adaptface generation takes both IP-Adapters off too.
    polls = 0

    def stop_on_second_step() -> bool:
        nonlocal polls
        polls += 1
        return polls > 2

    cancelled = context(
        pictures, journal, params(adapt_face=FACE, adapt_face_weight=0.6), should_stop=stop_on_second_step
    )
    with pytest.raises(JobCancelled):
        face_generate(cancelled)
    assert plain_unet(ip_resident)

    adapters_for_ip.clear()  # what the distill pipeline does first
    classes = load_or_build(ip_resident, SubjectClass.MAN, 2, 64, DictRegCache(), lambda d, t: None, lambda: False)
    assert classes.latents.shape == (2, 4, 16, 16)
    assert_trains_bare(ip_resident, portrait, before)
    assert plain_unet(ip_resident)
