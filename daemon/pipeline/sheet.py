"""The likeness preview sheet: the kept snapshot's test pictures in a grid, each labelled with its own score.

A new LoRA's chat summary says how much its test pictures look like the photo ("Likeness 78/100: 7 of 8 test
pictures look like the photo"); the sheet shows them, so a user sees at a glance what the number means and
which settings the LoRA handles well. Each picture carries the 0-100 display score of its own face distance
(``likeness.display_score``), "no face" where dlib found none, or "copy" where the picture reproduces the photo
and did not count. Labels sit in a band under each picture, never over the face.

Pure PIL on the CPU: the pictures are already drawn by the likeness stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from daemon.pipeline.likeness import THRESHOLD, SampleScore, display_score

# At most this many pictures in a row: 8 test pictures make two rows of four, a shape every chat shows whole.
COLUMNS = 4
# Each picture is shown at its own size within these bounds: the demo's 64 px pictures are enlarged (without
# smoothing, so they stay honest about their resolution) and 512 px ones halved, keeping the sheet under ~1 MB.
MIN_CELL = 128
MAX_CELL = 256
GAP = 4
BACKGROUND = (24, 24, 24)
# Label colours: a face dlib calls the same person, another face, a copy of the photo, no face at all.
SAME_PERSON = (120, 210, 120)
OTHER_PERSON = (235, 180, 90)
COPY = (235, 110, 110)
NO_FACE = (170, 170, 170)


@dataclass(frozen=True)
class SheetPicture:
    """One test picture and its score against the photo."""

    image: Image.Image
    score: SampleScore


def label(score: SampleScore) -> tuple[str, tuple[int, int, int]]:
    """The text under a picture and its colour."""
    if score.distance is None:
        return "no face", NO_FACE
    if score.copy:
        return "copy of the photo", COPY
    colour = SAME_PERSON if score.distance < THRESHOLD else OTHER_PERSON
    return f"{display_score(score.distance)}/100", colour


def cell_side(pictures: Sequence[SheetPicture]) -> int:
    """The side every picture is shown at: the largest picture's side within MIN_CELL..MAX_CELL."""
    side = max(max(p.image.size) for p in pictures)
    return min(MAX_CELL, max(MIN_CELL, side))


def preview_sheet(pictures: Sequence[SheetPicture], columns: int = COLUMNS) -> Image.Image:
    """The pictures in rows of ``columns``, each with its label in a band beneath it."""
    if not pictures:
        raise ValueError("a preview sheet needs at least one picture")
    side = cell_side(pictures)
    band = max(20, side // 8)
    font = ImageFont.load_default(size=round(band * 0.7))
    across = min(columns, len(pictures))
    rows = math.ceil(len(pictures) / across)
    sheet = Image.new("RGB", (across * (side + GAP) + GAP, rows * (side + band + GAP) + GAP), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, picture in enumerate(pictures):
        row, column = divmod(index, across)
        left = GAP + column * (side + GAP)
        top = GAP + row * (side + band + GAP)
        image = picture.image.convert("RGB")
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
        if max(image.size) < side:
            # Enlarge small pictures by whole pixels: smoothing would suggest detail that was never drawn.
            factor = side / max(image.size)
            size = (round(image.width * factor), round(image.height * factor))
            image = image.resize(size, Image.Resampling.NEAREST)
        sheet.paste(image, (left + (side - image.width) // 2, top + (side - image.height) // 2))
        text, colour = label(picture.score)
        draw.text((left + side / 2, top + side + band / 2), text, fill=colour, font=font, anchor="mm")
    return sheet
