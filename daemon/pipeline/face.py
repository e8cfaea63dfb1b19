"""Face-aware preparation of the portrait: find the face, square-crop around it, and say early what is wrong.

The detector is OpenCV's frontal-face Haar cascade, whose XML ships inside ``opencv-python-headless`` (4.x;
5.0 dropped the bundled cascades): nothing is downloaded, and it runs on the CPU in tens of milliseconds, so
the warnings reach the chat in the PREPARE stage, before any GPU time is spent.

Rules (``prepare_portrait``):

* no face found          -> train on the image's center square, and warn;
* several faces          -> train around the largest one, and warn (the LoRA may mix people);
* face smaller than ``resolution * MIN_FACE_FRACTION`` source pixels -> warn: the training crop would be an
  upscaled, blurry face;
* otherwise              -> the crop is a square of ``CONTEXT`` face widths (head and shoulders), at least the
  training resolution when the image is big enough, never past the image, as centered on the face as the
  borders allow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

# Head and shoulders: DreamBooth portraits train best when the face fills roughly 40 % of the frame.
CONTEXT = 2.5
# Below a quarter of the training side (128 px at 512) the face is mostly upscaling artifacts after the crop.
MIN_FACE_FRACTION = 0.25
# The cascade is scale-invariant; detecting on at most 1024 px keeps a 24 MP photo under ~100 ms.
DETECT_MAX_SIDE = 1024
# Haar cascade settings as OpenCV's face-detection tutorial uses them; 5 neighbours drops most false hits.
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 5
MIN_FACE_PX = 24
# Boxes under a third of the largest face's side are dropped: on upscaled or textured photos they are mostly
# cascade false hits, and a real face that small is a passer-by that will not shape the LoRA anyway.
MIN_RELATIVE_SIDE = 1 / 3
CASCADE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in source-image pixels."""

    left: int
    top: int
    width: int
    height: int

    @property
    def side(self) -> int:
        """The longer side; Haar boxes are square, so this is simply the face's size."""
        return max(self.width, self.height)


@dataclass
class PreparedPortrait:
    """The square training image, the faces seen, the crop taken and the warnings for the user."""

    image: Image.Image
    faces: list[Box]
    crop: Box
    warnings: list[str] = field(default_factory=list)


_cascade: Any = None


def _detector() -> Any:
    # Loaded once per process: parsing the XML takes ~50 ms, detection itself is cheaper.
    global _cascade
    if _cascade is None:
        import cv2

        _cascade = cv2.CascadeClassifier(str(cv2.data.haarcascades) + CASCADE)  # type: ignore[attr-defined]
        if _cascade.empty():
            raise RuntimeError(f"OpenCV's bundled {CASCADE} could not be loaded")
    return _cascade


def detect_faces(image: Image.Image) -> list[Box]:
    """Frontal faces in ``image``, largest first, in source pixels (tiny ones dropped, see MIN_RELATIVE_SIDE)."""
    import cv2

    gray = np.asarray(image.convert("L"))
    scale = min(1.0, DETECT_MAX_SIDE / max(gray.shape))
    if scale < 1.0:
        size = (round(gray.shape[1] * scale), round(gray.shape[0] * scale))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    # Histogram equalisation evens out backlit and low-contrast portraits, which Haar features are sensitive to.
    found = _detector().detectMultiScale(
        cv2.equalizeHist(gray),
        scaleFactor=SCALE_FACTOR,
        minNeighbors=MIN_NEIGHBORS,
        minSize=(MIN_FACE_PX, MIN_FACE_PX),
    )
    boxes = sorted(
        (Box(*(round(int(v) / scale) for v in row)) for row in found),
        key=lambda box: box.width * box.height,
        reverse=True,
    )
    return [box for box in boxes if box.side >= boxes[0].side * MIN_RELATIVE_SIDE]


def square_around(face: Box, image_size: tuple[int, int], resolution: int) -> Box:
    """The training square for ``face``: CONTEXT face sides, at least ``resolution``, inside the image."""
    width, height = image_size
    side = min(width, height, max(round(face.side * CONTEXT), resolution))
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
