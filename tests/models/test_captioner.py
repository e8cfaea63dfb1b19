"""Captioning: the demo VLM through the generic path, and the cleaning every caption goes through."""

from __future__ import annotations

import pytest
from PIL import Image

from daemon.jobs.model import SubjectClass
from daemon.models.captioner import MAX_CAPTION_CHARS, FixedCaptioner, clean_caption
from daemon.models.resident import Resident
from daemon.pipeline.classify import ANSWER_TOKENS, QUESTION, CaptionClassifier, read_words

pytest_plugins = ["tests.fixtures_models"]


def test_demo_vlm_captions_in_one_printable_line(resident: Resident, portrait: Image.Image) -> None:
    caption = resident.captioner.caption(portrait)
    assert caption and caption.isprintable() and "\n" not in caption
    assert caption == caption.strip() and len(caption) <= MAX_CAPTION_CHARS + 1
    # Greedy decoding: the same portrait always gets the same caption.
    assert resident.captioner.caption(portrait) == caption
    assert resident.captioner.name.endswith("vlm-tiny")


def test_the_classifier_fallback_question_goes_through_the_same_model(
    resident: Resident, portrait: Image.Image
) -> None:
    # The random-weight demo VLM answers nonsense, but through the real path: short, one line, repeatable.
    answer = resident.captioner.ask(portrait, QUESTION, ANSWER_TOKENS)  # type: ignore[attr-defined]
    assert answer.isprintable() and "\n" not in answer
    assert answer == resident.captioner.ask(portrait, QUESTION, ANSWER_TOKENS)  # type: ignore[attr-defined]
    assert len(resident.captioner.processor.tokenizer(answer).input_ids) <= ANSWER_TOKENS + 2  # type: ignore[attr-defined]
    expected = read_words(answer) or SubjectClass.PERSON
    assert CaptionClassifier(ask=resident.captioner.ask).classify(portrait, "") is expected  # type: ignore[attr-defined]


def test_caption_accepts_any_pil_mode(resident: Resident) -> None:
    assert resident.captioner.caption(Image.new("L", (40, 90), 128))


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  A man with a beard.  ", "A man with a beard."),
        ("A woman smiling.\nI hope this helps!", "A woman smiling."),
        ("A\tphoto\x00 of\u200b a\ufffd person", "A photo of a person"),
        ("\ue000private use", "private use"),
        ("", ""),
        ("\n\nleading blank lines", "leading blank lines"),
    ],
)
def test_clean_caption(raw: str, clean: str) -> None:
    assert clean_caption(raw) == clean


def test_clean_caption_cuts_long_text_at_a_word() -> None:
    text = "word " * 100
    cleaned = clean_caption(text, limit=23)
    assert cleaned == "word word word word…"


def test_fixed_captioner_is_a_captioner() -> None:
    fake = FixedCaptioner("a photo of a woman")
    assert fake.caption(Image.new("RGB", (8, 8))) == "a photo of a woman" and fake.calls == 1
