"""Give every LoRA a name made of two rare tokens of the base model's CLIP tokenizer, like "rifttami".

The name doubles as the word that calls up the subject in a prompt, so it must mean nothing to the text
encoder yet: two rare pieces, each a single token, that together tokenize as exactly those two tokens.

The rarity rule. CLIP's byte-pair vocabulary is numbered in merge order: the 512 single characters (plain and
word-final) come first, then every merge in the order it was learned, most frequent pair first. A high id is
therefore a rare piece of text. A candidate is a purely alphabetic lowercase piece of 3-6 letters whose id lies
in the rarest half of the merges; prefixes are word-internal pieces (no ``</w>``), suffixes are word-final
pieces (``</w>``). A name is a prefix followed by a suffix such that the tokenizer splits the joined word back
into exactly ``[prefix, suffix</w>]`` - checked against the loaded tokenizer, never assumed. Names are unique
across the store and never reused, because the store keeps every name it ever gave.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from daemon.errors import Exhausted

WORD_END = "</w>"
_ALPHA = re.compile(r"[a-z]{3,6}")
# The rarest half of the merges: for SD 1.5's 49,408-token vocabulary that is ids above ~24,900.
RARE_FRACTION = 0.5
MAX_TRIES = 200


class Tokenizer(Protocol):
    def get_vocab(self) -> dict[str, int]: ...

    def tokenize(self, text: str) -> list[str]: ...


@dataclass(frozen=True)
class LoraName:
    name: str
    tokens: tuple[str, str]  # as the tokenizer writes them, e.g. ("rift", "tami</w>")


class NameMinter:
    """Mints names from a tokenizer's vocabulary; build once per loaded tokenizer."""

    def __init__(self, tokenizer: Tokenizer, rng: random.Random | None = None) -> None:
        self._tokenizer = tokenizer
        self._rng = rng or random.SystemRandom()
        vocab = tokenizer.get_vocab()
        # Everything below the first merge is the byte alphabet (256 plain + 256 word-final symbols) and the
        # special tokens at the very end; only merges carry frequency information.
        first_merge = 512
        specials = sum(1 for token in vocab if token.startswith("<|"))
        last_merge = len(vocab) - specials
        threshold = first_merge + int((last_merge - first_merge) * (1.0 - RARE_FRACTION))
        self.prefixes: list[str] = []
        self.suffixes: list[str] = []
        for token, token_id in sorted(vocab.items(), key=lambda item: item[1]):
            if token_id < threshold or token_id >= last_merge:
                continue
            if token.endswith(WORD_END):
                if _ALPHA.fullmatch(token[: -len(WORD_END)]):
                    self.suffixes.append(token)
            elif _ALPHA.fullmatch(token):
                self.prefixes.append(token)
        if not self.prefixes or not self.suffixes:
            raise ValueError("the tokenizer has no rare alphabetic tokens to make LoRA names from")

    def candidate(self) -> LoraName | None:
        """One random prefix+suffix pair, or None when the tokenizer does not split it back into the two."""
        prefix = self._rng.choice(self.prefixes)
        suffix = self._rng.choice(self.suffixes)
        name = prefix + suffix[: -len(WORD_END)]
        if self._tokenizer.tokenize(name) != [prefix, suffix]:
            return None
        return LoraName(name=name, tokens=(prefix, suffix))

    def mint(self, taken: Callable[[str], bool]) -> LoraName:
        """A fresh name for which ``taken(name)`` is False."""
        for _ in range(MAX_TRIES):
            found = self.candidate()
            if found is not None and not taken(found.name):
                return found
        raise Exhausted("The distillery could not find a free name; ask the operator to check its tokenizer.")
