"""/serve's richer options in the shared grammar: samplers, the hires pass, image to image, several adapts."""

from __future__ import annotations

import pytest

from frontends.commands import UsageError, parse_serve


def test_sampler_goes_to_the_daemon_as_written() -> None:
    assert parse_serve('a man --sampler "Euler a"').sampler == "Euler a"
    assert parse_serve("a man --sampler=ddim").sampler == "ddim"
    assert parse_serve("a man").sampler == ""


def test_power_is_a_switch_with_an_optional_inline_factor() -> None:
    spec = parse_serve("a man --power on mars --upscalemethod lanczos")
    assert spec.prompt == "a man on mars" and spec.power and not spec.HasField("power_scale")
    assert spec.upscale_method == "lanczos"
    scaled = parse_serve("a man --power=1.5")
    assert scaled.power and scaled.power_scale == pytest.approx(1.5)
    assert not parse_serve("a man").power


def test_image_takes_a_stored_picture_or_a_link_and_a_denoise() -> None:
    stored = parse_serve("a painting --image RiftTami.png --imagedenoise 0.3")
    assert stored.WhichOneof("init") == "init_image" and stored.init_image == "rifttami.png"
    assert stored.init_denoise == pytest.approx(0.3)
    linked = parse_serve("a painting --image https://example.org/me.jpg")
    assert linked.WhichOneof("init") == "init_url" and not linked.HasField("init_denoise")
    assert parse_serve("a painting").WhichOneof("init") is None


def test_up_to_four_adapt_pictures_repeated_or_numbered_each_with_a_weight() -> None:
    spec = parse_serve(
        "x --adapt a.png --adapt https://example.org/b.jpg --adaptweight2 0.3 --adapt4 d.png --adapt3 c.png "
        "--adaptweight 0.9"
    )
    assert spec.WhichOneof("adapt") == "adapt_image" and spec.adapt_image == "a.png"
    assert spec.adapt_weight == pytest.approx(0.9)
    more = [
        (m.WhichOneof("source"), m.image or m.url, m.weight if m.HasField("weight") else None)
        for m in spec.more_adapts
    ]
    assert more == [
        ("url", "https://example.org/b.jpg", pytest.approx(0.3)),
        ("image", "c.png", None),
        ("image", "d.png", None),
    ]
    first_link = parse_serve("x --adapt1 https://example.org/a.jpg")
    assert first_link.WhichOneof("adapt") == "adapt_url" and not first_link.more_adapts
    assert parse_serve("x --adaptface me.png").adapt_face == "me.png"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("x --sampler", "--sampler needs a value"),
        ("x --power=big", "--power takes a number"),
        ("x --upscalemethod", "--upscalemethod needs a value"),
        ("x --image somewhere", "--image takes a stored picture"),
        ("x --imagedenoise half", "--imagedenoise takes a number"),
        ("x --adapt a.png --adapt b.png --adapt c.png --adapt d.png --adapt e.png", "at most 4 --adapt pictures"),
        ("x --adapt5 e.png", "Unknown option --adapt5"),
        ("x --adaptweight3 0.5 --adapt a.png", "--adaptweight3 has no --adapt3 picture"),
        ("x --adaptface somewhere", "--adaptface takes a stored picture"),
    ],
)
def test_mistakes_in_the_new_options_are_named(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse_serve(text)
