"""Likeness: the display mapping, the copy check on a real photo, the snapshot choice and the test-picture plan."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageOps

from daemon.pipeline.face import prepare_portrait
from daemon.pipeline.likeness import (
    NOT_MEASURED,
    PROMPTS,
    THRESHOLD,
    SampleScore,
    SourceFace,
    choose_snapshot,
    display_score,
    sample_plan,
    score_sample,
    source_face,
)


@pytest.fixture(scope="module")
def crop() -> Image.Image:
    """The astronaut's training crop, as the PREPARE stage makes it."""
    from skimage import data

    return prepare_portrait(Image.fromarray(data.astronaut()), 256).image  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def source(crop: Image.Image) -> SourceFace:
    face = source_face(crop)
    assert face is not None
    return face


def test_the_display_score_is_linear_with_the_threshold_at_50() -> None:
    assert display_score(0.0) == display_score(0.2) == 100
    assert display_score(THRESHOLD) == 50
    assert display_score(0.37) == 79 and display_score(0.70) == 38
    assert display_score(1.0) == display_score(1.7) == 0
    scores = [display_score(d / 10) for d in range(2, 11)]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def test_a_reproduction_of_the_photo_is_a_copy_and_its_mirror_too(crop: Image.Image, source: SourceFace) -> None:
    # What an over-fitted LoRA draws: the photo again, at the sampling resolution, slightly degraded.
    for picture in (jpeg(crop.resize((512, 512)), 60), ImageOps.mirror(crop).resize((384, 384))):
        scored = score_sample(source, picture)
        assert scored.distance is not None and scored.distance < THRESHOLD
        assert scored.copy and not scored.counts


def test_the_same_face_in_another_scene_or_on_another_background_is_not_a_copy(
    crop: Image.Image, source: SourceFace
) -> None:
    from skimage import data

    coffee = Image.fromarray(data.coffee())  # type: ignore[no-untyped-call]
    # The face moved to the other side of a different picture: same person, new place in the frame and scene.
    moved = coffee.resize((512, 512))
    moved.paste(crop.resize((256, 256)).crop((40, 0, 216, 190)), (300, 250))
    # The face exactly where it was, in the same pose, but on another background: not the photo either.
    face = source_face(crop)
    assert face is not None
    box = prepare_portrait(crop, 64).faces[0]
    still = coffee.resize(crop.size)
    region = (box.left - 10, box.top - 20, box.left + box.width + 10, box.top + box.height + 10)
    still.paste(crop.crop(region), region[:2])
    for picture in (moved, still):
        scored = score_sample(source, picture)
        assert scored.distance is not None and scored.distance < THRESHOLD
        assert not scored.copy and scored.counts


def test_a_picture_without_a_face_scores_none(source: SourceFace) -> None:
    from skimage import data

    scored = score_sample(source, Image.fromarray(data.chelsea()))  # type: ignore[no-untyped-call]
    assert scored.distance is None and not scored.counts


def fake_scorer(table: dict[int, list[SampleScore]]) -> tuple[list[int], object]:
    seen: list[int] = []

    def scorer(step: int) -> list[SampleScore]:
        seen.append(step)
        return table[step]

    return seen, scorer


def faces(*distances: float | None) -> list[SampleScore]:
    return [SampleScore(distance) for distance in distances]


def test_the_snapshot_with_the_best_median_is_kept() -> None:
    table = {
        300: faces(0.70, 0.65, 0.55, 0.62),
        400: faces(0.40, 0.45, 0.70, 0.50),  # best median (0.475), one picture over the threshold
        500: faces(0.30, 0.66, 0.68, 0.64),  # one very close picture does not make a snapshot
    }
    seen, scorer = fake_scorer(table)
    progress: list[tuple[int, int]] = []
    likeness = choose_snapshot([300, 400, 500], scorer, lambda done, total: progress.append((done, total)))  # type: ignore[arg-type]
    assert seen == [300, 400, 500] and progress == [(1, 3), (2, 3), (3, 3)]
    assert likeness.measured and likeness.step == 400
    assert likeness.median == pytest.approx(0.475) and likeness.under_threshold == 3 and likeness.samples == 4
    assert likeness.score == display_score(0.475) == 66
    assert likeness.summary() == "Likeness 66/100: 3 of 4 test pictures look like the photo."
    meta = likeness.metadata()
    assert meta["likeness_score"] == "66" and meta["likeness_step"] == "400"
    assert meta["likeness_median_distance"] == "0.4750" and meta["likeness_under_threshold"] == "3"


def test_copies_of_the_photo_never_win() -> None:
    copy = SampleScore(0.05, copy=True)
    table = {
        400: faces(0.45, 0.50, 0.52, 0.55),
        500: [copy, copy, copy, SampleScore(0.30)],  # closest by far, but it only reproduces the photo
    }
    _, scorer = fake_scorer(table)
    likeness = choose_snapshot([400, 500], scorer)  # type: ignore[arg-type]
    assert likeness.step == 400 and likeness.copies == 0
    assert likeness.median == pytest.approx(0.51)
    ranked = {s.step: s for s in likeness.snapshots}
    assert ranked[500].copies == 3 and ranked[500].median == pytest.approx(0.30)
    # A snapshot whose copies stay a minority still reports them, and they do not count as likenesses.
    table[500] = [copy, SampleScore(0.40), SampleScore(0.42), SampleScore(0.41)]
    likeness = choose_snapshot([400, 500], fake_scorer(table)[1])  # type: ignore[arg-type]
    assert likeness.step == 500 and likeness.copies == 1 and likeness.under_threshold == 3
    assert "1 copied the photo" in likeness.summary()


def test_no_face_in_any_test_picture_keeps_the_last_snapshot_and_says_so() -> None:
    _, scorer = fake_scorer({300: faces(None, None), 500: faces(None, None)})
    likeness = choose_snapshot([300, 500], scorer)  # type: ignore[arg-type]
    assert not likeness.measured and likeness.step == 500 and likeness.score is None
    assert likeness.summary() == "Likeness not measured: no face in the test pictures."
    assert likeness.metadata() == {
        "likeness_measured": "false",
        "likeness_step": "500",
        "likeness_reason": NOT_MEASURED,
    }
    with pytest.raises(ValueError):
        choose_snapshot([], scorer)  # type: ignore[arg-type]


def test_the_plan_draws_the_same_prompts_and_seeds_for_every_snapshot() -> None:
    plan = sample_plan("rifttami man", [300, 400, 500], per_snapshot=3, seed=7)
    assert len(plan) == 9 and [r.step for r in plan[:3]] == [300] * 3
    for step in (300, 400, 500):
        mine = [r for r in plan if r.step == step]
        assert [r.seed for r in mine] == [7, 8, 9]
        assert [r.prompt for r in mine] == [p.format(subject="rifttami man") for p in PROMPTS[:3]]
    assert len({r.prompt for r in plan}) == 3 and all("rifttami man" in r.prompt for r in plan)
    assert plan[0].prompt.startswith("a portrait photo")
    # More pictures than prompts cycle through them with new seeds.
    many = sample_plan("rifttami man", [500], per_snapshot=len(PROMPTS) + 1)
    assert many[-1].prompt == many[0].prompt and many[-1].seed != many[0].seed
    with pytest.raises(ValueError):
        sample_plan("rifttami man", [500], per_snapshot=0)
