"""A1111 prompt weights: the syntax split into fragments, and compel's embeddings on the demo text encoder."""

from __future__ import annotations

import pytest
import torch

from daemon.errors import BadInput
from daemon.models.resident import Resident
from daemon.pipeline.prompt_weights import PromptEncoder, fragments, plain_text
from daemon.pipeline.serve_request import with_activation_words
from tests.records import lora_record

pytest_plugins = ["tests.fixtures_models"]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a photo of a man", [("a photo of a man", 1.0)]),
        ("a (red:1.3) hat", [("a ", 1.0), ("red", 1.3), (" hat", 1.0)]),
        ("a (red) hat", [("a ", 1.0), ("red", 1.1), (" hat", 1.0)]),
        ("a [red] hat", [("a ", 1.0), ("red", 1 / 1.1), (" hat", 1.0)]),
        ("((red))", [("red", 1.1 * 1.1)]),
        ("(a (red:2) hat:0.5)", [("a ", 0.5), ("red", 1.0), (" hat", 0.5)]),
        ("(red:1.0) hat", [("red hat", 1.0)]),
        (r"a \(literal\) bracket", [("a (literal) bracket", 1.0)]),
        ("photo: outdoors", [("photo: outdoors", 1.0)]),
        ("a hat)", [("a hat)", 1.0)]),
        ("a (red hat", [("a ", 1.0), ("red hat", 1.1)]),
    ],
)
def test_a1111_syntax_becomes_weighted_fragments(prompt: str, expected: list[tuple[str, float]]) -> None:
    got = fragments(prompt)
    assert [text for text, _ in got] == [text for text, _ in expected]
    assert [weight for _, weight in got] == pytest.approx([weight for _, weight in expected])


def test_weights_out_of_range_are_refused_with_a_sentence() -> None:
    with pytest.raises(BadInput, match="between 0 and 3"):
        fragments("(red:7)")


def test_the_activation_word_inside_a_weight_still_names_the_lora() -> None:
    prompt = "(rifttami:1.3) as an astronaut"
    assert with_activation_words(prompt, [lora_record("rifttami")]) == prompt
    assert plain_text(prompt) == "rifttami as an astronaut"


@pytest.fixture(scope="module")
def encoder(resident: Resident) -> PromptEncoder:
    return PromptEncoder(resident.pipeline, resident.dtype)


def test_unit_weight_is_the_plain_prompt_and_the_pipelines_own_encoding(
    encoder: PromptEncoder, resident: Resident
) -> None:
    plain = encoder.embeds("a red hat")
    assert torch.equal(encoder.embeds("a (red:1.0) hat"), plain)
    assert torch.allclose(plain, resident.encode_prompts(["a red hat"]), atol=1e-5)


def test_weighted_prompts_change_the_embedding(encoder: PromptEncoder) -> None:
    plain = encoder.embeds("a red hat")
    up = encoder.embeds("a (red:1.5) hat")
    down = encoder.embeds("a [red] hat")
    assert not torch.allclose(up, plain)
    assert not torch.allclose(down, plain)
    assert not torch.allclose(up, down)
    # Deterministic: the same weighted prompt encodes the same way again.
    assert torch.equal(encoder.embeds("a (red:1.5) hat"), up)
