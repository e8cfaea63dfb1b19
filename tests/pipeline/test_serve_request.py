"""Resolving a /serve request: sizes on the model's grid, automatic weights, activation words, limits."""

from __future__ import annotations

import itertools
import math

import pytest

from daemon.errors import BadInput
from daemon.jobs.model import SubjectClass
from daemon.pipeline.serve_request import (
    MAX_LORAS,
    AdaptPicture,
    GenerationDefaults,
    ServeRequest,
    auto_weight,
    resolve,
    size_for,
    with_activation_words,
)
from tests.records import lora_record

SD15 = GenerationDefaults(resolution=512, size_multiple=64, steps=30)


@pytest.mark.parametrize(
    ("ratio", "size"),
    [("", (512, 512)), ("1:1", (512, 512)), ("2:3", (448, 640)), ("3:2", (640, 448)), ("16:9", None)],
)
def test_sizes_keep_the_area_and_the_grid(ratio: str, size: tuple[int, int] | None) -> None:
    if size is None:
        with pytest.raises(BadInput, match="between 1 and 8"):
            size_for(ratio, 512, 64)
        return
    width, height = size_for(ratio, 512, 64)
    assert (width, height) == size
    assert width % 64 == 0 and height % 64 == 0
    assert abs(width * height - 512 * 512) / (512 * 512) < 0.15


@pytest.mark.parametrize("ratio", ["2:1", "1:2", "4:3", "3:4", "5:4", "8:5"])
def test_every_allowed_ratio_lands_on_the_grid_near_the_ratio(ratio: str) -> None:
    w, h = (int(part) for part in ratio.split(":"))
    width, height = size_for(ratio, 512, 64)
    assert width % 64 == 0 and height % 64 == 0
    assert width / height == pytest.approx(w / h, rel=0.2)


@pytest.mark.parametrize("ratio", ["3:1", "1:3", "0:1", "a:b", "2x3"])
def test_odd_ratios_are_refused(ratio: str) -> None:
    with pytest.raises(BadInput):
        size_for(ratio, 512, 64)


def test_automatic_weights_fall_as_loras_are_added() -> None:
    weights = [auto_weight(count) for count in range(1, MAX_LORAS + 1)]
    assert weights[0] == 1.0
    assert all(later < earlier for earlier, later in itertools.pairwise(weights))
    assert weights[-1] >= 0.5


def test_activation_words_are_added_only_where_missing() -> None:
    a = lora_record("rifttami", SubjectClass.WOMAN)
    b = lora_record("kourvair", SubjectClass.MAN)
    assert with_activation_words("on a beach", [a, b]) == "rifttami woman, kourvair man, on a beach"
    assert with_activation_words("Rifttami on a beach", [a]) == "Rifttami on a beach"
    assert with_activation_words("rifttamis", [a]) == "rifttami woman, rifttamis"  # a word, not a substring
    assert with_activation_words("", [a]) == "rifttami woman"


def test_resolve_fills_every_default() -> None:
    params = resolve(ServeRequest(prompt=" hello ", loras=[("rifttami", None)]), [lora_record("rifttami")], SD15)
    assert params.prompt == "hello" and params.full_prompt.startswith("rifttami ")
    assert (params.steps, params.cfg, params.count, params.width, params.height) == (30, 7.0, 1, 512, 512)
    assert 0 <= params.seed < 2**32 and params.adapt_image == "" and params.adapt_weight == 0.0


def test_an_empty_request_is_refused() -> None:
    with pytest.raises(BadInput, match="Write what to generate"):
        resolve(ServeRequest(prompt="  "), [], SD15)


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_a_prompt_weight_out_of_range_is_refused_when_accepted(field: str) -> None:
    request = ServeRequest(prompt="a portrait")
    setattr(request, field, "a (portrait:9)")
    with pytest.raises(BadInput, match=r"\(word:9\) must be between 0 and 3"):
        resolve(request, [], SD15)
    assert resolve(ServeRequest(prompt="a (portrait:1.2)"), [], SD15).full_prompt == "a (portrait:1.2)"


def test_the_sampler_is_resolved_to_its_documented_name() -> None:
    assert resolve(ServeRequest(prompt="x"), [], SD15).sampler == "DPM++ 2M"
    assert resolve(ServeRequest(prompt="x", sampler="euler a"), [], SD15).sampler == "Euler a"
    with pytest.raises(BadInput, match="There is no sampler"):
        resolve(ServeRequest(prompt="x", sampler="plms"), [], SD15)


def test_power_fills_in_the_hires_pass() -> None:
    assert resolve(ServeRequest(prompt="x"), [], SD15).hires_scale == 0
    params = resolve(ServeRequest(prompt="x", power=True, steps=20), [], SD15)
    assert (params.hires_scale, params.hires_steps, params.hires_upscaler) == (2.0, 20, "Latent")
    assert 0.3 <= params.hires_denoise <= 0.7 and (params.width, params.height) == (512, 512)
    lanczos = resolve(ServeRequest(prompt="x", power=True, power_scale=1.5, upscale_method="LANCZOS"), [], SD15)
    assert (lanczos.hires_scale, lanczos.hires_upscaler) == (1.5, "Lanczos")


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (ServeRequest(prompt="x", power=True, power_scale=3), "upscales 1.5 to 2 times"),
        (ServeRequest(prompt="x", power=True, upscale_method="esrgan"), "--upscalemethod takes latent or lanczos"),
        (ServeRequest(prompt="x", upscale_method="latent"), "go with --power"),
        (ServeRequest(prompt="x", power=True, steps=1), "at least 2 steps"),
    ],
)
def test_power_mistakes_are_named(request_: ServeRequest, words: str) -> None:
    with pytest.raises(BadInput, match=words):
        resolve(request_, [], SD15)


def test_four_adapt_pictures_are_accepted_with_their_weights_and_a_fifth_is_refused() -> None:
    with_ip = GenerationDefaults(resolution=512, size_multiple=64, steps=30, adapt_available=True)
    more = [
        AdaptPicture(image="b.png", weight=0.3),
        AdaptPicture(url="https://x.org/c.png"),
        AdaptPicture("d.png"),
    ]
    request = ServeRequest(prompt="x", adapt_image="a.png", more_adapts=more)
    params = resolve(request, [], with_ip)
    assert [(use.image, use.weight) for use in params.adapts] == [
        ("a.png", 0.6),
        ("b.png", 0.3),
        ("", 0.6),  # the link's picture is named when the job is stored
        ("d.png", 0.6),
    ]
    assert (params.adapt_image, params.adapt_weight) == ("a.png", 0.6)
    request.more_adapts.append(AdaptPicture("e.png"))
    with pytest.raises(BadInput, match="at most 4 --adapt pictures"):
        resolve(request, [], with_ip)
    with pytest.raises(BadInput, match="between 0 and 1"):
        resolve(
            ServeRequest(prompt="x", adapt_image="a.png", more_adapts=[AdaptPicture("b.png", "", 2)]), [], with_ip
        )
    with pytest.raises(BadInput, match="no face IP-Adapter configured"):
        resolve(ServeRequest(prompt="x", adapt_face="me.png"), [], with_ip)
    with pytest.raises(BadInput, match="no IP-Adapter model configured"):
        resolve(ServeRequest(prompt="x", adapt_image="a.png"), [], SD15)


def test_adaptface_is_a_unit_of_its_own_beside_four_adapt_pictures() -> None:
    with_face = GenerationDefaults(
        resolution=512, size_multiple=64, steps=30, adapt_available=True, face_adapt_available=True
    )
    more = [AdaptPicture("b.png"), AdaptPicture("c.png"), AdaptPicture("d.png", weight=0.2)]
    request = ServeRequest(prompt="x", adapt_image="a.png", more_adapts=more, adapt_face="me.png")
    params = resolve(request, [], with_face)
    assert [use.weight for use in params.adapts] == [0.6, 0.6, 0.6, 0.2]
    assert (params.adapt_face, params.adapt_face_weight) == ("me.png", 0.6)
    # Alone, and from a link: the link's picture is fetched and named when the job is stored.
    alone = resolve(ServeRequest(prompt="x", adapt_face=" https://x.org/me.jpg "), [], with_face)
    assert (alone.adapts, alone.adapt_face, alone.adapt_face_weight) == ([], "", 0.6)
    assert ServeRequest(prompt="x", adapt_face="HTTP://x.org/a").face_picture == AdaptPicture(url="HTTP://x.org/a")
    assert ServeRequest(prompt="x", adapt_face="me.png").face_picture == AdaptPicture(image="me.png")
    assert ServeRequest(prompt="x").face_picture is None
    without = resolve(ServeRequest(prompt="x", adapt_image="a.png"), [], with_face)
    assert (without.adapt_face, without.adapt_face_weight) == ("", 0.0)
    # Its own weight, within 0..1, and only beside a face picture.
    weighed = resolve(ServeRequest(prompt="x", adapt_face="me.png", adapt_face_weight=0.35), [], with_face)
    assert weighed.adapt_face_weight == pytest.approx(0.35)
    for weight in (1.5, -0.1, math.nan):
        with pytest.raises(BadInput, match="adaptface weight must be between 0 and 1"):
            resolve(ServeRequest(prompt="x", adapt_face="me.png", adapt_face_weight=weight), [], with_face)
    with pytest.raises(BadInput, match="--adaptfaceweight goes with --adaptface"):
        resolve(ServeRequest(prompt="x", adapt_face_weight=0.5), [], with_face)
    # The face does not count towards the four --adapt pictures, but a fifth picture is still one too many.
    request.more_adapts.append(AdaptPicture("e.png"))
    with pytest.raises(BadInput, match="at most 4 --adapt pictures"):
        resolve(request, [], with_face)
