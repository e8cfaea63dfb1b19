"""LoRA names: two rare tokens of the loaded tokenizer that split back into exactly those two tokens."""

from __future__ import annotations

import random

import pytest

from daemon.errors import Exhausted
from daemon.pipeline.name import NameMinter
from tests.clip_vocab import build_tokenizer

COMMON = ["photo</w>", "the</w>", "man</w>", "woman</w>", "port", "rait</w>", "smil", "ing</w>"]
MIDDLE = [
    "hair</w>",
    "blue</w>",
    "eyes</w>",
    "wear",
    "shirt</w>",
    "with</w>",
    "light</w>",
    "back",
    "gold",
    "en</w>",
]
RARE_PREFIXES = ["rift", "luna", "vek", "orbo", "quil"]
RARE_SUFFIXES = ["tami</w>", "zor</w>", "nuvel</w>", "kesh</w>", "driv</w>"]


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    # Common words are merged first (low ids), rare ones last (high ids), as in CLIP's merge order.
    return build_tokenizer(COMMON + MIDDLE + RARE_PREFIXES + RARE_SUFFIXES)


def test_candidates_are_rare_alphabetic_tokens_of_both_kinds(tokenizer) -> None:  # type: ignore[no-untyped-def]
    minter = NameMinter(tokenizer, random.Random(0))
    common_words = [w.removesuffix("</w>") for w in COMMON]
    # Nothing merged early (common) is a candidate; everything merged last (rare) is.
    candidates = [piece.removesuffix("</w>") for piece in minter.prefixes + minter.suffixes]
    assert not any(word.startswith(piece) for word in common_words for piece in candidates)
    assert set(RARE_PREFIXES) <= set(minter.prefixes)
    assert set(RARE_SUFFIXES) <= set(minter.suffixes)


def test_every_name_tokenizes_back_into_its_two_tokens(tokenizer) -> None:  # type: ignore[no-untyped-def]
    minter = NameMinter(tokenizer, random.Random(1))
    seen = set()
    for _ in range(40):
        found = minter.mint(lambda name: False)
        prefix, suffix = found.tokens
        assert found.name == prefix + suffix.removesuffix("</w>")
        assert tokenizer.tokenize(found.name) == [prefix, suffix]
        seen.add(found.name)
    assert len(seen) > 5  # random, not a fixed pair


def test_taken_names_are_skipped_and_exhaustion_is_an_error(tokenizer) -> None:  # type: ignore[no-untyped-def]
    minter = NameMinter(tokenizer, random.Random(2))
    taken: set[str] = set()
    for _ in range(10):
        taken.add(minter.mint(taken.__contains__).name)
    assert len(taken) == 10
    with pytest.raises(Exhausted):
        minter.mint(lambda name: True)


def test_a_tokenizer_without_rare_alphabetic_tokens_is_refused() -> None:
    with pytest.raises(ValueError):
        NameMinter(build_tokenizer(["12</w>", "34</w>"]))
