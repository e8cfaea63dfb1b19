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
