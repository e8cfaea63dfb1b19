"""Faces with dlib: one face, no face, several faces, a small face, the crop geometry, and distances."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from daemon.pipeline.face import (
    LANDMARKS_MODEL,
    RECOGNITION_MODEL,
    UPSAMPLE,
    Box,
    Detection,
    _detection_copy,
    _faces,
    _load,
    describe_face,
    detect_faces,
    models_folder,
    prepare_portrait,
    square_around,
)
from tests.daemon_process import RunningDaemon


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())  # type: ignore[no-untyped-call]


def test_the_astronaut_has_one_face_and_the_crop_is_centered_on_it(astronaut: Image.Image) -> None:
    prepared = prepare_portrait(astronaut, 64)
    assert len(prepared.faces) == 1 and prepared.warnings == []
    face = prepared.faces[0]
    # Eileen Collins' face sits left of center, near the top of the 512 px image.
    assert 150 < face.left < 200 and 40 < face.top < 100 and 70 < face.side < 120
    crop = prepared.crop
    assert crop.width == crop.height == prepared.image.width == prepared.image.height
    assert crop.left <= face.left and face.left + face.width <= crop.left + crop.width
    assert crop.top <= face.top and face.top + face.height <= crop.top + crop.height
    # The crop is its own image: re-detecting finds the face again, inside it.
    assert len(detect_faces(prepared.image)) == 1


def test_a_small_face_for_512_px_training_is_flagged(astronaut: Image.Image) -> None:
    prepared = prepare_portrait(astronaut, 512)
    assert len(prepared.faces) == 1
    assert len(prepared.warnings) == 1 and "small" in prepared.warnings[0]
    assert "128 px" in prepared.warnings[0]
    # At least the training side when the image allows it: no upscaling from a smaller crop.
    assert prepared.crop.width == 512


@pytest.mark.parametrize("kind", ["blank", "landscape"])
def test_no_face_warns_and_falls_back_to_the_center_square(kind: str) -> None:
    if kind == "blank":
        image = Image.new("RGB", (640, 480), (128, 128, 128))
    else:
        from skimage import data

        image = Image.fromarray(data.rocket())  # type: ignore[no-untyped-call]
    prepared = prepare_portrait(image, 64)
    assert prepared.faces == []
    assert len(prepared.warnings) == 1 and "No face" in prepared.warnings[0]
    side = min(image.size)
    assert prepared.crop == Box((image.width - side) // 2, (image.height - side) // 2, side, side)
    assert prepared.image.size == (side, side)


def test_two_faces_warn_and_the_larger_one_is_used(astronaut: Image.Image) -> None:
    head = astronaut.crop((100, 0, 400, 300))
    canvas = Image.new("RGB", (900, 400), (200, 200, 200))
    canvas.paste(head.resize((200, 200)), (40, 100))
    canvas.paste(head, (560, 50))
    prepared = prepare_portrait(canvas, 64)
    assert len(prepared.faces) == 2
    assert any("2 faces" in warning for warning in prepared.warnings)
    assert prepared.faces[0].left > 560  # the bigger copy, pasted on the right
    assert prepared.crop.left + prepared.crop.width > 700


def test_square_around_shifts_at_the_borders_instead_of_shrinking() -> None:
    assert square_around(Box(0, 0, 40, 40), (300, 200), 64) == Box(0, 0, 100, 100)
    assert square_around(Box(260, 160, 40, 40), (300, 200), 64) == Box(200, 100, 100, 100)
    # Never past the image, even when CONTEXT face widths would be larger.
    assert square_around(Box(50, 50, 100, 100), (300, 200), 64).width == 200
    # Never smaller than the training side when the image is big enough.
    assert square_around(Box(100, 100, 20, 20), (1000, 1000), 512).width == 512


def test_large_photos_are_detected_on_a_downscaled_copy_in_source_pixels(astronaut: Image.Image) -> None:
    big = astronaut.resize((2048, 2048))
    (face,) = detect_faces(big)
    (small,) = detect_faces(astronaut)
    assert abs(face.left - 4 * small.left) < 40 and abs(face.side - 4 * small.side) < 60
    assert np.asarray(big).shape == (2048, 2048, 3)


async def test_the_daemon_tells_the_user_early_when_there_is_no_face(running_daemon: RunningDaemon) -> None:
    import io

    from distillery.v1 import distillery_pb2 as pb
    from skimage import data

    from frontends.client import DaemonClient

    landscape = io.BytesIO()
    Image.fromarray(data.rocket()).save(landscape, format="PNG")  # type: ignore[no-untyped-call]
    operator = pb.Requester(platform="cli", user="operator", chat="terminal")
    client = DaemonClient(running_daemon.target)
    try:
        spec = client.spec(operator, upload=True, subject_class="person")
        events = [event async for event in client.distill(spec, landscape.getvalue())]
    finally:
        await client.close()
    warned = [i for i, event in enumerate(events) if "No face" in event.text]
    assert len(warned) == 1, [event.text for event in events]
    # In the PREPARE stage, before the captioner or the GPU stages start; the job still runs to the end.
    assert events[warned[0]].stage == pb.STAGE_PREPARE
    later = {pb.STAGE_CAPTION, pb.STAGE_CLASSIFY, pb.STAGE_REGULARIZATION, pb.STAGE_TRAIN, pb.STAGE_SAVE}
    assert not any(event.stage in later for event in events[: warned[0]])
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED


# --- dlib on the photos that ship inside packages --------------------------------------------------------------


def grace_hopper() -> Image.Image:
    """matplotlib's sample portrait of Grace Hopper: another real person."""
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        return Image.open(handle).convert("RGB")


def degraded(image: Image.Image) -> Image.Image:
    """A JPEG-q20, colour-shifted copy: warmer, less blue, as a bad phone photo of the same face."""
    shifted = np.asarray(image, dtype=np.float64) * np.array([1.2, 1.0, 0.75]) + np.array([12.0, 0.0, -10.0])
    buffer = io.BytesIO()
    Image.fromarray(np.clip(shifted, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=20)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def test_the_mission_patch_is_a_detection_but_not_a_face(astronaut: Image.Image) -> None:
    array, scale = _detection_copy(astronaut)
    rects, scores, _ = _load().detector.run(array, UPSAMPLE, 0.0)
    assert scale == 1.0 and len(rects) == 2  # the face and, lower left, the patch on her suit
    patch = min(range(2), key=lambda i: scores[i])
    assert rects[patch].top() > 300 and scores[patch] < 0.2 * max(scores)
    assert len(detect_faces(astronaut)) == 1


def test_only_comparable_detections_count_as_faces() -> None:
    main = Detection(Box(100, 100, 90, 90), 1.2)
    patch = Detection(Box(10, 300, 90, 90), 0.12)  # as large, a tenth of the score
    second = Detection(Box(300, 100, 60, 60), 0.8)  # another person, a little farther back
    tiny = Detection(Box(400, 10, 20, 20), 1.0)  # a passer-by far away
    assert _faces([patch, main, tiny, second]) == [main, second]
    assert _faces([]) == []


@pytest.mark.parametrize("name", ["camera", "coffee", "chelsea"])
def test_photos_without_a_frontal_face_have_none(name: str) -> None:
    from skimage import data

    # camera is a man in profile, which HOG does not see; coffee and chelsea (a cat) have no person at all.
    image = Image.fromarray(getattr(data, name)())
    assert detect_faces(image) == [] and describe_face(image) is None
    prepared = prepare_portrait(image, 64)
    assert len(prepared.warnings) == 1 and "No face" in prepared.warnings[0]


def test_same_person_under_the_threshold_another_person_over_it(astronaut: Image.Image) -> None:
    from daemon.pipeline.likeness import THRESHOLD, distance

    def descriptor(image: Image.Image) -> np.ndarray:
        face = describe_face(image)
        assert face is not None and face.descriptor.shape == (128,) and face.landmarks.shape == (5, 2)
        return face.descriptor

    reference = descriptor(astronaut)
    mirror = distance(reference, descriptor(ImageOps.mirror(astronaut)))
    worse = distance(reference, descriptor(degraded(astronaut)))
    other = distance(reference, descriptor(grace_hopper()))
    assert 0.1 < mirror < 0.3 and mirror < worse < THRESHOLD
    assert THRESHOLD < other < 0.85


def test_the_models_ship_in_the_package_and_nothing_is_downloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import daemon.pipeline.face as face

    folder = models_folder()
    assert (folder / LANDMARKS_MODEL).is_file() and (folder / RECOGNITION_MODEL).is_file()

    def refuse(*args: object) -> None:
        raise AssertionError("the face models tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(face, "_models", None)  # load afresh with the network refused
    assert describe_face(grace_hopper()) is not None
