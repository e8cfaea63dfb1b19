"""Prompt weights in AUTOMATIC1111's syntax, turned into text-encoder embeddings by compel.

A1111's users write ``(word:1.3)`` for an explicit weight, ``(word)`` for x1.1 and ``[word]`` for /1.1, nested
brackets multiplying, ``\\(`` for a literal bracket. compel (the maintained prompt-weighting library diffusers
documents) has its own syntax (``(word)1.3``, ``word++``) and no A1111 reader, so this module only splits an
A1111 prompt into (text, weight) fragments and hands them to compel as its own ``Fragment`` objects; the
embedding arithmetic (up-weighting, masking for down-weights) is compel's. A prompt without any weight gives
exactly the embedding the pipeline computes for the plain text.

Words inside weights stay words: ``(rifttami:1.2) man`` still names the LoRA ``rifttami``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from daemon.errors import BadInput

# A1111's multipliers for one pair of round or square brackets.
ROUND = 1.1
SQUARE = 1 / 1.1
# The weights A1111 users write stay in this range; beyond it the embedding breaks down into noise.
WEIGHT_RANGE = (0.0, 3.0)

# One token of the syntax: an escaped bracket or backslash, an opening bracket, ":<number>)" closing an explicit
# weight, a closing bracket, or a run of plain text (a lone ":" or "\" is plain text too).
_TOKEN = re.compile(
    r"(?P<escaped>\\[\\()\[\]])"
    r"|(?P<open>[(\[])"
    r"|:\s*(?P<weight>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\)"
    r"|(?P<close>[)\]])"
    r"|(?P<text>[^\\()\[\]:]+|[:\\])"
)


def fragments(prompt: str) -> list[tuple[str, float]]:
    """The prompt as (text, weight) pieces in order, brackets and weights removed, equal neighbours merged.

    An unmatched closing bracket is plain text; a bracket left open weights the rest of the prompt (as A1111).
    """
    pieces: list[list[Any]] = []  # [text, weight], weights multiplied in as brackets close
    opened: list[tuple[str, int]] = []  # (bracket, index of the first piece inside it)

    def close(bracket: str, weight: float) -> None:
        _, start = opened.pop()
        for piece in pieces[start:]:
            piece[1] *= weight

    for match in _TOKEN.finditer(prompt):
        token = match.group(0)
        if match.group("escaped"):
            pieces.append([token[1], 1.0])
        elif match.group("open"):
            opened.append((token, len(pieces)))
        elif match.group("weight") is not None:
            if opened and opened[-1][0] == "(":
                close("(", _weight(match.group("weight")))
            else:
                pieces.append([token, 1.0])
        elif match.group("close"):
            want = "(" if token == ")" else "["
            if opened and opened[-1][0] == want:
                close(want, ROUND if want == "(" else SQUARE)
            else:
                pieces.append([token, 1.0])
        else:
            pieces.append([token, 1.0])
    while opened:
        close(opened[-1][0], ROUND if opened[-1][0] == "(" else SQUARE)
    merged: list[tuple[str, float]] = []
    for text, weight in pieces:
        if merged and abs(merged[-1][1] - weight) < 1e-9:
            merged[-1] = (merged[-1][0] + text, weight)
        else:
            merged.append((text, weight))
    return [(text, weight) for text, weight in merged if text]


def _weight(text: str) -> float:
    weight = float(text)
    if not WEIGHT_RANGE[0] <= weight <= WEIGHT_RANGE[1]:
        raise BadInput(
            f"A prompt weight such as (word:{text}) must be between {WEIGHT_RANGE[0]:g} and {WEIGHT_RANGE[1]:g}."
        )
    return weight


def plain_text(prompt: str) -> str:
    """The prompt's words without the weight syntax, as the text encoder reads them."""
    return "".join(text for text, _ in fragments(prompt))


def check(prompt: str) -> None:
    """Raise BadInput when a weight in ``prompt`` is out of range; used when a request is accepted."""
    fragments(prompt)


@dataclass
class PromptEncoder:
    """compel over the resident pipeline's tokenizer and text encoder (their LoRA layers included)."""

    pipeline: Any  # the resident StableDiffusionPipeline
    dtype: torch.dtype

    def __post_init__(self) -> None:
        from compel import Compel

        self._compel = Compel(
            tokenizer=self.pipeline.tokenizer,
            text_encoder=self.pipeline.text_encoder,
            dtype_for_device_getter=lambda _device: self.dtype,
            truncate_long_prompts=True,  # 77 tokens, as the pipeline itself encodes
        )

    @torch.no_grad()
    def embeds(self, prompt: str) -> torch.Tensor:
        """1 x 77 x dim hidden states of the weighted prompt (``prompt_embeds``, ``negative_prompt_embeds``)."""
        from compel.prompt_parser import FlattenedPrompt, Fragment

        parts = fragments(prompt) or [("", 1.0)]
        flat = FlattenedPrompt([Fragment(text, weight) for text, weight in parts])
        (conditioning, _tokens), _options = self._compel.build_conditioning_tensor_for_prompt_object(flat)
        tensor: torch.Tensor = conditioning
        return tensor.to(self.dtype)
