"""The chat commands' grammar, shared by both bots.

``/distill <image url> [--class man|woman|person] [--noflip]``
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

CLASS_CHOICES = ("man", "woman", "person")

DISTILL_USAGE = (
    "Usage: /distill <image url> [--class man|woman|person] [--noflip]\n"
    "Or send a photo with the caption /distill (same options), or reply /distill to a photo.\n"
    "--class says who is in the picture when the guess would be wrong; "
    "--noflip turns off mirror augmentation (for off-centre or asymmetric subjects)."
)


class UsageError(Exception):
    """The command's words are off; ``str(error)`` says what, and the bot adds the usage text."""


@dataclass(frozen=True)
class DistillArgs:
    url: str = ""
    subject_class: str = ""
    no_flip: bool = False


def parse_distill(text: str, need_url: bool) -> DistillArgs:
    """Parse the words after /distill; ``need_url`` is False when the image came with the message."""
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise UsageError(f"I could not read that command ({error}).") from None
    url = ""
    subject_class = ""
    no_flip = False
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--noflip":
            no_flip = True
        elif word == "--class" or word.startswith("--class="):
            if "=" in word:
                value = word.split("=", 1)[1]
            else:
                index += 1
                value = words[index] if index < len(words) else ""
            if value.lower() not in CLASS_CHOICES:
                raise UsageError(f"--class takes man, woman or person, not {value or 'nothing'!r}.")
            subject_class = value.lower()
        elif word.startswith("--"):
            raise UsageError(f"Unknown option {word}.")
        elif url:
            raise UsageError("Send one image link at a time.")
        else:
            url = word
        index += 1
    if url and not url.lower().startswith(("http://", "https://")):
        raise UsageError("The image link must start with http:// or https://.")
    if need_url and not url:
        raise UsageError("Send an image link, or a photo with the caption /distill.")
    if not need_url and url:
        raise UsageError("Send either a photo or a link, not both.")
    return DistillArgs(url=url, subject_class=subject_class, no_flip=no_flip)
