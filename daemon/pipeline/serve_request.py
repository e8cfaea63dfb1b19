"""Turn a /serve request into the GenerateParams a generation job runs with: limits, size, weights, prompt.

Everything here is decided when the job is accepted, so the job record says exactly what will run (and what
ran): the seed when the user gave none, the pixel size for an aspect ratio, each LoRA's weight, and the prompt
with each LoRA's name added where the user did not write it.
"""

from __future__ import annotations

import io
import math
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from daemon.errors import BadInput
from daemon.jobs.model import AdaptUse, GenerateParams, LoraRecord, LoraUse
from daemon.pipeline import prompt_weights
from daemon.pipeline.denoise import LATENT, UPSCALERS, denoised_steps
from daemon.pipeline.face import crop_face
from daemon.pipeline.image import open_png
from daemon.pipeline.samplers import sampler_name

MAX_LORAS = 5
MAX_IMAGES = 4
MAX_STEPS = 100
MAX_PROMPT = 1000
CFG_RANGE = (1.0, 20.0)
# A LoRA's weight beyond +-2 only burns the image; negative weights push away from the subject, which is legal.
WEIGHT_RANGE = (-2.0, 2.0)
# Aspect ratios are small whole numbers, and SD 1.5 falls apart beyond 2:1 either way.
MAX_RATIO_TERM = 8
MAX_ELONGATION = 2.0
MAX_SEED = 2**32 - 1
MAX_ADAPTS = 4
# The hires pass (--power): A1111's usual factors, and a denoising strength that redraws details but keeps the
# composition (A1111 suggests 0.5-0.7 for latent upscaling).
POWER_SCALE = 2.0
POWER_SCALE_RANGE = (1.5, 2.0)
POWER_DENOISE = 0.55
# Image to image: A1111's default denoising strength.
IMAGE_DENOISE = 0.75
NO_FACE_IP_ADAPTER = "--adaptface is not available: this distillery has no face IP-Adapter configured."
NO_FACE = "I found no face in the --adaptface picture: send a clear, front-facing photo of one person."


@dataclass(frozen=True)
class GenerationDefaults:
    """What the loaded models allow, given to the service once they are resident."""

    resolution: int  # the base model's native square side (512 for SD 1.5)
    size_multiple: int  # width and height must be multiples of this (VAE factor x UNet downsampling)
    steps: int  # denoising steps when the request names none
    cfg: float = 7.0
    adapt_available: bool = False  # an IP-Adapter is loaded
    face_adapt_available: bool = False  # and a face IP-Adapter beside it (--adaptface)
    adapt_weight: float = 0.6
    models: tuple[str, ...] = ()  # the /serve --model names the operator configured


@dataclass
class AdaptPicture:
    """One --adapt picture as requested: a stored image or a link, and its weight (None: the default)."""

    image: str = ""
    url: str = ""
    weight: float | None = None


@dataclass
class ServeRequest:
    """A /serve request as the frontend sent it; ``None`` and 0 mean "the default"."""

    prompt: str
    loras: list[tuple[str, float | None]] = field(default_factory=list)
    negative_prompt: str = ""
    seed: int | None = None
    cfg: float | None = None
    steps: int = 0
    aspect_ratio: str = ""
    adapt_image: str = ""
    adapt_url: str = ""
    adapt_weight: float | None = None
    count: int = 0
    sampler: str = ""  # "": the default
    power: bool = False  # the hires pass
    power_scale: float | None = None  # its upscale factor, 1.5..2 (default 2)
    upscale_method: str = ""  # "latent" (default) or "lanczos"
    init_image: str = ""  # image to image from a stored picture...
    init_url: str = ""  # ...or one fetched from a link
    init_denoise: float | None = None  # how much of it is redrawn, 0..1 (default 0.75)
    more_adapts: list[AdaptPicture] = field(default_factory=list)  # --adapt2..4, after adapt_image/adapt_url
    adapt_face: str = ""  # --adaptface: a picture for a face IP-Adapter
    adapt_face_weight: float | None = None  # its weight (None: the default)
    model: str = ""  # --model: one of the operator's checkpoints; "": the base model
    upscale_image: str = ""  # /upscale: a picture /serve made, for the hires pass alone (upscale_request.py)

    @property
    def adapt_pictures(self) -> list[AdaptPicture]:
        """Every --adapt picture in order, the first one included."""
        first = [AdaptPicture(self.adapt_image, self.adapt_url, self.adapt_weight)]
        return [p for p in (*first, *self.more_adapts) if p.image or p.url]

    @property
    def face_picture(self) -> AdaptPicture | None:
        """The --adaptface picture, a stored image or a link (the one field carries either); None without."""
        value = self.adapt_face.strip()
        if not value:
            return None
        if value.lower().startswith(("http://", "https://")):
            return AdaptPicture(url=value)
        return AdaptPicture(image=value)


def auto_weight(count: int) -> float:
    """The weight each of ``count`` stacked LoRAs gets when the user names none: 1, 0.85, 0.7, 0.6, 0.5.

    Stacked LoRAs add up in the same layers; at full weight each, three faces already overcook the image.
    """
    return (1.0, 0.85, 0.7, 0.6, 0.5)[min(max(count, 1), MAX_LORAS) - 1]


def parse_aspect_ratio(text: str) -> tuple[int, int]:
    """``"W:H"`` as two small whole numbers; "" is square."""
    if not text.strip():
        return 1, 1
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not match:
        raise BadInput(f"The aspect ratio {text!r} should look like 2:3.")
    w, h = int(match.group(1)), int(match.group(2))
    if not (1 <= w <= MAX_RATIO_TERM and 1 <= h <= MAX_RATIO_TERM):
        raise BadInput(f"Each side of the aspect ratio must be between 1 and {MAX_RATIO_TERM}.")
    if max(w / h, h / w) > MAX_ELONGATION:
        raise BadInput("The aspect ratio may be at most 2:1 (or 1:2).")
    return w, h


def size_for(aspect_ratio: str, resolution: int, multiple: int) -> tuple[int, int]:
    """Width and height with about the pixels of a ``resolution`` square, in the ratio, on the model's grid."""
    w, h = parse_aspect_ratio(aspect_ratio)
    return _sides(w / h, resolution, multiple)


def _sides(ratio: float, resolution: int, multiple: int) -> tuple[int, int]:
    area = resolution * resolution
    width = math.sqrt(area * ratio)
    height = area / width

    def snap(side: float) -> int:
        return max(multiple, round(side / multiple) * multiple)

    return snap(width), snap(height)


def with_activation_words(prompt: str, loras: list[LoraRecord]) -> str:
    """The prompt with "<name> <class>" in front for each LoRA whose name the prompt does not use.

    Training taught the name as a word for the person ("a photo of rifttami man"), so that is how to call it.
    """
    words = set(re.findall(r"\w+", prompt.lower()))
    missing = [f"{lora.name} {lora.subject_class.value}" for lora in loras if lora.name not in words]
    return ", ".join(part for part in (*missing, prompt.strip()) if part)


def resolve(request: ServeRequest, loras: list[LoraRecord], defaults: GenerationDefaults) -> GenerateParams:
    """Check a request against the limits and fill in every default; ``loras`` in the request's order."""
    if len(request.prompt) > MAX_PROMPT or len(request.negative_prompt) > MAX_PROMPT:
        raise BadInput(f"Prompts are limited to {MAX_PROMPT} characters.")
    if not request.prompt.strip() and not loras:
        raise BadInput("Write what to generate, or name a LoRA with --lora.")
    prompt_weights.check(request.prompt)
    prompt_weights.check(request.negative_prompt)
    if len(request.loras) > MAX_LORAS:
        raise BadInput(f"At most {MAX_LORAS} LoRAs can be used at once.")
    names = [name for name, _ in request.loras]
    if len(set(names)) != len(names):
        raise BadInput("Name each LoRA once.")
    count = request.count or 1
    if not 1 <= count <= MAX_IMAGES:
        raise BadInput(f"Ask for 1 to {MAX_IMAGES} images.")
    steps = request.steps or defaults.steps
    if not 1 <= steps <= MAX_STEPS:
        raise BadInput(f"Use 1 to {MAX_STEPS} steps.")
    cfg = defaults.cfg if request.cfg is None else request.cfg
    if not CFG_RANGE[0] <= cfg <= CFG_RANGE[1] or math.isnan(cfg):
        raise BadInput(f"The CFG scale must be between {CFG_RANGE[0]:g} and {CFG_RANGE[1]:g}.")
    seed = secrets.randbelow(MAX_SEED + 1) if request.seed is None else request.seed
    if not 0 <= seed <= MAX_SEED:
        raise BadInput(f"The seed must be between 0 and {MAX_SEED}.")
    adapts = _adapts(request, defaults)
    model = request.model.strip().lower()
    if model and model not in defaults.models:
        known = f"choose one of {', '.join(defaults.models)}" if defaults.models else "there is only the base"
        raise BadInput(f"There is no model called {request.model}; {known}.")
    uses = []
    for (name, weight), lora in zip(request.loras, loras, strict=True):
        if weight is None:
            weight = auto_weight(len(loras))
        if not WEIGHT_RANGE[0] <= weight <= WEIGHT_RANGE[1] or math.isnan(weight):
            raise BadInput(f"The weight of {name} must be between {WEIGHT_RANGE[0]:g} and {WEIGHT_RANGE[1]:g}.")
        uses.append(LoraUse(name=lora.name, weight=round(weight, 3)))
    width, height = size_for(request.aspect_ratio, defaults.resolution, defaults.size_multiple)
    hires = hires_fields(request, steps)
    init = _image_to_image(request, steps)
    return GenerateParams(
        prompt=request.prompt.strip(),
        full_prompt=with_activation_words(request.prompt, loras),
        loras=uses,
        negative_prompt=request.negative_prompt.strip(),
        seed=seed,
        cfg=cfg,
        steps=steps,
        width=width,
        height=height,
        count=count,
        adapt_image=adapts[0].image if adapts else "",
        adapt_weight=adapts[0].weight if adapts else 0.0,
        adapts=adapts,
        model=model,
        sampler=sampler_name(request.sampler),
        **hires,
        **init,
        **_adapt_face(request, defaults),
    )


def _adapts(request: ServeRequest, defaults: GenerationDefaults) -> list[AdaptUse]:
    """Each --adapt picture with its weight; a link's picture gets its name when the job is stored."""
    pictures = request.adapt_pictures
    if not pictures:
        return []
    if not defaults.adapt_available:
        raise BadInput("--adapt is not available: this distillery has no IP-Adapter model configured.")
    if len(pictures) > MAX_ADAPTS:
        raise BadInput(f"Use at most {MAX_ADAPTS} --adapt pictures.")
    uses = []
    for picture in pictures:
        weight = defaults.adapt_weight if picture.weight is None else picture.weight
        if not 0.0 <= weight <= 1.0 or math.isnan(weight):
            raise BadInput("The adapt weight must be between 0 and 1.")
        uses.append(AdaptUse(image=picture.image, weight=weight))
    return uses


def _adapt_face(request: ServeRequest, defaults: GenerationDefaults) -> dict[str, Any]:
    """The face IP-Adapter's GenerateParams fields; none without --adaptface. It is a unit of its own beside
    the --adapt pictures (not one of their four), with its own weight; a link's picture is named once stored.
    """
    picture = request.face_picture
    if picture is None:
        if request.adapt_face_weight is not None:
            raise BadInput("--adaptfaceweight goes with --adaptface.")
        return {}
    if not defaults.face_adapt_available:
        raise BadInput(NO_FACE_IP_ADAPTER)
    weight = defaults.adapt_weight if request.adapt_face_weight is None else request.adapt_face_weight
    if not 0.0 <= weight <= 1.0 or math.isnan(weight):
        raise BadInput("The adaptface weight must be between 0 and 1.")
    return {"adapt_face": picture.image, "adapt_face_weight": weight}


def _image_to_image(request: ServeRequest, steps: int) -> dict[str, Any]:
    """The image-to-image GenerateParams fields; none without --image. A link's picture is named once stored."""
    if not (request.init_image or request.init_url):
        if request.init_denoise is not None:
            raise BadInput("--imagedenoise goes with --image.")
        return {}
    if request.aspect_ratio.strip():
        raise BadInput("With --image the picture sets the aspect ratio: leave out --ar.")
    denoise = IMAGE_DENOISE if request.init_denoise is None else request.init_denoise
    if not 0.0 <= denoise <= 1.0 or math.isnan(denoise):
        raise BadInput("--imagedenoise must be between 0 (keep the picture) and 1 (redraw it all).")
    if 0.0 < denoise < 1.0 and denoised_steps(steps, denoise) < 1:
        raise BadInput(f"With --imagedenoise {denoise:g}, {steps} steps redraw nothing: use more steps.")
    return {"init_image": request.init_image, "init_denoise": denoise}


def face_of_picture(png: bytes) -> Image.Image:
    """An --adaptface picture cropped to its face (what the "plus face" model was trained on), or BadInput
    without one. The service calls it before a job waits in the queue; the worker, for the crop itself."""
    face = crop_face(open_png(png))
    if face is None:
        raise BadInput(NO_FACE)
    return face


def picture_size(png: bytes) -> tuple[int, int]:
    """Width and height of a stored picture, from its header."""
    with Image.open(io.BytesIO(png)) as image:
        return image.size


def fit_picture(params: GenerateParams, size: tuple[int, int], defaults: GenerationDefaults) -> None:
    """Give an image-to-image job the picture's aspect ratio (within 2:1) at the model's native pixel count."""
    ratio = min(max(size[0] / size[1], 1 / MAX_ELONGATION), MAX_ELONGATION)
    params.width, params.height = _sides(ratio, defaults.resolution, defaults.size_multiple)


def hires_fields(request: ServeRequest, steps: int) -> dict[str, Any]:
    """The hires pass's GenerateParams fields (/serve --power, and /upscale's whole job); none without --power."""
    if not request.power:
        if request.upscale_method or request.power_scale is not None:
            raise BadInput("--upscalemethod and the upscale factor go with --power.")
        return {}
    scale = POWER_SCALE if request.power_scale is None else request.power_scale
    if not POWER_SCALE_RANGE[0] <= scale <= POWER_SCALE_RANGE[1] or math.isnan(scale):
        low, high = POWER_SCALE_RANGE
        raise BadInput(f"--power upscales {low:g} to {high:g} times.")
    upscaler = {name.lower(): name for name in UPSCALERS}.get(request.upscale_method.strip().lower() or "latent")
    if upscaler is None:
        raise BadInput(f"--upscalemethod takes {' or '.join(name.lower() for name in UPSCALERS)}.")
    if denoised_steps(steps, POWER_DENOISE) < 1:
        raise BadInput("--power needs at least 2 steps.")
    return {
        "hires_scale": scale,
        "hires_steps": steps,  # A1111's "Hires steps" default: as many as the first pass
        "hires_denoise": POWER_DENOISE,
        "hires_upscaler": upscaler or LATENT,
    }
