"""The command grammar every bot and the CLI share, and how it refuses odd arguments."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.commands import LORA_ACTIONS, UsageError, parse_distill, parse_image_name, parse_lora, parse_serve


def test_serve_reads_the_prompt_around_the_options() -> None:
    spec = parse_serve(
        '"a man" on mars --lora RiftTami:0.7 --lora kourvair --n=2 --seed 5 --ar 2:3 --neg "ugly, blurry"'
    )
    assert spec.prompt == "a man on mars"
    loras = [(use.name, use.weight if use.HasField("weight") else None) for use in spec.loras]
    assert loras == [("rifttami", pytest.approx(0.7)), ("kourvair", None)]
    assert (spec.count, spec.seed, spec.aspect_ratio, spec.negative_prompt) == (2, 5, "2:3", "ugly, blurry")


def test_serve_spec_leaves_unset_options_to_the_daemon() -> None:
    spec = parse_serve("hello --lora abc --cfg 6.5 --adapt abc.png --adaptweight 0.3")
    assert not spec.HasField("seed") and spec.cfg == pytest.approx(6.5)
    assert [(use.name, use.HasField("weight")) for use in spec.loras] == [("abc", False)]
    assert spec.WhichOneof("adapt") == "adapt_image" and spec.adapt_image == "abc.png"
    assert spec.adapt_weight == pytest.approx(0.3)
    url = parse_serve("x --adapt https://example.org/me.jpg")
    assert url.WhichOneof("adapt") == "adapt_url"
    assert isinstance(url, pb.GenerateSpec)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "Write what to generate"),
        ("x --bogus 1", "Unknown option --bogus"),
        ("x --seed", "needs a value"),
        ("x --seed one", "whole number"),
        ("x --cfg high", "a number"),
        ("x --lora ab:b:c", "weight takes a number"),
        ("x --lora 'no such'", "not a LoRA name"),
        ("x --ar 2x3", "ratio such as 2:3"),
        ("x --adapt somewhere", "stored picture"),
        ("x --n 0", "1 to 4"),
        ("x --n 99999999999", "1 to 4"),
        ("x --seed -1", "whole number from 0"),
        ("x --seed 99999999999999999999999", "whole number from 0"),
        ("x --steps 0", "positive number"),
        ('x "unclosed', "could not read"),
    ],
)
def test_serve_mistakes_are_named(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse_serve(text)


def test_lora_shows_or_takes_one_action() -> None:
    assert parse_lora("RiftTami").name == "rifttami" and parse_lora("rifttami").action == ""
    for option in LORA_ACTIONS:
        assert parse_lora(f"rifttami.safetensors {option}").action == option.removeprefix("--")
    described = parse_lora('rifttami --description "my best friend" again')
    assert (described.action, described.description) == ("description", "my best friend again")
    assert parse_lora("rifttami --description").description == ""


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "Name the LoRA"),
        ("--delete", "Name the LoRA first"),
        ("rifttami --delete --download", "One option at a time"),
        ("rifttami --explode", "Unknown option"),
        ("rifttami please", "did not understand"),
    ],
)
def test_lora_mistakes_are_named(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse_lora(text)


ODD = {
    "5,000 characters": "a" * 5000,
    "control characters": "abc\x00def\x1b[31m",
    "another script": "名前 ✨ имя",
    "right-to-left and bidi": "\u202eabc\u202c",
    "markup": "<b>x</b> <!channel> *b*",
}


@pytest.mark.parametrize("odd", ODD.values(), ids=ODD.keys())
@pytest.mark.parametrize(
    "parse",
    [
        lambda text: parse_distill(text, need_url=True),
        lambda text: parse_lora(text),
        lambda text: parse_lora(f"rifttami {text}"),
        parse_image_name,
    ],
    ids=["distill", "lora", "lora-option", "info"],
)
def test_odd_arguments_are_usage_errors_that_stay_short(parse: Callable[[str], object], odd: str) -> None:
    with pytest.raises(UsageError) as error:
        parse(odd)
    assert len(str(error.value)) < 200 and "\x00" not in str(error.value)


@pytest.mark.parametrize("parse", [parse_distill, parse_lora, parse_serve, parse_image_name])
def test_empty_or_too_long_or_controlled_commands_are_refused_by_every_parser(
    parse: Callable[..., object],
) -> None:
    args = (True,) if parse is parse_distill else ()
    for text in ("a" * 5000, "x\x07y"):
        with pytest.raises(UsageError, match=r"too long|control characters"):
            parse(text, *args)
    with pytest.raises(UsageError):
        parse("", *args)


def test_prompts_in_other_scripts_and_long_descriptions() -> None:
    assert parse_serve("портрет 肖像 --lora rifttami").prompt == "портрет 肖像"
    assert parse_serve("line one\nline two").prompt == "line one line two"  # newlines are fine
    assert parse_lora("rifttami --description 説明 ✨").description == "説明 ✨"
    with pytest.raises(UsageError, match="limited to 500"):
        parse_lora("rifttami --description " + "d" * 501)
    with pytest.raises(UsageError, match="too long for a command"):
        parse_distill("https://example.org/" + "a" * 2100, need_url=True)


def test_info_names_a_picture_or_a_loras_source_picture() -> None:
    assert parse_image_name("3F2A9C1D-1.PNG") == "3f2a9c1d-1.png"
    assert parse_image_name("rifttami") == "rifttami.png"
    for wrong in ("a b", "../etc/passwd", "名前.png", "x" * 120):
        with pytest.raises(UsageError):
            parse_image_name(wrong)
