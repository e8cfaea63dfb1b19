"""Likeness: how much pictures made with a LoRA look like the person in the photo, and which snapshot to keep.

The measure is dlib's face distance (``daemon.pipeline.face``): the Euclidean distance between 128-d face
descriptors, which dlib calibrates so that two photos of one person fall under 0.6 (99.38 % on LFW). On the
packaged test photos the astronaut reads 0.19 against her mirror image, about 0.25-0.37 against a JPEG-q20
colour-shifted copy, and 0.70 against Grace Hopper.

After training, the snapshots of the LoRA (``TrainConfig.snapshot_steps``) each draw the same test pictures
(``sample_plan``: fixed seeds, a portrait and a few different settings), every picture is scored against the
training photo's face (``score_sample``), and ``choose_snapshot`` keeps the snapshot with the best median
distance. The result is reported three ways (``Likeness``):

* the **display score**, 0-100, of the median distance: 100 at 0.2 or closer (a photo against its own mirror
  image), 0 at 1.0 or farther (strangers), linear in between, so 50 is dlib's 0.6 threshold: above 50 the
  median picture is the same person by dlib's standard. 0.37 (a heavily degraded copy) reads 79, 0.70 (another
  person) 38;
* the **share** of test pictures whose face is under the threshold ("7 of 8 test pictures look like the photo");
* the **median distance** itself, for whoever wants dlib's own number.

Copies do not count. A LoRA that over-fits one photo reproduces it, pose and background included, and a copy
is the closest a picture can get to the source face: it must not win. A picture is a copy when both
(a) it looks like the training crop as a whole, pixels and all (``COPY_CORRELATION``: the normalised
cross-correlation of 32x32 grey thumbnails; different scenes score far lower even with the same person), and
(b) its face sits where the photo's face sits, in the same pose (``COPY_POSE``: the 5 landmarks, in fractions of
the image side, within 4 % on average). Both are checked against the photo and its mirror image, since
training sees both. A copy scores like a picture with no face: it counts against its snapshot's median.

No face in any test picture (the demo's random models, a LoRA of a dog) leaves the likeness not measured; it
says so plainly, and the last snapshot is kept.

Cost: a test picture is ``SAMPLE_STEPS`` denoising steps with classifier-free guidance, 2 x 20 = 40 UNet
forwards at batch 1, while one training step at 2 instance + 2 class samples is 3 x 4 = 12 (forward and
backward). The default plan, 3 snapshots x 8 pictures = 960 forwards, is 16 % of 500 training steps (6,000),
plus ~0.5 s of CPU per picture for the face check, which overlaps the next picture's GPU work.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

from daemon.jobs.model import LikenessScore
from daemon.pipeline.face import FaceDescription, describe_face

# dlib's calibrated same-person threshold for the ResNet's Euclidean distance.
THRESHOLD = 0.6
# The display scale's ends: 100 at a photo against its own mirror image, 0 at a typical stranger.
BEST_DISTANCE = 0.2
WORST_DISTANCE = 1.0
# A copy: thumbnails this correlated and landmarks this close (mean, in fractions of the image side).
COPY_CORRELATION = 0.85
COPY_POSE = 0.04
THUMBNAIL = 32
# Denoising steps per test picture: enough for a recognisable face with the resident sampler.
SAMPLE_STEPS = 20
# The test pictures: a portrait first (the closest to what users ask for), then settings that move pose,
# light and clothes away from the photo, so a LoRA that only copies the photo does not look good.
PROMPTS = (
    "a portrait photo of {subject}, looking at the camera",
    "a photo of {subject} in a park, smiling",
    "a photo of {subject} wearing a suit, in an office",
    "a photo of {subject} on a beach at sunset",
    "a close-up photo of {subject}, studio lighting",
    "a photo of {subject} reading in a cafe",
    "a photo of {subject} in the snow, wearing a winter coat",
    "a photo of {subject} in a city street at night",
)
NOT_MEASURED = "likeness not measured: no face in the test pictures"
NO_SOURCE_FACE = "likeness not measured: no face in the photo"


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """dlib's face distance between two descriptors (under THRESHOLD: the same person)."""
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def display_score(face_distance: float) -> int:
    """The 0-100 likeness shown to users: 100 at BEST_DISTANCE or closer, 0 at WORST_DISTANCE or farther,
    linear in between, 50 at THRESHOLD (see the module docstring)."""
    fraction = (WORST_DISTANCE - face_distance) / (WORST_DISTANCE - BEST_DISTANCE)
    return round(100 * min(1.0, max(0.0, fraction)))


# --- the source face and one picture's score ---------------------------------------------------------------


def _thumbnail(image: Image.Image) -> np.ndarray:
    """A 32x32 grey thumbnail with zero mean and unit variance: correlation is then a mean of products."""
    small = image.convert("L").resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BOX)
    grey: np.ndarray = np.asarray(small, dtype=np.float64)
    grey = grey - grey.mean()
    normalised: np.ndarray = grey / max(float(grey.std()), 1e-6)
    return normalised


def _pose(face: FaceDescription, size: tuple[int, int]) -> np.ndarray:
    """The 5 landmarks in fractions of the image side, so pictures of any resolution compare."""
    pose: np.ndarray = face.landmarks / np.array(size, dtype=np.float64)
    return pose


def _mirror_pose(pose: np.ndarray) -> np.ndarray:
    """The landmarks of the mirror image: x flipped, and the two eyes' points swapped (dlib orders them by eye)."""
    mirrored = pose.copy()
    mirrored[:, 0] = 1.0 - mirrored[:, 0]
    return mirrored[[2, 3, 0, 1, 4]]


@dataclass(frozen=True)
class SourceFace:
    """What every test picture is compared with: the training photo's face, and the photo itself (and its
    mirror image) as thumbnails and landmark poses for the copy check."""

    descriptor: np.ndarray
    thumbnails: tuple[np.ndarray, ...]
    poses: tuple[np.ndarray, ...]


def source_face(image: Image.Image) -> SourceFace | None:
    """The training crop's face, or None when it has none (the likeness then cannot be measured)."""
    face = describe_face(image)
    if face is None:
        return None
    pose = _pose(face, image.size)
    return SourceFace(
        descriptor=face.descriptor,
        thumbnails=(_thumbnail(image), _thumbnail(ImageOps.mirror(image))),
        poses=(pose, _mirror_pose(pose)),
    )


@dataclass(frozen=True)
class SampleScore:
    """One test picture: its face distance to the photo (None: no face found), and whether it is a copy."""

    distance: float | None
    copy: bool = False

    @property
    def counts(self) -> bool:
        """Whether the picture's distance counts: a face was found and it is not a copy of the photo."""
        return self.distance is not None and not self.copy

    @property
    def ranked_distance(self) -> float:
        """The distance used to rank snapshots: no face and copies rank as infinitely far."""
        return self.distance if self.distance is not None and not self.copy else math.inf


def is_copy(source: SourceFace, picture: Image.Image, face: FaceDescription) -> bool:
    """Whether ``picture`` reproduces the photo (or its mirror image): same scene and same pose together."""
    thumbnail = _thumbnail(picture)
    pose = _pose(face, picture.size)
    return any(
        float(np.mean(thumbnail * source_thumbnail)) >= COPY_CORRELATION
        and float(np.mean(np.linalg.norm(pose - source_pose, axis=1))) <= COPY_POSE
        for source_thumbnail, source_pose in zip(source.thumbnails, source.poses, strict=True)
    )


def score_sample(source: SourceFace, picture: Image.Image) -> SampleScore:
    """Score one test picture against the photo's face (see the module docstring for copies)."""
    face = describe_face(picture)
    if face is None:
        return SampleScore(distance=None)
    return SampleScore(distance=distance(source.descriptor, face.descriptor), copy=is_copy(source, picture, face))


# --- snapshots and the result --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotScore:
    """The test pictures of one snapshot (the LoRA as it was after ``step`` training steps)."""

    step: int
    samples: tuple[SampleScore, ...]

    @property
    def median(self) -> float | None:
        """Median distance of the pictures that count; None when none does."""
        counted = [s.distance for s in self.samples if s.counts and s.distance is not None]
        return statistics.median(counted) if counted else None

    @property
    def under_threshold(self) -> int:
        """How many pictures look like the photo by dlib's standard (copies excluded)."""
        return sum(1 for s in self.samples if s.counts and s.ranked_distance < THRESHOLD)

    @property
    def copies(self) -> int:
        """How many pictures reproduce the photo itself."""
        return sum(1 for s in self.samples if s.copy)

    @property
    def faces(self) -> int:
        """How many pictures have a face at all (copies included)."""
        return sum(1 for s in self.samples if s.distance is not None)

    def rank(self) -> tuple[float, int, int, int]:
        """Sort key, best first: the median with no-face pictures and copies as infinitely far, then more
        pictures under the threshold, fewer copies, and the later snapshot."""
        ranked = statistics.median(s.ranked_distance for s in self.samples) if self.samples else math.inf
        return (ranked, -self.under_threshold, self.copies, -self.step)


@dataclass(frozen=True)
class Likeness:
    """The kept snapshot and how much its test pictures look like the photo (or why that was not measured)."""

    step: int
    measured: bool
    median: float | None = None
    under_threshold: int = 0
    samples: int = 0
    copies: int = 0
    reason: str = ""
    snapshots: tuple[SnapshotScore, ...] = field(default=(), repr=False)

    @property
    def score(self) -> int | None:
        """The 0-100 display score of the median distance (see ``display_score``); None when not measured."""
        return display_score(self.median) if self.measured and self.median is not None else None

    def summary(self) -> str:
        """The chat line: "Likeness 78/100: 7 of 8 test pictures look like the photo", or why not measured."""
        return self.record().summary()

    def record(self) -> LikenessScore:
        """The likeness as the job and LoRA records keep it."""
        return LikenessScore(
            measured=self.measured,
            score=self.score or 0,
            under_threshold=self.under_threshold,
            samples=self.samples,
            median_distance=self.median or 0.0,
            step=self.step,
            copies=self.copies,
            reason=self.reason,
        )

    def metadata(self) -> dict[str, str]:
        """String entries for the LoRA file's header and the LoRA record."""
        out = {"likeness_measured": str(self.measured).lower(), "likeness_step": str(self.step)}
        if self.measured and self.median is not None:
            out |= {
                "likeness_score": str(self.score),
                "likeness_median_distance": f"{self.median:.4f}",
                "likeness_under_threshold": str(self.under_threshold),
                "likeness_samples": str(self.samples),
                "likeness_threshold": str(THRESHOLD),
            }
        else:
            out["likeness_reason"] = self.reason
        return out

    @classmethod
    def not_measured(cls, step: int, reason: str, snapshots: Sequence[SnapshotScore] = ()) -> Likeness:
        """Keep the snapshot at ``step`` (the last one) and say why the likeness is unknown."""
        return cls(step=step, measured=False, reason=reason, snapshots=tuple(snapshots))


def choose_snapshot(
    steps: Sequence[int],
    scorer: Callable[[int], Sequence[SampleScore]],
    on_snapshot: Callable[[int, int], None] = lambda done, total: None,
) -> Likeness:
    """Score every snapshot with ``scorer(step)`` and keep the best (``SnapshotScore.rank``).

    When no test picture of any snapshot has a face that counts, the likeness is not measured and the last
    snapshot is kept: with nothing to compare, the most trained LoRA is the one the user asked for.
    """
    if not steps:
        raise ValueError("no snapshots to choose from")
    scored = []
    for done, step in enumerate(steps, start=1):
        scored.append(SnapshotScore(step, tuple(scorer(step))))
        on_snapshot(done, len(steps))
    last = max(steps)
    if not any(s.median is not None for s in scored):
        return Likeness.not_measured(last, NOT_MEASURED, scored)
    best = min(scored, key=SnapshotScore.rank)
    return Likeness(
        step=best.step,
        measured=True,
        median=best.median,
        under_threshold=best.under_threshold,
        samples=len(best.samples),
        copies=best.copies,
        snapshots=tuple(scored),
    )


# --- the test pictures ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleRequest:
    """One test picture to draw: with the snapshot at ``step``, from ``prompt``, with ``seed``."""

    step: int
    index: int
    prompt: str
    seed: int


def sample_plan(subject: str, steps: Sequence[int], per_snapshot: int, seed: int = 0) -> list[SampleRequest]:
    """The test pictures of every snapshot: ``per_snapshot`` prompts (cycling through PROMPTS) with seeds
    ``seed, seed + 1, ...``, the same for every snapshot so their scores differ only by the LoRA.

    ``subject`` is how prompts name the person: the trained words, ``"NAME CLASS"``.
    """
    if per_snapshot < 1:
        raise ValueError("at least one test picture per snapshot")
    return [
        SampleRequest(step=step, index=i, prompt=PROMPTS[i % len(PROMPTS)].format(subject=subject), seed=seed + i)
        for step in steps
        for i in range(per_snapshot)
    ]
