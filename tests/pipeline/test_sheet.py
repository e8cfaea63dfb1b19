"""The likeness preview sheet: the test pictures in a grid, each labelled with its own score."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from daemon.pipeline.likeness import SampleScore, display_score
from daemon.pipeline.sheet import (
    COPY,
    GAP,
    MAX_CELL,
    MIN_CELL,
    NO_FACE,
    OTHER_PERSON,
    SAME_PERSON,
    SheetPicture,
    cell_side,
    label,
    preview_sheet,
)


def flat(level: int, side: int) -> Image.Image:
    return Image.new("RGB", (side, side), (level, 0, 255 - level))


def test_each_label_says_what_its_score_means() -> None:
    assert label(SampleScore(distance=0.3)) == (f"{display_score(0.3)}/100", SAME_PERSON)
    assert label(SampleScore(distance=0.7)) == (f"{display_score(0.7)}/100", OTHER_PERSON)
    assert label(SampleScore(distance=0.1, copy=True)) == ("copy of the photo", COPY)
    assert label(SampleScore(distance=None)) == ("no face", NO_FACE)


@pytest.mark.parametrize(("side", "shown"), [(64, MIN_CELL), (200, 200), (512, MAX_CELL)])
def test_pictures_are_shown_at_their_own_size_within_bounds(side: int, shown: int) -> None:
    assert cell_side([SheetPicture(flat(0, side), SampleScore(None))]) == shown


def test_eight_pictures_make_two_rows_of_four_each_in_its_place_with_its_label() -> None:
    scores = [SampleScore(0.3), SampleScore(0.7), SampleScore(None), SampleScore(0.2, copy=True)] * 2
    pictures = [SheetPicture(flat(30 * n, 512), score) for n, score in enumerate(scores)]
    sheet = np.asarray(preview_sheet(pictures))
    band = max(20, MAX_CELL // 8)
    assert sheet.shape == (2 * (MAX_CELL + band + GAP) + GAP, 4 * (MAX_CELL + GAP) + GAP, 3)
    for n, picture in enumerate(pictures):
        row, column = divmod(n, 4)
        left, top = GAP + column * (MAX_CELL + GAP), GAP + row * (MAX_CELL + band + GAP)
        # The picture fills its cell...
        assert tuple(sheet[top + MAX_CELL // 2, left + MAX_CELL // 2]) == (30 * n, 0, 255 - 30 * n)
        # ...and its band carries text in its label's colour, and no other label's.
        strip = sheet[top + MAX_CELL : top + MAX_CELL + band, left : left + MAX_CELL].reshape(-1, 3)
        colours = {tuple(int(c) for c in pixel) for pixel in strip}
        _, colour = label(picture.score)
        assert colour in colours
        assert not ({SAME_PERSON, OTHER_PERSON, COPY, NO_FACE} - {colour}) & colours


def test_a_small_picture_is_enlarged_without_smoothing() -> None:
    picture = Image.new("RGB", (64, 64), (0, 0, 0))
    picture.putpixel((0, 0), (255, 255, 255))
    sheet = np.asarray(preview_sheet([SheetPicture(picture, SampleScore(None))]))
    # One source pixel becomes a 2x2 block of exactly its colour.
    block = sheet[GAP : GAP + 2, GAP : GAP + 2]
    assert (block == 255).all() and (sheet[GAP + 2, GAP + 2] == 0).all()


def test_a_sheet_needs_a_picture() -> None:
    with pytest.raises(ValueError, match="at least one"):
        preview_sheet([])
