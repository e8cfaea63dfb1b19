"""Faces with dlib: find them, square-crop the portrait around the main one, describe it as 128 numbers.

Models: dlib's HOG frontal-face detector (built into dlib), the 5-point landmark model and the 128-d face
recognition ResNet, both shipped by the ``face-recognition-models`` package (CC0 / public domain). Nothing is
downloaded at run time. The package's 68-point landmark model is never loaded: its licence (iBUG 300-W)
forbids commercial use. The package's own ``__init__`` is not imported either (it needs ``pkg_resources``):
only its folder is located.

Detection runs on a copy scaled to a 512-1024 px long side with one upsampling step (faces down to ~40 px
at that scale), on the CPU in a few hundred milliseconds, so the warnings reach the chat in the PREPARE stage,
before any GPU time is spent. HOG misses profiles and strongly turned heads; a LoRA of a person wants a
front-facing photo anyway, and the "no face" warning says so.

Rules (``prepare_portrait``):

* no face found          -> train on the image's center square, and warn;
* several faces          -> train around the largest one, and warn (the LoRA may mix people);
* face smaller than ``resolution * MIN_FACE_FRACTION`` source pixels -> warn: the training crop would be an
  upscaled, blurry face;
* otherwise              -> the crop is a square of ``CONTEXT`` face widths (head and shoulders), at least the
  training resolution when the image is big enough, never past the image, as centered on the face as the
  borders allow.

A second detection counts as a face only when it is comparable to the main one, in score and in size: one
upsampled pass over the astronaut portrait also reports her mission patch as a face, at a tenth of the face's
score (0.12 against 1.16).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

# Head and shoulders: DreamBooth portraits train best when the face fills roughly 40 % of the frame.
CONTEXT = 2.5
# The face IP-Adapter's crop: dlib's box runs from the brows to the chin, so 1.7 of its sides adds the forehead,
# hair line, ears and chin, about the face crops that model was trained on.
FACE_CROP_CONTEXT = 1.7
# Below a quarter of the training side (128 px at 512) the face is mostly upscaling artifacts after the crop.
MIN_FACE_FRACTION = 0.25
# The detector sees the image at a 512-1024 px long side: smaller photos are enlarged (HOG's smallest face is
# 80 px, 40 px after one upsampling), larger ones shrunk (a 24 MP photo would take seconds).
DETECT_MIN_SIDE = 512
DETECT_MAX_SIDE = 1024
UPSAMPLE = 1
# A second detection is a face only with at least half the main face's score and a third of its side: real
# faces score alike, false hits (patches, logos, textures) score far lower; a much smaller real face is a
# passer-by that will not shape the LoRA anyway.
MIN_RELATIVE_SCORE = 0.5
MIN_RELATIVE_SIDE = 1 / 3
LANDMARKS_MODEL = "shape_predictor_5_face_landmarks.dat"
RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in source-image pixels."""

    left: int
    top: int
    width: int
    height: int

    @property
    def side(self) -> int:
        """The longer side; dlib's face boxes are square, so this is simply the face's size."""
        return max(self.width, self.height)


@dataclass(frozen=True)
class Detection:
    """One detector hit: where, and the HOG score (higher is more face-like; 0 is the detector's threshold)."""

    box: Box
    score: float


@dataclass(frozen=True)
class FaceDescription:
    """The main face of an image: its box, the 5 landmarks (x, y in source pixels: the two corners of each eye
    and the base of the nose) and the 128-d descriptor whose Euclidean distances dlib calibrates at 0.6."""

    box: Box
    landmarks: np.ndarray
    descriptor: np.ndarray


@dataclass
class PreparedPortrait:
    """The square training image, the faces seen, the crop taken and the warnings for the user."""

    image: Image.Image
    faces: list[Box]
    crop: Box
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Models:
    detector: Any
    landmarks: Any
    recognition: Any


_models: _Models | None = None
_lock = threading.Lock()


def models_folder() -> Path:
    """The folder of ``face-recognition-models``' model files, found without importing the package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the face-recognition-models package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _load() -> _Models:
    # Loaded once per process (~1 s, mostly the ResNet); dlib's objects are safe to share between calls.
    global _models
    with _lock:
        if _models is None:
            import dlib

            folder = models_folder()
            _models = _Models(
                detector=dlib.get_frontal_face_detector(),
                landmarks=dlib.shape_predictor(str(folder / LANDMARKS_MODEL)),
                recognition=dlib.face_recognition_model_v1(str(folder / RECOGNITION_MODEL)),
            )
        return _models


def _detection_copy(image: Image.Image) -> tuple[np.ndarray, float]:
    """The RGB array the detector sees (long side within 512-1024 px) and its scale from the source."""
    image = image.convert("RGB")
    longest = max(image.size)
    scale = min(max(1.0, DETECT_MIN_SIDE / longest), DETECT_MAX_SIDE / longest)
    if scale != 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(image)), scale


def _faces(detections: list[Detection]) -> list[Detection]:
    """The detections that count as faces (see MIN_RELATIVE_SCORE/SIDE), largest first."""
    if not detections:
        return []
    best = max(d.score for d in detections)
    confident = [d for d in detections if d.score >= best * MIN_RELATIVE_SCORE]
    largest = max(d.box.side for d in confident)
    kept = [d for d in confident if d.box.side >= largest * MIN_RELATIVE_SIDE]
    return sorted(kept, key=lambda d: d.box.width * d.box.height, reverse=True)


def _detect(array: np.ndarray) -> tuple[list[Any], list[Detection]]:
    """dlib rectangles (in ``array``'s pixels) of the faces that count, and the same as Detections."""
    rects, scores, _ = _load().detector.run(array, UPSAMPLE, 0.0)
    hits = [
        (rect, Detection(Box(rect.left(), rect.top(), rect.width(), rect.height()), float(score)))
        for rect, score in zip(rects, scores, strict=True)
    ]
    counted = _faces([hit for _, hit in hits])
    by_id = {id(hit): rect for rect, hit in hits}
    return [by_id[id(hit)] for hit in counted], counted


def _to_source(box: Box, scale: float, image_size: tuple[int, int]) -> Box:
    """A box on the detection copy, in source pixels and clipped to the image."""
    width, height = image_size
    left = min(max(round(box.left / scale), 0), width - 1)
    top = min(max(round(box.top / scale), 0), height - 1)
    right = min(max(round((box.left + box.width) / scale), left + 1), width)
    bottom = min(max(round((box.top + box.height) / scale), top + 1), height)
    return Box(left, top, right - left, bottom - top)


def detect_faces(image: Image.Image) -> list[Box]:
    """The faces in ``image`` that count (see the module docstring), largest first, in source pixels."""
    array, scale = _detection_copy(image)
    _, faces = _detect(array)
    return [_to_source(face.box, scale, image.size) for face in faces]


def describe_face(image: Image.Image) -> FaceDescription | None:
    """Box, landmarks and descriptor of the largest face in ``image``; None when there is no face."""
    models = _load()
    array, scale = _detection_copy(image)
    rects, faces = _detect(array)
    if not faces:
        return None
    shape = models.landmarks(array, rects[0])
    # No jitter: 0 jitters is how dlib's 0.6 threshold was calibrated on LFW, and 100x cheaper than 100.
    descriptor = np.asarray(models.recognition.compute_face_descriptor(array, shape), dtype=np.float64)
    points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)], dtype=np.float64)
    return FaceDescription(
        box=_to_source(faces[0].box, scale, image.size), landmarks=points / scale, descriptor=descriptor
    )


def square_around(face: Box, image_size: tuple[int, int], resolution: int, context: float = CONTEXT) -> Box:
    """The training square for ``face``: ``context`` face sides, at least ``resolution``, inside the image."""
    width, height = image_size
    side = min(width, height, max(round(face.side * context), resolution))
    center_x = face.left + face.width / 2
    center_y = face.top + face.height / 2
    # Shift rather than shrink at the borders: the square keeps its size and the face stays in it.
    left = int(min(max(round(center_x - side / 2), 0), width - side))
    top = int(min(max(round(center_y - side / 2), 0), height - side))
    return Box(left, top, side, side)


def center_square(image_size: tuple[int, int]) -> Box:
    """The largest centered square, the crop used when there is no face to center on."""
    width, height = image_size
    side = min(width, height)
    return Box((width - side) // 2, (height - side) // 2, side, side)


def crop_face(image: Image.Image) -> Image.Image | None:
    """The square around the largest face in ``image`` (FACE_CROP_CONTEXT face sides), or None without a face.

    What the face IP-Adapter ("plus face") sees: it was trained on face crops, not on whole portraits.
    """
    image = image.convert("RGB")
    faces = detect_faces(image)
    if not faces:
        return None
    crop = square_around(faces[0], image.size, 0, context=FACE_CROP_CONTEXT)
    return image.crop((crop.left, crop.top, crop.left + crop.width, crop.top + crop.height))


def prepare_portrait(image: Image.Image, resolution: int) -> PreparedPortrait:
    """Detect the face, crop the training square around it and collect warnings (see the module rules)."""
    image = image.convert("RGB")
    faces = detect_faces(image)
    warnings: list[str] = []
    if not faces:
        crop = center_square(image.size)
        warnings.append(
            "No face found in the photo: training on its center square. A LoRA of a person needs a clear, "
            "front-facing face."
        )
    else:
        face = faces[0]
        crop = square_around(face, image.size, resolution)
        if len(faces) > 1:
            warnings.append(
                f"{len(faces)} faces found: training on the largest one. Other people in the crop may blend "
                "into the LoRA; a photo of one person works best."
            )
        minimum = round(resolution * MIN_FACE_FRACTION)
        if face.side < minimum:
            warnings.append(
                f"The face is small ({face.side} px) for {resolution} px training: it will be upscaled and "
                f"blurry. A photo where the face is at least {minimum} px wide works better."
            )
    logger.info("faces %s, crop %s, %d warning(s)", faces, crop, len(warnings))
    square = image.crop((crop.left, crop.top, crop.left + crop.width, crop.top + crop.height))
    return PreparedPortrait(image=square, faces=faces, crop=crop, warnings=warnings)
