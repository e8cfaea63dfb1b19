"""The diffusers calls behind one /serve job: text to image, image to image, and the hires pass.

All three run on the resident model's modules: the image-to-image pipeline is a second view of the same UNet,
VAE and text encoder (diffusers' ``from_pipe``), so nothing is loaded or copied twice, and the LoRAs and the
IP-Adapter switched on for the job are on for every pass. Each call gets a fresh scheduler for the job's
sampler; the resident pipeline's own scheduler is never touched.

The hires pass is AUTOMATIC1111's "hires fix": make the picture at the base size, upscale it (the latents
themselves, "Latent", or the decoded picture with PIL's Lanczos filter, "Lanczos"), then denoise the large
picture again at a moderate strength so the details are drawn at the new size rather than stretched. /upscale
runs that pass alone, with a picture made earlier in the place of the first pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from daemon.errors import JobCancelled
from daemon.jobs.contract import JobContext
from daemon.jobs.model import GenerateParams
from daemon.models.resident import Resident
from daemon.pipeline.prompt_weights import PromptEncoder
from daemon.pipeline.samplers import make_scheduler
from daemon.pipeline.train import CANCELLED

# Hires upscalers by A1111's names. "Latent" stays on the GPU; "Lanczos" decodes, resizes with PIL's Lanczos
# filter (no learned upscaler ships in a package we depend on) and encodes again.
LATENT = "Latent"
LANCZOS = "Lanczos"
UPSCALERS = (LATENT, LANCZOS)


def hires_size(width: int, height: int, scale: float, multiple: int) -> tuple[int, int]:
    """The hires pass's size: the base size times ``scale``, on the model's grid."""
    return (
        max(multiple, round(width * scale / multiple) * multiple),
        max(multiple, round(height * scale / multiple) * multiple),
    )


def denoised_steps(steps: int, strength: float) -> int:
    """How many steps image to image really runs: diffusers (like A1111) skips the first ``1 - strength``."""
    return min(int(steps * strength), steps)


@dataclass
class Denoiser:
    """The job's passes over the resident model, with progress and cancel after every step."""

    resident: Resident
    prompts: PromptEncoder
    _views: dict[str, Any] = field(default_factory=dict, init=False)

    def text_to_image(
        self, ctx: JobContext, params: GenerateParams, extra: dict[str, Any], init: Image.Image | None = None
    ) -> list[Image.Image]:
        """``params.count`` pictures at the job's size (from ``init`` when given), after the hires pass if any."""
        hires = params.hires_scale > 0
        total = self._base_steps(params, init) + (
            denoised_steps(params.hires_steps, params.hires_denoise) if hires else 0
        )
        common = self._common(params, extra)
        latent = hires and params.hires_upscaler == LATENT
        first = self._first_pass(ctx, params, init, common, total, latent)
        if not hires:
            return list(first)
        return self._hires_pass(ctx, params, first, common, total, latent)

    def upscale(
        self, ctx: JobContext, params: GenerateParams, extra: dict[str, Any], picture: Image.Image
    ) -> list[Image.Image]:
        """/upscale: the hires pass alone, over a picture already made at the job's size."""
        start = picture.convert("RGB")
        if start.size != (params.width, params.height):
            start = start.resize((params.width, params.height), Image.Resampling.LANCZOS)
        latent = params.hires_upscaler == LATENT
        # The picture takes the first pass's place: as latents for a latent upscale, else as it is.
        first: Any = [start.copy() for _ in range(params.count)]
        if latent:
            first = self._encode(first)
        total = denoised_steps(params.hires_steps, params.hires_denoise)
        return self._hires_pass(ctx, params, first, self._common(params, extra), total, latent)

    def _common(self, params: GenerateParams, extra: dict[str, Any]) -> dict[str, Any]:
        """The arguments every pass of the job shares: prompts, guidance and one generator per picture."""
        generators = [
            torch.Generator(self.resident.device).manual_seed(params.seed + i) for i in range(params.count)
        ]
        return {
            # A1111's (word:1.3) weights, through compel; unweighted prompts encode exactly as diffusers does.
            "prompt_embeds": self.prompts.embeds(params.full_prompt),
            "negative_prompt_embeds": self.prompts.embeds(params.negative_prompt),
            "guidance_scale": params.cfg,
            "num_images_per_prompt": params.count,
            "generator": generators,
            **extra,
        }

    def _hires_pass(
        self, ctx: JobContext, params: GenerateParams, first: Any, common: dict[str, Any], total: int, latent: bool
    ) -> list[Image.Image]:
        """Upscale the base pictures (latents when ``latent``) and denoise them again at the hires strength."""
        width, height = hires_size(params.width, params.height, params.hires_scale, self.resident.size_multiple)
        if latent:
            # A1111's "Latent": bilinear interpolation of the latents, which the second pass then sharpens.
            factor = self.resident.pipeline.vae_scale_factor
            upscaled: Any = torch.nn.functional.interpolate(
                first, size=(height // factor, width // factor), mode="bilinear"
            )
        else:
            upscaled = [image.resize((width, height), Image.Resampling.LANCZOS) for image in first]
        offset = total - denoised_steps(params.hires_steps, params.hires_denoise)
        result = self._image_to_image(params.sampler)(
            image=upscaled,
            strength=params.hires_denoise,
            num_inference_steps=params.hires_steps,
            callback_on_step_end=self._on_step(ctx, offset, total),
            output_type="pil",
            **common,
        )
        images: list[Image.Image] = result.images
        return images

    def _base_steps(self, params: GenerateParams, init: Image.Image | None) -> int:
        if init is None or params.init_denoise >= 1.0:
            return params.steps
        return denoised_steps(params.steps, params.init_denoise)

    def _first_pass(
        self,
        ctx: JobContext,
        params: GenerateParams,
        init: Image.Image | None,
        common: dict[str, Any],
        total: int,
        latent: bool,
    ) -> Any:
        """The base-size pictures (latents when the hires pass upscales latents)."""
        output_type = "latent" if latent else "pil"
        callback = self._on_step(ctx, 0, total)
        if init is not None and params.init_denoise < 1.0:
            start = init.convert("RGB").resize((params.width, params.height), Image.Resampling.LANCZOS)
            if params.init_denoise <= 0.0:
                # Nothing to denoise: the picture itself (as latents when a latent hires pass follows).
                if latent:
                    return self._encode([start] * params.count)
                return [start.copy() for _ in range(params.count)]
            return self._image_to_image(params.sampler)(
                image=[start] * params.count,
                strength=params.init_denoise,
                num_inference_steps=params.steps,
                callback_on_step_end=callback,
                output_type=output_type,
                **common,
            ).images
        # No picture, or one denoised all the way (--imagedenoise 1): only the size comes from it.
        return self._view("StableDiffusionPipeline", params.sampler)(
            width=params.width,
            height=params.height,
            num_inference_steps=params.steps,
            callback_on_step_end=callback,
            output_type=output_type,
            **common,
        ).images

    def _image_to_image(self, sampler: str) -> Any:
        return self._view("StableDiffusionImg2ImgPipeline", sampler)

    def _view(self, kind: str, sampler: str) -> Any:
        """A diffusers pipeline of class ``kind`` over the resident modules, with a fresh scheduler for
        ``sampler``; built once (``from_pipe`` shares every module, copies none)."""
        view = self._views.get(kind)
        if view is None:
            import diffusers

            view = getattr(diffusers, kind).from_pipe(self.resident.pipeline)
            view.set_progress_bar_config(disable=True)
            self._views[kind] = view
        view.scheduler = make_scheduler(sampler, self.resident.pipeline.scheduler)
        return view

    @torch.no_grad()
    def _encode(self, images: list[Image.Image]) -> torch.Tensor:
        pipe = self.resident.pipeline
        pixels = pipe.image_processor.preprocess(images).to(self.resident.device, dtype=self.resident.dtype)
        latents: torch.Tensor = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
        return latents

    @staticmethod
    def _on_step(ctx: JobContext, offset: int, total: int) -> Callable[[Any, int, Any, dict[str, Any]], Any]:
        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if ctx.should_stop():
                raise JobCancelled(CANCELLED)
            ctx.progress(offset + step + 1, total, what="Denoising step")
            return tensors

        return on_step_end
