"""/serve's richer options in the shared grammar: samplers, the hires pass, image to image, several adapts."""

from __future__ import annotations

import pytest

from frontends.commands import UsageError, parse_serve


def test_sampler_goes_to_the_daemon_as_written() -> None:
    assert parse_serve('a man --sampler "Euler a"').sampler == "Euler a"
    assert parse_serve("a man --sampler=ddim").sampler == "ddim"
    assert parse_serve("a man").sampler == ""


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("x --sampler", "--sampler needs a value"),
    ],
)
def test_mistakes_in_the_new_options_are_named(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse_serve(text)
