"""/serve's richer options in the shared grammar (samplers, the hires pass, image to image, several adapts),
/upscale's grammar, and the mistakes every bot answers with its usage text."""

from __future__ import annotations

import pytest

from frontends.commands import UsageError, parse_serve, parse_upscale


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
    face = parse_serve("x --adaptface me.png --adaptfaceweight 0.4")
    assert face.adapt_face == "me.png" and face.adapt_face_weight == pytest.approx(0.4)
    assert not parse_serve("x --adaptface me.png").HasField("adapt_face_weight")


# Bad /serve words and the problem each bot states before the usage text; the Telegram, Slack and Discord tests
# send every one of them.
BAD_SERVE = [
    ("a cat --colour red", "Unknown option --colour."),
    ("a cat --bogus 1", "Unknown option --bogus."),
    ("a cat --steps many", "--steps takes a whole number, not 'many'."),
    ("a cat --seed many", "--seed takes a whole number, not 'many'."),
    ("a cat --n 0", "--n takes 1 to 4, not 0."),
    ("a cat --cfg high", "--cfg takes a number, not 'high'."),
    ("a cat --lora", "--lora needs a value."),
    ("a cat --lora Bad_Name", "'Bad_Name' is not a LoRA name (2 to 40 letters a-z and digits)."),
    ("a cat --lora rifttami:heavy", "--lora weight takes a number, not 'heavy'."),
    ("a cat --ar wide", "--ar takes a ratio such as 2:3, not 'wide'."),
    ('"a cat', "I could not read that command (No closing quotation)."),
    ("x --sampler", "--sampler needs a value."),
    ("x --power=big", "--power takes a number, not 'big'."),
    ("x --upscalemethod", "--upscalemethod needs a value."),
    ("x --image somewhere", "--image takes a stored picture such as rifttami.png, or an image link."),
    ("x --imagedenoise half", "--imagedenoise takes a number, not 'half'."),
    ("x --adapt a.png --adapt b.png --adapt c.png --adapt d.png --adapt e.png", "Use at most 4 --adapt pictures."),
    ("x --adapt5 e.png", "Unknown option --adapt5."),
    ("x --adaptweight3 0.5 --adapt a.png", "--adaptweight3 has no --adapt3 picture to weigh."),
    ("x --adaptface somewhere", "--adaptface takes a stored picture such as rifttami.png, or an image link."),
    ("x --adaptface me.png --adaptfaceweight strong", "--adaptfaceweight takes a number, not 'strong'."),
]
# The same for /upscale.
BAD_UPSCALE = [
    ("a-1.png b-1.png", "Upscale one picture at a time."),
    ("a-1.png --power 1.5", "Write the factor after --power with an equals sign: --power=1.5."),
    ("a-1.png --power=big", "--power takes a number, not 'big'."),
    ("a-1.png --upscalemethod", "--upscalemethod needs a value."),
    ("a-1.png --lora rifttami", "Unknown option --lora."),
    ("--power=1.5", "Which picture? Give its name, such as 3f2a9c1d-1.png."),
    ("a/b.png", "'a/b.png' is not the name of a picture, such as 3f2a9c1d-1.png."),
]


@pytest.mark.parametrize(("text", "problem"), BAD_SERVE)
def test_serve_mistakes_are_named(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_serve(text)
    assert str(caught.value) == problem


def test_upscale_takes_a_picture_a_factor_and_a_method_in_any_order() -> None:
    spec = parse_upscale("--upscalemethod=lanczos 3F2A9C1D-2.png --power=1.5")
    assert (spec.upscale_image, spec.power, spec.power_scale, spec.upscale_method) == (
        "3f2a9c1d-2.png",
        True,
        pytest.approx(1.5),
        "lanczos",
    )
    plain = parse_upscale("3f2a9c1d-1")  # the .png may be left out, as for /info
    assert plain.upscale_image == "3f2a9c1d-1.png" and plain.power and not plain.HasField("power_scale")
    assert not plain.upscale_method and not plain.prompt and not plain.loras
    assert parse_upscale("3f2a9c1d-1.png --power --upscalemethod latent").upscale_method == "latent"
    # The picture a command replies to stands in for a missing name, never for one given.
    assert parse_upscale("--power=2", replied_to="3f2a9c1d-2.png").upscale_image == "3f2a9c1d-2.png"
    assert parse_upscale("abc-1.png", replied_to="3f2a9c1d-2.png").upscale_image == "abc-1.png"


@pytest.mark.parametrize(
    ("text", "problem"), [("", "Which picture? Give its name, such as 3f2a9c1d-1.png."), *BAD_UPSCALE]
)
def test_upscale_mistakes_are_named(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_upscale(text)
    assert str(caught.value) == problem
