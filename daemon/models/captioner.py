"""Caption the portrait with a vision-language model: one sentence the classifier and the user both read.

``VlmCaptioner`` drives any transformers image-text-to-text model through the generic Auto classes and the
model's own chat template (SmolVLM, Qwen2-VL, LLaVA, the tiny demo model), so swapping models is a config
change. ``FixedCaptioner`` is the fake for tests.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Any, Protocol

import torch
from PIL import Image

logger = logging.getLogger(__name__)

PROMPT = (
    "Describe this portrait in one sentence: the person's apparent gender and age, their hair, facial "
    "expression and clothing, the style or medium of the image, and the background."
)
MAX_NEW_TOKENS = 60
# Long enough for one descriptive sentence, short enough for a chat message and a LoRA metadata field.
MAX_CAPTION_CHARS = 300

_SPACES = re.compile(r"\s+")


class Captioner(Protocol):
    """Turns an image into one line of text."""

    name: str

    def caption(self, image: Image.Image) -> str:
        """One printable sentence describing ``image``."""
        ...


def clean_caption(text: str, limit: int = MAX_CAPTION_CHARS) -> str:
    """One printable line: control and format characters dropped, whitespace collapsed, cut at a word.

    Only the first line is kept, since instruct models sometimes add a second paragraph of commentary.
    """
    text = text.strip().split("\n", 1)[0] if text.strip() else ""
    kept = "".join(ch if ch.isprintable() else " " for ch in text)
    # Private-use and unassigned code points print as boxes; random or broken UTF-8 output is full of them.
    # U+FFFD stands for bytes that were not UTF-8, which byte-level tokenizers produce from odd token runs.
    kept = "".join(ch for ch in kept if unicodedata.category(ch) not in ("Co", "Cn", "Cs") and ch != "\ufffd")
    kept = _SPACES.sub(" ", kept).strip()
    if len(kept) > limit:
        cut = kept[:limit].rsplit(" ", 1)[0] or kept[:limit]
        kept = cut.rstrip(" ,;:") + "…"
    return kept


class VlmCaptioner:
    """Captions with a transformers VLM (``AutoProcessor`` + ``AutoModelForImageTextToText``), greedily."""

    def __init__(
        self,
        model: str,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        prompt: str = PROMPT,
        max_new_tokens: int = MAX_NEW_TOKENS,
    ) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.name = model
        self.device = device or torch.device("cpu")
        self.dtype = dtype
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.processor: Any = AutoProcessor.from_pretrained(model)  # type: ignore[no-untyped-call]
        loaded: Any = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype)
        self.model: Any = loaded.to(self.device).eval().requires_grad_(False)

    def caption(self, image: Image.Image) -> str:
        """Ask the model for one sentence about the portrait and return it cleaned to one printable line."""
        return self.ask(image, self.prompt, self.max_new_tokens)

    @torch.no_grad()
    def ask(self, image: Image.Image, question: str, max_new_tokens: int) -> str:
        """The model's greedy answer to ``question`` about ``image``, cleaned to one printable line."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(images=[image.convert("RGB")], text=text, return_tensors="pt")
        # Floating tensors (pixel values) follow the model dtype; ids and masks stay integer.
        inputs = inputs.to(self.device, dtype=self.dtype)
        generated = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new_tokens = generated[:, inputs["input_ids"].shape[1] :]
        decoded: str = self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0]
        answer = clean_caption(decoded)
        logger.debug("answer %r (raw %r) to %r", answer, decoded, question[:40])
        return answer


class FixedCaptioner:
    """A fake that always answers ``text``; counts its calls."""

    def __init__(self, text: str, name: str = "fixed") -> None:
        self.name = name
        self.text = text
        self.calls = 0

    def caption(self, image: Image.Image) -> str:
        """Return the fixed caption."""
        self.calls += 1
        return self.text
