"""Decide man / woman / person for the regularization set and the instance prompt.

The first rule reads the caption: the captioner already looked at the face, and a word list is easy to audit
and to override (the user may name the class in the request, which skips this stage). Rules, applied to the
lowercased caption split into words (runs of letters, so "woman" never matches "man" and "his" never matches
inside "this"):

* any WOMAN word (woman, girl, lady, female, she, her, ...) and no MAN word  -> WOMAN
* any MAN word (man, boy, guy, male, he, his, bearded, ...) and no WOMAN word -> MAN
* words of both kinds (a couple, "a man and his daughter")                    -> PERSON
* words of neither kind ("a smiling person in a red coat")                    -> ask the image (below)

The fallback looks at the pixels with the same resident VLM: asked one short question ("a man or a woman?"),
its answer goes through the same word lists, and anything but a clear one-sided answer is PERSON. No second
model is loaded for it. PERSON is the safe answer: its regularization set preserves the prior of people in
general.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

from PIL import Image

from daemon.jobs.model import SubjectClass

WOMAN_WORDS = frozenset(
    """
    woman women girl girls lady ladies female feminine she her hers herself gal actress businesswoman
    mother mom daughter wife bride sister grandmother aunt queen princess policewoman spokeswoman
    """.split()  # noqa: SIM905 - word lists read better as prose
)
MAN_WORDS = frozenset(
    """
    man men boy boys guy guys male masculine he him his himself gentleman gentlemen actor businessman
    father dad son husband groom brother grandfather uncle king prince policeman spokesman bearded beard
    mustache moustache mustached moustached
    """.split()  # noqa: SIM905
)

_WORDS = re.compile(r"[a-z]+")
# The fallback's question; a one-word answer is all it needs, so generation stops after a few tokens.
QUESTION = "Is the person in this photo a man or a woman? Answer with one word: man, woman or unsure."
ANSWER_TOKENS = 4

# ``ask(image, question, max_new_tokens)``: a VLM's answer about the image (VlmCaptioner.ask).
Ask = Callable[[Image.Image, str, int], str]


class Classifier(Protocol):
    """Picks the subject class of a portrait."""

    def classify(self, image: Image.Image, caption: str) -> SubjectClass:
        """The class of the person in ``image`` as described by ``caption``."""
        ...


def words_of(caption: str) -> set[str]:
    """The caption's words, lowercased; apostrophes split, so "man's" yields "man" and "s"."""
    return set(_WORDS.findall(caption.lower()))


def read_words(text: str) -> SubjectClass | None:
    """WOMAN or MAN when only one side's words occur, PERSON when both do, None when neither does."""
    words = words_of(text)
    woman = not words.isdisjoint(WOMAN_WORDS)
    man = not words.isdisjoint(MAN_WORDS)
    if woman and not man:
        return SubjectClass.WOMAN
    if man and not woman:
        return SubjectClass.MAN
    return SubjectClass.PERSON if woman and man else None


class CaptionClassifier:
    """Keyword rules on the caption, then, when it names nobody, the VLM asked about the image itself."""

    def __init__(self, ask: Ask | None = None) -> None:
        self.ask = ask

    def classify(self, image: Image.Image, caption: str) -> SubjectClass:
        """The caption's class when it has one; otherwise the image's, by the same rules; else PERSON."""
        from_caption = read_words(caption)
        if from_caption is not None:
            return from_caption
        if self.ask is None:
            return SubjectClass.PERSON
        answer = self.ask(image, QUESTION, ANSWER_TOKENS)
        return read_words(answer) or SubjectClass.PERSON


class FixedClassifier:
    """A fake that always answers ``subject_class``."""

    def __init__(self, subject_class: SubjectClass) -> None:
        self.subject_class = subject_class

    def classify(self, image: Image.Image, caption: str) -> SubjectClass:
        """Return the fixed class."""
        return self.subject_class
