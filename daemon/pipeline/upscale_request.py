"""Turn an /upscale request into the GenerateParams of a hires pass over a picture /serve already made.

/upscale names a picture ("<job id>-<n>.png"). Its job's record says how it was made, and the new job repeats
that: the prompt as run, the LoRAs with their weights, the negative prompt, CFG, steps, sampler, model, its
--adapt and --adaptface pictures with their weights and the picture's own seed (the job's seed + n - 1), at the
picture's size. In place of a first pass it starts from the
picture itself and runs only the hires pass: upscale (the latents, or PIL's Lanczos filter), then denoise again
at the hires strength. So the result's infotext is the one /serve --power writes for the same settings.

Who may use which picture and LoRA is the service's to check; this module decides what runs and refuses what
cannot (a picture not made by /serve, a result larger than any /serve makes).
"""

from __future__ import annotations

import dataclasses
import functools
import math

from daemon.errors import BadInput
from daemon.jobs.model import GenerateParams
from daemon.pipeline.denoise import hires_size

# The hires pass's own checks (factor range, upscaler names, enough steps) are /serve --power's.
from daemon.pipeline.serve_request import (
    MAX_ELONGATION,
    POWER_SCALE_RANGE,
    GenerationDefaults,
    ServeRequest,
    hires_fields,
)

ONLY_UPSCALE_OPTIONS = (
    "/upscale takes a picture's name, --power=1.5..2 and --upscalemethod latent|lanczos; everything else comes "
    "from the picture's own settings."
)


def not_made_by_serve(name: str) -> BadInput:
    """The refusal for a picture /upscale cannot take: a photo someone sent, or a LoRA's preview."""
    return BadInput(
        f"{name} was not made by /serve: /upscale takes a picture /serve made, such as 3f2a9c1d-1.png."
    )


@functools.cache
def largest_picture(resolution: int, multiple: int) -> tuple[int, int]:
    """The /serve picture with the most pixels: the hires pass at its largest factor over the largest base size.

    Every base size is the model's square area in some ratio within 2:1 (an --ar or an --image picture's),
    snapped to the grid: width ``snap(x)``, height ``snap(area / x)`` for x between the narrowest and the widest
    side. For each width on the grid the tallest height comes from the smallest x that still snaps to it.
    """
    area = resolution * resolution
    narrowest, widest = math.sqrt(area / MAX_ELONGATION), math.sqrt(area * MAX_ELONGATION)

    def snap(side: float) -> int:
        return max(multiple, round(side / multiple) * multiple)

    best = (0, 0)
    for width in range(snap(narrowest), snap(widest) + 1, multiple):
        smallest_x = max(narrowest, width - multiple / 2)
        if smallest_x > widest:
            continue
        size = hires_size(width, snap(area / smallest_x), POWER_SCALE_RANGE[1], multiple)
        if size[0] * size[1] > best[0] * best[1]:
            best = size
    return best


def upscale_params(
    request: ServeRequest,
    source: GenerateParams,
    seed: int,
    size: tuple[int, int],
    defaults: GenerationDefaults,
) -> GenerateParams:
    """The job that upscales ``request.upscale_image``, a picture of ``size`` made by ``source`` with ``seed``."""
    name = request.upscale_image
    options = ServeRequest(
        prompt="",
        upscale_image=name,
        power=request.power,
        power_scale=request.power_scale,
        upscale_method=request.upscale_method,
    )
    if request != options:
        raise BadInput(ONLY_UPSCALE_OPTIONS)
    if source.model and source.model not in defaults.models:
        raise BadInput(f"{name} was made with the model {source.model}, which this distillery no longer has.")
    # The hires pass draws with the picture's IP-Adapter pictures too, as A1111's does with its adapter units.
    if (source.adapts or source.adapt_image) and not defaults.adapt_available:
        raise BadInput(f"{name} was made with --adapt pictures, and this distillery has no IP-Adapter now.")
    if source.adapt_face and not defaults.face_adapt_available:
        raise BadInput(f"{name} was made with --adaptface, and this distillery has no face IP-Adapter now.")
    hires = hires_fields(dataclasses.replace(options, power=True), source.steps)
    width, height = size
    result = hires_size(width, height, hires["hires_scale"], defaults.size_multiple)
    cap = largest_picture(defaults.resolution, defaults.size_multiple)
    if result[0] * result[1] > cap[0] * cap[1]:
        scale = hires["hires_scale"]
        what = (
            f"{name} is already upscaled ({width}x{height}): {scale:g} times more"
            if source.hires_scale
            else f"{name} is {width}x{height}: upscaled {scale:g} times it"
        )
        raise BadInput(
            f"{what} would be {result[0]}x{result[1]}, larger than the largest picture /serve makes "
            f"({cap[0]}x{cap[1]})."
        )
    return dataclasses.replace(
        source,
        loras=[dataclasses.replace(use) for use in source.loras],
        seed=seed,
        count=1,
        width=width,
        height=height,
        # The upscale starts from the picture itself, not from the one its --image started from.
        init_image="",
        init_denoise=0.0,
        upscale_image=name,
        **hires,
    )
