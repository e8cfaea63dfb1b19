"""Check an uploaded or fetched picture and turn it into the one form the pipeline stores: an upright RGB PNG.

The bytes come from strangers, so Pillow only ever sees them through a format allow-list, with the pixel count
checked from the header before any pixel is decoded. Nothing of the original file survives except the pixels:
the stored PNG carries no EXIF (GPS, camera serials), no text chunks and no colour profile (pixels are
converted to sRGB first).
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import math
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from daemon.errors import BadImage

log = logging.getLogger(__name__)

_MIB = 1024 * 1024

# Pillow identifies a JPEG with a multi-picture index (phones, stereo cameras) as "MPO"; its first frame is the
# ordinary photo, so it counts as a JPEG here. GIF is accepted for still images only.
_OPEN_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
_ALLOWED = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF"})

# What malformed input makes Pillow's plugins and decoders raise; each means "this is not a usable image".
# zlib.error and struct.error come from the pure-Python chunk readers, SyntaxError from PNG's CRC checks.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
)

NOT_AN_IMAGE = "That file is not a JPEG, PNG or WebP image."
DAMAGED = "That image file is damaged or cut off; please send it again."
ANIMATED = "Animated images are not supported; send a still photo."


@dataclass(frozen=True)
class ImageLimits:
    """What the distillery accepts from a user; the daemon builds one from its settings."""

    # Same cap as fetch.FetchPolicy.max_bytes; Telegram bots cannot download more than 20 MB anyway.
    max_bytes: int = 20 * _MIB
    # Shorter side in pixels: below this a face is too small for the 512 px training crops to learn from.
    min_side: int = 256
    # Pixel-bomb guard, checked from the header before decoding: 40 MP covers any phone camera, while a
    # 40 MP RGB image already needs 120 MB to decode. Lower than Pillow's own 89 MP warning threshold.
    max_pixels: int = 40_000_000
    # Long side of the stored PNG: training uses 512 px crops, so more only costs storage and decode time.
    store_max_side: int = 1024


@dataclass(frozen=True)
class SourceImage:
    """The normalised picture as stored: PNG bytes, their pixel size and the hex SHA-256 of the bytes."""

    png: bytes
    width: int
    height: int
    sha256: str


def normalize_image(data: bytes, limits: ImageLimits) -> SourceImage:
    """Validate ``data`` and return it as an upright RGB PNG without metadata; refusals raise BadImage."""
    if not data:
        raise BadImage("The file is empty; send a JPEG, PNG or WebP photo.")
    if len(data) > limits.max_bytes:
        raise BadImage(f"The image is larger than the {limits.max_bytes / _MIB:.3g} MB limit.")
    # The explicit max_pixels check in _decode is the real guard. Turning Pillow's bomb warning into an error
    # is a backstop for anything it does not cover, scoped to this call instead of lowering the process-wide
    # Image.MAX_IMAGE_PIXELS. (catch_warnings is not thread-safe; a race only loses the backstop.)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            rgb = _decode(data, limits)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadImage(
                f"The image has too many pixels; the limit is {limits.max_pixels / 1e6:g} megapixels."
            ) from exc
        except _DECODE_ERRORS as exc:
            log.info("refused a damaged image: %r", exc)
            raise BadImage(DAMAGED) from exc
    png = _encode_png(rgb)
    return SourceImage(png=png, width=rgb.width, height=rgb.height, sha256=hashlib.sha256(png).hexdigest())


def open_png(png: bytes) -> Image.Image:
    """Open a stored PNG (as made by :func:`normalize_image`) as a loaded RGB image."""
    with Image.open(io.BytesIO(png), formats=["PNG"]) as im:
        im.load()
        return im.convert("RGB")


@functools.cache
def demo_portrait() -> bytes:
    """PNG bytes of scikit-image's ``astronaut`` (NASA portrait of Eileen Collins, public domain, 512x512)."""
    # Imported here: scikit-image takes most of a second to import and only the demo needs it.
    import skimage.data

    # scikit-image ships no type hints.
    pixels = np.asarray(skimage.data.astronaut(), dtype=np.uint8)  # type: ignore[no-untyped-call]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _open(data: bytes) -> ImageFile.ImageFile:
    try:
        im = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except UnidentifiedImageError as exc:
        raise BadImage(NOT_AN_IMAGE) from exc
    if im.format not in _ALLOWED:
        raise BadImage(NOT_AN_IMAGE)
    return im


def _decode(data: bytes, limits: ImageLimits) -> Image.Image:
    """Checks that need only the header first, then verify, decode, orient, convert and downscale."""
    with _open(data) as probe:
        width, height = probe.size
        # Header size only: nothing has been decoded yet, so a 50k x 50k claim costs nothing to refuse.
        if width * height > limits.max_pixels:
            raise BadImage(
                f"The image claims to be {width}x{height} pixels, "
                f"more than the {limits.max_pixels / 1e6:g} megapixel limit."
            )
        if probe.format != "MPO" and getattr(probe, "is_animated", False):
            raise BadImage(ANIMATED)
        if min(width, height) < limits.min_side:
            raise BadImage(
                f"The image is {width}x{height} pixels; send one whose shorter side "
                f"is at least {limits.min_side} pixels."
            )
        # verify() checks what decoding skips (PNG chunk CRCs) but leaves the object unusable: reopen after.
        probe.verify()

    with _open(data) as im:
        scale = limits.store_max_side / max(width, height)
        if im.format in ("JPEG", "MPO") and scale < 1:
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale, never below the size we keep: far less memory and
            # time for a 40 MP phone photo that ends up 1024 px wide anyway.
            im.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
        im.load()  # raises OSError for a truncated file: ImageFile.LOAD_TRUNCATED_IMAGES stays False
        upright = ImageOps.exif_transpose(im) or im
        rgb = _to_rgb(_to_srgb(upright))

    long_side = max(rgb.size)
    if long_side > limits.store_max_side:
        scale = limits.store_max_side / long_side
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        # reducing_gap first shrinks by an integer box filter, then LANCZOS: same look, much faster on big input.
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return rgb


@functools.cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _to_srgb(im: Image.Image) -> Image.Image:
    """Convert pixels from an embedded colour profile to sRGB, since the stored PNG drops the profile."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK"):
        return im
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(
            im, source, _srgb_profile(), outputMode="RGBA" if im.mode == "RGBA" else "RGB"
        )
    except (ImageCms.PyCMSError, *_DECODE_ERRORS) as exc:
        # Broken or mismatched profiles are common in the wild; the untransformed pixels are still a photo.
        log.info("ignoring an unusable colour profile: %r", exc)
        return im
    return converted if converted is not None else im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB, with transparency composited onto white."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        # Pillow clips wide greyscale to 0..255 when converting, turning most 16-bit photos white. Only 16-bit
        # greyscale PNGs reach here (as "I;16", or "I" in older Pillow), so map 0..65535 onto 0..255.
        wide = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8))
    has_alpha = any(band in ("A", "a") for band in im.getbands()) or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _encode_png(rgb: Image.Image) -> bytes:
    # A fresh image from raw pixels has an empty info dict, so the PNG writer has no EXIF, ICC profile, text,
    # transparency or dpi to copy across from the original.
    clean = Image.frombytes("RGB", rgb.size, rgb.tobytes())
    buf = io.BytesIO()
    clean.save(buf, format="PNG")
    return buf.getvalue()
