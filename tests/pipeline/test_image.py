"""normalize_image on real encodings made with Pillow, crafted bombs, non-images and fuzzed bytes."""

from __future__ import annotations

import hashlib
import io
import struct
import time
import warnings
import zlib
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import skimage.data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

from daemon.errors import BadImage
from daemon.pipeline.image import (
    ANIMATED,
    DAMAGED,
    NOT_AN_IMAGE,
    ImageLimits,
    SourceImage,
    demo_portrait,
    normalize_image,
    open_png,
)

LIMITS = ImageLimits()
ASTRONAUT: np.ndarray[Any, np.dtype[np.uint8]] = skimage.data.astronaut()  # type: ignore[no-untyped-call]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk; asserts each CRC so the helper also checks our PNG writer."""
    assert data.startswith(PNG_SIGNATURE)
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload)
        chunks.append((kind, payload))
        pos += 12 + length
    return chunks


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG that claims width x height (8-bit greyscale) but carries only ``idat`` as pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def refused(data: bytes, limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(BadImage) as caught:
        normalize_image(data, limits)
    return str(caught.value)


def pixels(result: SourceImage) -> np.ndarray[Any, np.dtype[np.uint8]]:
    im = open_png(result.png)
    assert im.mode == "RGB"
    assert im.size == (result.width, result.height)
    return np.asarray(im)


def two_halves(mode: str, left: Any, right: Any, size: tuple[int, int] = (300, 300)) -> Image.Image:
    im = Image.new(mode, size, left)
    im.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return im


# --- what comes out -------------------------------------------------------------------------------------------


def test_astronaut_round_trip() -> None:
    result = normalize_image(demo_portrait(), LIMITS)
    assert (result.width, result.height) == (512, 512)
    assert result.png.startswith(PNG_SIGNATURE)
    assert result.sha256 == hashlib.sha256(result.png).hexdigest()
    # Lossless all the way: the stored pixels are exactly scikit-image's.
    assert np.array_equal(pixels(result), ASTRONAUT)
    # Same input, same bytes: the hash can serve as a content key.
    assert normalize_image(demo_portrait(), LIMITS) == result


def test_downscales_long_side() -> None:
    result = normalize_image(demo_portrait(), ImageLimits(store_max_side=200))
    assert (result.width, result.height) == (200, 200)
    wide = encode(Image.new("RGB", (3000, 2000), (200, 40, 40)), "JPEG", quality=95)
    result = normalize_image(wide, LIMITS)
    assert (result.width, result.height) == (1024, 683)
    assert np.abs(pixels(result).astype(int) - (200, 40, 40)).max() <= 4


@pytest.mark.parametrize(
    ("orientation", "corner"),
    [(1, "top-left"), (3, "bottom-right"), (6, "top-right"), (8, "bottom-left")],
)
def test_exif_orientation_applied(orientation: int, corner: str) -> None:
    # Stored 400x300 with a red block at the stored top-left; the EXIF tag says how to turn it upright.
    im = Image.new("RGB", (400, 300), (128, 128, 128))
    im.paste((255, 0, 0), (0, 0, 60, 60))
    exif = Image.Exif()
    exif[0x0112] = orientation
    result = normalize_image(encode(im, "JPEG", quality=95, exif=exif.tobytes()), LIMITS)
    turned = orientation in (6, 8)
    assert (result.width, result.height) == ((300, 400) if turned else (400, 300))
    out = pixels(result).astype(int)
    w, h = result.width, result.height
    spots = {
        "top-left": (20, 20),
        "top-right": (20, w - 20),
        "bottom-left": (h - 20, 20),
        "bottom-right": (h - 20, w - 20),
    }
    for name, (y, x) in spots.items():
        red = out[y, x, 0] > 200 and out[y, x, 1] < 60
        assert red == (name == corner), (name, out[y, x])


@pytest.mark.parametrize(
    ("make", "fmt", "left", "right"),
    [
        # Transparent pixels come out white, opaque ones keep their colour.
        (lambda: two_halves("RGBA", (255, 0, 0, 0), (0, 0, 255, 255)), "PNG", (255, 255, 255), (0, 0, 255)),
        (lambda: two_halves("RGBA", (0, 0, 0, 128), (0, 0, 0, 128)), "WEBP", (127, 127, 127), (127, 127, 127)),
        (lambda: two_halves("LA", (0, 0), (60, 255)), "PNG", (255, 255, 255), (60, 60, 60)),
        (lambda: two_halves("L", 30, 220), "PNG", (30, 30, 30), (220, 220, 220)),
        (lambda: two_halves("1", 0, 1), "PNG", (0, 0, 0), (255, 255, 255)),
        (lambda: two_halves("CMYK", (0, 0, 0, 0), (0, 255, 255, 0)), "JPEG", (255, 255, 255), (255, 0, 0)),
        # 16-bit greyscale: half of 65535 must be mid grey, not clipped to white.
        (lambda: two_halves("I;16", 0x8000, 0xFFFF), "PNG", (128, 128, 128), (255, 255, 255)),
    ],
)
def test_modes_become_rgb(make: Any, fmt: str, left: tuple[int, int, int], right: tuple[int, int, int]) -> None:
    source = make()
    data = encode(source, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    if fmt == "PNG":
        assert Image.open(io.BytesIO(data)).mode == source.mode  # the test really feeds that mode in
    out = pixels(normalize_image(data, LIMITS)).astype(int)
    assert np.abs(out[150, 40] - left).max() <= 3, out[150, 40]
    assert np.abs(out[150, 260] - right).max() <= 3, out[150, 260]


def test_palette_with_transparency_becomes_rgb_on_white() -> None:
    im = Image.new("P", (300, 300), 0)
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * (254 * 3))
    im.paste(1, (150, 0, 300, 300))
    for fmt in ("PNG", "GIF"):
        out = pixels(normalize_image(encode(im, fmt, transparency=0), LIMITS)).astype(int)
        assert tuple(out[150, 40]) == (255, 255, 255)
        assert tuple(out[150, 260]) == (10, 200, 30)


def test_single_frame_gif_accepted() -> None:
    im = Image.fromarray(ASTRONAUT).quantize(64)
    result = normalize_image(encode(im, "GIF"), LIMITS)
    assert (result.width, result.height) == (512, 512)
    assert np.abs(pixels(result).astype(int) - ASTRONAUT).mean() < 12


def test_no_metadata_survives() -> None:
    exif = Image.Exif()
    exif[0x010F] = "SpyCam Inc."  # Make
    exif[0x0131] = "secret firmware"  # Software
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo = Image.fromarray(ASTRONAUT)
    jpeg = encode(photo, "JPEG", exif=exif.tobytes(), icc_profile=icc, comment=b"taken at home", dpi=(300, 300))
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "someone")
    text.add_itxt("Location", "52.5, 13.4", zip=True)
    png = encode(photo, "PNG", pnginfo=text, icc_profile=icc, exif=exif.tobytes(), dpi=(300, 300))
    for data in (jpeg, png):
        result = normalize_image(data, LIMITS)
        assert {kind for kind, _ in png_chunks(result.png)} == {b"IHDR", b"IDAT", b"IEND"}
        stored = Image.open(io.BytesIO(result.png))
        assert stored.info == {}
        assert len(stored.getexif()) == 0


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def linear_rgb_profile() -> bytes:
    """A minimal ICC v2 display profile: sRGB primaries, but linear (gamma 1.0) transfer curves."""
    text = b"linear sRGB primaries\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 3 + 67)
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0100)  # one entry: gamma 1.0 as u8Fixed8
    tags = [
        (b"desc", desc),
        (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", _xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", _xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for sig, payload in tags:
        payload += bytes(-len(payload) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(payload))
        data += payload
    header = (
        struct.pack(">I", offset + len(data))
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(28)
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + bytes(48)
    )
    return header + table + data


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_colour_profile_converted_to_srgb(fmt: str) -> None:
    # 128 in linear light is about 188 in sRGB: dropping the profile without converting would leave 128.
    source = Image.new("RGB", (300, 300), (128, 128, 128))
    result = normalize_image(encode(source, fmt, icc_profile=linear_rgb_profile(), quality=100), LIMITS)
    assert np.abs(pixels(result)[10, 10].astype(int) - 188).max() <= 2


def test_broken_colour_profile_is_ignored() -> None:
    photo = Image.new("RGB", (300, 300), (90, 120, 150))
    result = normalize_image(encode(photo, "PNG", icc_profile=b"not a profile at all"), LIMITS)
    assert tuple(pixels(result)[10, 10]) == (90, 120, 150)


# --- what is refused ------------------------------------------------------------------------------------------


def test_empty_and_oversized_bytes() -> None:
    assert "empty" in refused(b"")
    big = demo_portrait()
    assert refused(big, ImageLimits(max_bytes=len(big) - 1)) == "The image is larger than the 0.405 MB limit."


@pytest.mark.parametrize(("width", "height"), [(255, 400), (400, 100), (16, 16)])
def test_too_small(width: int, height: int) -> None:
    message = refused(encode(Image.new("RGB", (width, height), "white"), "PNG"))
    assert f"{width}x{height}" in message
    assert "at least 256 pixels" in message


def test_header_only_bomb_refused_fast() -> None:
    before = (Image.MAX_IMAGE_PIXELS, list(warnings.filters))
    bomb = png_header_only(50_000, 50_000)
    started = time.perf_counter()
    message = refused(bomb)
    assert time.perf_counter() - started < 0.5
    assert "megapixel" in message
    assert (Image.MAX_IMAGE_PIXELS, list(warnings.filters)) == before  # nothing leaks to other code


def test_pillow_bomb_warning_is_an_error() -> None:
    # Limits looser than Pillow's own threshold (about 89 MP): its DecompressionBombWarning still refuses
    # the image instead of letting load() try to allocate 100 MP.
    limits = ImageLimits(max_pixels=1_000_000_000)
    message = refused(png_header_only(10_000, 10_000), limits)
    assert "too many pixels" in message


def test_small_file_bomb_refused_before_decoding() -> None:
    # 7000 x 7000 = 49 MP: under Pillow's own 89 MP threshold, so only our max_pixels check stops it. The zlib
    # stream is real (all-black rows) and would decode to 49 MB if anything called load().
    raw = zlib.compress(b"\x00" * (7001 * 7000), 9)
    bomb = png_header_only(7000, 7000, raw)
    assert len(bomb) < 100_000
    started = time.perf_counter()
    message = refused(bomb)
    assert time.perf_counter() - started < 0.2
    assert message == "The image claims to be 7000x7000 pixels, more than the 40 megapixel limit."
    # The same bytes are a valid image when the limit allows it: the refusal was the limit, not damage.
    assert normalize_image(bomb, ImageLimits(max_pixels=50_000_000, store_max_side=64)).width == 64


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (300, 300), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_refused(fmt: str) -> None:
    data = animated(fmt)
    assert getattr(Image.open(io.BytesIO(data)), "is_animated", False)
    assert refused(data) == ANIMATED


PDF = encode(Image.new("RGB", (300, 300), "white"), "PDF")


@pytest.mark.parametrize(
    "data",
    [
        encode(Image.new("RGB", (300, 300), "white"), "TIFF"),
        encode(Image.new("RGB", (300, 300), "white"), "BMP"),
        encode(Image.new("RGB", (256, 256), "white"), "ICO"),
        PDF,
        b'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="300"><rect width="300" height="300"/></svg>',
        b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Please log in</body></html>",
        b"just some text, not a picture\n",
        b"GIF89a",
        b"\xff\xd8",
        PNG_SIGNATURE,
    ],
    ids=["tiff", "bmp", "ico", "pdf", "svg", "html", "text", "gif-magic", "jpeg-magic", "png-magic"],
)
def test_not_an_allowed_image(data: bytes) -> None:
    assert refused(data) in (NOT_AN_IMAGE, DAMAGED)
    if not data.startswith((b"GIF", b"\xff\xd8", PNG_SIGNATURE)):
        assert refused(data) == NOT_AN_IMAGE


def test_truncated_files_refused() -> None:
    photo = Image.fromarray(ASTRONAUT)
    for fmt in ("JPEG", "PNG", "WEBP"):
        data = encode(photo, fmt)
        assert refused(data[: len(data) // 2]) == DAMAGED, fmt


def test_bad_png_checksum_refused() -> None:
    data = bytearray(encode(Image.new("RGB", (300, 300), (1, 2, 3)), "PNG"))
    data[-20] ^= 0xFF  # inside the last IDAT
    assert refused(bytes(data)) == DAMAGED


def test_damage_after_the_pixels_is_caught_by_verify() -> None:
    # A text chunk with a wrong CRC after the image data: decoding stops at the pixels and never reads it,
    # only verify() walks the whole file.
    good = encode(Image.new("RGB", (300, 300), (1, 2, 3)), "PNG")
    bad_text = bytearray(chunk(b"tEXt", b"Comment\0hello"))
    bad_text[-1] ^= 0xFF
    data = good[:-12] + bytes(bad_text) + good[-12:]  # the last 12 bytes are IEND
    Image.open(io.BytesIO(data)).load()  # Pillow's decoder alone accepts it
    assert refused(data) == DAMAGED


def test_open_png_gives_loaded_rgb() -> None:
    im = open_png(normalize_image(demo_portrait(), LIMITS).png)
    assert im.mode == "RGB"
    assert im.size == (512, 512)
    assert np.array_equal(np.asarray(im), ASTRONAUT)


# --- fuzz -----------------------------------------------------------------------------------------------------

# Small limits so mutated seeds clear the size checks and reach the decoders quickly.
FUZZ_LIMITS = ImageLimits(min_side=8, max_pixels=2_000_000, store_max_side=48)
_noise = Image.fromarray(np.random.default_rng(7).integers(0, 256, (40, 40, 3), dtype=np.uint8))
SEEDS = [
    encode(_noise, "PNG"),
    encode(_noise.convert("RGBA"), "PNG"),
    encode(_noise.convert("P"), "PNG"),
    encode(_noise, "JPEG", quality=80),
    encode(_noise.convert("P"), "GIF"),
    encode(_noise, "WEBP"),
    encode(_noise, "WEBP", lossless=True),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[pos : pos + draw(st.integers(1, 16))]
        if not data:
            break
    return bytes(data)


@st.composite
def png_with_valid_crcs(draw: st.DrawFn) -> bytes:
    """Mutate inside one chunk and fix its CRC, so the damage gets past verify() into the decoder."""
    seed = draw(st.sampled_from(SEEDS[:3]))
    chunks = png_chunks(seed)
    index = draw(st.integers(0, len(chunks) - 1))
    kind, payload = chunks[index]
    body = bytearray(payload)
    if body:
        for _ in range(draw(st.integers(1, 4))):
            body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
    chunks[index] = (kind, bytes(body))
    return PNG_SIGNATURE + b"".join(chunk(k, p) for k, p in chunks)


@settings(
    max_examples=200,
    deadline=timedelta(seconds=2),
    database=None,  # keep the tree clean; failures print their reproducing example
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.one_of(st.binary(max_size=4096), mutated(), png_with_valid_crcs()))
def test_fuzz_only_bad_image_escapes(data: bytes) -> None:
    try:
        result = normalize_image(data, FUZZ_LIMITS)
    except BadImage as exc:
        assert str(exc).endswith(".")
        return
    # Whatever got through must be a well-formed stored image.
    assert max(result.width, result.height) <= FUZZ_LIMITS.store_max_side
    assert result.sha256 == hashlib.sha256(result.png).hexdigest()
    assert open_png(result.png).size == (result.width, result.height)
