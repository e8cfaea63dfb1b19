"""The samplers /serve offers, by the names AUTOMATIC1111 gives them, and the diffusers scheduler behind each.

A job gets a fresh scheduler built from the resident one's configuration (the base model's noise schedule), so
a sampler never outlives its job and the resident pipeline keeps its own (DPM++ 2M, which regularization uses).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from daemon.errors import BadInput


@dataclass(frozen=True)
class Sampler:
    """One choice: A1111's sampler and schedule-type names (as its infotext writes them) and the scheduler."""

    name: str  # as users write it and /serve lists it
    a1111: str  # the infotext's "Sampler"
    schedule: str  # the infotext's "Schedule type"
    scheduler: str  # diffusers class name
    options: dict[str, Any] = field(default_factory=dict)  # on top of the resident scheduler's config


DEFAULT_SAMPLER = "DPM++ 2M"
SAMPLERS: dict[str, Sampler] = {
    sampler.name: sampler
    for sampler in (
        Sampler("DPM++ 2M", "DPM++ 2M", "Uniform", "DPMSolverMultistepScheduler"),
        Sampler(
            "DPM++ 2M Karras", "DPM++ 2M", "Karras", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}
        ),
        Sampler("Euler a", "Euler a", "Uniform", "EulerAncestralDiscreteScheduler"),
        Sampler("Euler", "Euler", "Uniform", "EulerDiscreteScheduler"),
        Sampler("DDIM", "DDIM", "Uniform", "DDIMScheduler"),
        Sampler("UniPC", "UniPC", "Uniform", "UniPCMultistepScheduler"),
    )
}


def _key(text: str) -> str:
    # "Euler a", "euler_a" and "EULER-A" are one sampler; "dpmpp" is how diffusers users spell "DPM++".
    return re.sub(r"[^a-z0-9+]", "", text.lower().replace("dpmpp", "dpm++"))


_BY_KEY = {_key(name): name for name in SAMPLERS}


def sampler_name(text: str) -> str:
    """The documented name of the sampler ``text`` means ("" is the default); BadInput listing them otherwise."""
    if not text.strip():
        return DEFAULT_SAMPLER
    name = _BY_KEY.get(_key(text))
    if name is None:
        raise BadInput(f"There is no sampler {text!r}; choose one of {', '.join(SAMPLERS)}.")
    return name


def make_scheduler(name: str, resident_scheduler: Any) -> Any:
    """A new scheduler for sampler ``name`` on the noise schedule of ``resident_scheduler``."""
    import diffusers

    sampler = SAMPLERS[name or DEFAULT_SAMPLER]
    cls = getattr(diffusers, sampler.scheduler)
    return cls.from_config(resident_scheduler.config, **sampler.options)
