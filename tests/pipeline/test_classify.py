"""The caption keyword rules, as a table."""

from __future__ import annotations

import pytest
from PIL import Image

from daemon.jobs.model import SubjectClass
from daemon.pipeline.classify import CaptionClassifier, FixedClassifier, words_of

MAN, WOMAN, PERSON = SubjectClass.MAN, SubjectClass.WOMAN, SubjectClass.PERSON


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("A photo of a man with short brown hair, smiling.", MAN),
        ("A young woman with long blond hair in an office.", WOMAN),
        ("Portrait of a bearded guy wearing glasses.", MAN),
        ("A girl laughing in a park.", WOMAN),
        ("An elderly lady in a red dress.", WOMAN),
        ("She is wearing a hoodie.", WOMAN),
        ("He looks at the camera.", MAN),
        ("An astronaut in a spacesuit in front of a flag.", PERSON),
        ("A person with curly hair.", PERSON),
        ("A man and a woman on a street.", PERSON),
        ("A man and his daughter.", PERSON),
        ("WOMAN, FORTIES, SERIOUS", WOMAN),
        ("A MALE model.", MAN),
        ("A woman's portrait.", WOMAN),
        # Word boundaries: none of these contain a class word.
        ("A human with a mannequin; the heroine is there, this is history.", PERSON),
        ("Manhattan skyline behind a shepherd.", PERSON),
        ("", PERSON),
    ],
)
def test_caption_rules(caption: str, expected: SubjectClass) -> None:
    assert CaptionClassifier().classify(Image.new("RGB", (8, 8)), caption) is expected


def test_words_split_on_anything_but_letters() -> None:
    assert words_of("Middle-aged man's, SMILING!") == {"middle", "aged", "man", "s", "smiling"}


def test_fixed_classifier() -> None:
    assert FixedClassifier(WOMAN).classify(Image.new("RGB", (8, 8)), "a man") is WOMAN


class ScriptedVlm:
    """Answers the fallback's question with a fixed text and records what it was asked."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.questions: list[tuple[str, int]] = []

    def __call__(self, image: Image.Image, question: str, max_new_tokens: int) -> str:
        self.questions.append((question, max_new_tokens))
        return self.answer


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Woman.", WOMAN),
        ("man", MAN),
        ("A MAN", MAN),
        ("unsure", PERSON),
        ("a man or a woman", PERSON),
        ("", PERSON),
    ],
)
def test_a_caption_naming_nobody_asks_the_image(answer: str, expected: SubjectClass) -> None:
    vlm = ScriptedVlm(answer)
    assert (
        CaptionClassifier(ask=vlm).classify(Image.new("RGB", (8, 8)), "An astronaut in front of a flag.")
        is expected
    )
    [(question, tokens)] = vlm.questions
    assert "man or a woman" in question and tokens <= 8


@pytest.mark.parametrize("caption", ["A woman in a suit.", "A bearded man.", "A man and a woman on a street."])
def test_a_caption_that_decides_is_not_second_guessed(caption: str) -> None:
    vlm = ScriptedVlm("man")
    CaptionClassifier(ask=vlm).classify(Image.new("RGB", (8, 8)), caption)
    assert vlm.questions == []
