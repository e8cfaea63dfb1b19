"""The /serve pipeline as the worker runs it: images from the resident model with distilled LoRAs switched on.

By the time a job gets here the service has resolved its request into a ``GenerateParams``: the prompt with
the LoRA names in it, the weights, the seed, the size. This module turns that into one batched diffusers call
(image ``i`` is drawn from its own generator seeded ``seed + i``, so any one image can be made again alone) and
into PNGs that carry their own recipe: a ``parameters`` text chunk in AUTOMATIC1111's infotext format, which
A1111, Forge, ComfyUI loaders and Civitai read, and a ``distillery`` chunk with the same facts as JSON.

The LoRA files and the --adapt, --adaptface and --image pictures arrive with the job (``ctx.inputs``); the
pipeline never opens the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from daemon.errors import BadInput
from daemon.jobs.contract import JobContext, Outcome, OutputImage
from daemon.jobs.model import AdaptUse, GenerateParams, JobKind, LoraUse, Stage, SubjectClass
from daemon.models.resident import Resident
from daemon.models.switch import ModelSwitcher
from daemon.pipeline.adapters import AdapterCache
from daemon.pipeline.denoise import Denoiser
from daemon.pipeline.image import open_png
from daemon.pipeline.prompt_weights import PromptEncoder
from daemon.pipeline.samplers import DEFAULT_SAMPLER, SAMPLERS
from daemon.pipeline.serve_request import NO_FACE_IP_ADAPTER, face_of_picture

logger = logging.getLogger(__name__)

# The preview's guidance: the usual SD 1.5 default, as /serve uses when the user names none.
PREVIEW_CFG = 7.0
NO_IP_ADAPTER = "Adapting to a picture (--adapt) is not available here: this distillery has no IP-Adapter."


def lora_short_hash(data: bytes) -> str:
    """A LoRA file's hash as A1111 shows it under "Lora hashes" (Civitai's AutoV3).

    That is the sha256 of the tensor data only, after the safetensors header, so editing a file's metadata
    does not change it; the first 12 hex digits.
    """
    header_size = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header_size :]).hexdigest()[:12]


def model_name(base_model: str) -> str:
    """The base model as A1111's "Model:" names a checkpoint: its file or folder name without the suffix."""
    name = Path(base_model).name
    return Path(name).stem if name.endswith((".safetensors", ".ckpt")) else name


def _quote(value: object) -> str:
    # A1111 quotes an infotext value as JSON when it holds a separator of the format itself.
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def infotext(prompt: str, negative_prompt: str, fields: Sequence[tuple[str, object]]) -> str:
    """AUTOMATIC1111's ``parameters`` text: the prompt, a "Negative prompt:" line when there is one, then
    ``Key: value`` pairs on one line."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in fields))
    return "\n".join(lines)


def png_with_text(image: Image.Image, texts: dict[str, str]) -> bytes:
    """PNG bytes of ``image`` with each of ``texts`` as a text chunk (iTXt where Latin-1 cannot hold it)."""
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _names(loras: Sequence[LoraUse]) -> str:
    names = [use.name for use in loras]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def summary(count: int, loras: Sequence[LoraUse]) -> str:
    """The sentence the chat gets with the images, e.g. "Here are your 2 images of rifttami."."""
    what = "Here is your image" if count == 1 else f"Here are your {count} images"
    return f"{what} of {_names(loras)}." if loras else f"{what}."


@dataclass
class GeneratePipeline:
    """What every generation job needs that outlives the job: the resident models and the LoRA cache."""

    resident: Resident
    adapters: AdapterCache
    models: ModelSwitcher | None = None  # several checkpoints (/serve --model); None: the base model only
    denoiser: Denoiser = field(init=False)

    def __post_init__(self) -> None:
        self.denoiser = Denoiser(self.resident, PromptEncoder(self.resident.pipeline, self.resident.dtype))

    def __call__(self, ctx: JobContext) -> Outcome:
        job = ctx.job
        params = job.generate
        if job.kind != JobKind.GENERATE or params is None:
            raise ValueError(f"job {job.id} is not a generation job")
        started = time.monotonic()
        noun = "an image" if params.count == 1 else f"{params.count} images"
        of = f" of {_names(params.loras)}" if params.loras else ""
        doing = f"Upscaling {params.upscale_image}" if params.upscale_image else f"Generating {noun}{of}"
        ctx.stage(Stage.GENERATE, f"{doing}.")

        def load(name: str) -> bytes:
            # The daemon read every LoRA of the request before dispatch (a deleted one failed the job there).
            return ctx.inputs.loras[name]

        outputs = self.render(ctx, params, load, prefix=job.id)
        logger.info("job %s: %d images in %.1f s", job.id, len(outputs), time.monotonic() - started)
        return Outcome(summary=summary(len(outputs), params.loras), images=outputs)

    def render(
        self, ctx: JobContext, params: GenerateParams, load: Callable[[str], bytes], prefix: str
    ) -> list[OutputImage]:
        """The images of ``params`` as PNGs named ``<prefix>-<n>.png``; ``load(name)`` reads a LoRA's file.

        Used by generation jobs, and by distillation for the preview of a LoRA not stored yet.
        """
        adapt = self._adapt_image(ctx, params)
        face = self._face_image(ctx, params)  # before any GPU work, so a picture without a face costs nothing
        if self.models is not None:
            self.models.ensure(params.model, lambda text: ctx.stage(Stage.GENERATE, text))
        files: dict[str, bytes] = {}

        def remember(name: str) -> bytes:
            files[name] = load(name)
            return files[name]

        self.adapters.activate(params.loras, remember)
        images = self._denoise(ctx, params, adapt, face)
        hashes = {name: lora_short_hash(data) for name, data in files.items()}
        sha256s = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        outputs = []
        for index, image in enumerate(images):
            seed = params.seed + index
            facts = self._facts(ctx.job.id, index, seed, params, sha256s)
            text = self._parameters(seed, params, hashes)
            png = png_with_text(image, {"parameters": text, "distillery": json.dumps(facts)})
            info = {
                "seed": seed,
                "width": image.width,  # after the hires pass, when there is one
                "height": image.height,
                "parameters": text,
                "loras": [{"name": use.name, "weight": use.weight} for use in params.loras],
            }
            outputs.append(OutputImage(name=f"{prefix}-{index + 1}.png", png=png, info=info))
        return outputs

    def preview(self, ctx: JobContext, name: str, subject_class: SubjectClass, lora: bytes) -> OutputImage:
        """A first picture of a just-trained LoRA (not in the store yet), at the model's own size, seed 0."""
        side = self.resident.resolution
        prompt = f"a portrait of {name} {subject_class.value}"
        params = GenerateParams(
            prompt=prompt,
            full_prompt=prompt,
            loras=[LoraUse(name=name, weight=1.0)],
            negative_prompt="",
            seed=0,
            cfg=PREVIEW_CFG,
            steps=self.resident.sample_steps,
            width=side,
            height=side,
            count=1,
        )
        [image] = self.render(ctx, params, lambda _: lora, prefix=f"{ctx.job.id}-preview")
        return image

    def _adapt_image(self, ctx: JobContext, params: GenerateParams) -> list[tuple[Image.Image, float]]:
        """The job's --adapt pictures with their weights (records from before several pictures hold one)."""
        uses = params.adapts or ([AdaptUse(params.adapt_image, params.adapt_weight)] if params.adapt_image else [])
        if uses and self.resident.ip_adapter is None:
            # The service refuses such requests; this is for one that was queued before a restart without it.
            raise BadInput(NO_IP_ADAPTER)
        return [(open_png(_picture(ctx, use.image)), use.weight) for use in uses]

    def _face_image(self, ctx: JobContext, params: GenerateParams) -> tuple[Image.Image, float] | None:
        """The --adaptface picture cropped to its face, with its weight; None without one."""
        if not params.adapt_face:
            return None
        if self.resident.ip_adapter is None or self.resident.ip_adapter.face is None:
            raise BadInput(NO_FACE_IP_ADAPTER)  # queued before a restart without it, as in _adapt_image
        return face_of_picture(_picture(ctx, params.adapt_face)), params.adapt_face_weight

    def _denoise(
        self,
        ctx: JobContext,
        params: GenerateParams,
        adapt: list[tuple[Image.Image, float]],
        face: tuple[Image.Image, float] | None = None,
    ) -> list[Image.Image]:
        """One batched run: ``count`` images, each from its own generator, progress and cancel every step."""
        extra: dict[str, Any] = {}
        ip_adapter = self.resident.ip_adapter
        attached: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if (adapt or face) and ip_adapter is not None:
            attached = ip_adapter.attached([weight for _, weight in adapt], face[1] if face else None)
            # One picture per (repeated) IP-Adapter, the face last; a lone one in diffusers' single-adapter form.
            pictures = [picture for picture, _ in adapt] + ([face[0]] if face else [])
            extra["ip_adapter_image"] = pictures[0] if len(pictures) == 1 else pictures
        init = open_png(_picture(ctx, params.init_image)) if params.init_image else None
        with attached:
            if params.upscale_image:
                picture = open_png(_picture(ctx, params.upscale_image))
                return self.denoiser.upscale(ctx, params, extra, picture)
            return self.denoiser.text_to_image(ctx, params, extra, init)

    def _parameters(self, seed: int, params: GenerateParams, hashes: dict[str, str]) -> str:
        """A1111's infotext for one image; the prompt gets A1111's ``<lora:name:weight>`` tags, so pasting it
        into A1111 with the downloaded LoRA files makes the same request there."""
        resident = self.resident
        sampler = SAMPLERS[params.sampler or DEFAULT_SAMPLER]
        tags = "".join(f" <lora:{use.name}:{use.weight:g}>" for use in params.loras)
        fields: list[tuple[str, object]] = [
            ("Steps", params.steps),
            ("Sampler", sampler.a1111),
            ("Schedule type", sampler.schedule),
            ("CFG scale", f"{params.cfg:g}"),
            ("Seed", seed),
            # A1111 writes the base size here and the final one under "Hires resize".
            ("Size", f"{params.width}x{params.height}"),
            ("Model hash", resident.base_model_hash[:10]),
            ("Model", model_name(resident.base_model)),
        ]
        if hashes:
            # A1111 strips these two characters from the names so the list stays parseable.
            pairs = (f"{name.replace(':', '').replace(',', '')}: {short}" for name, short in hashes.items())
            fields.append(("Lora hashes", ", ".join(pairs)))
        if params.adapt_image and resident.ip_adapter is not None:
            fields.append(("IP-Adapter", model_name(resident.ip_adapter.source)))
            weights = [use.weight for use in params.adapts] or [params.adapt_weight]
            fields.append(("IP-Adapter weight", ", ".join(f"{weight:g}" for weight in weights)))
        if params.adapt_face and resident.ip_adapter is not None and resident.ip_adapter.face is not None:
            fields.append(("Face IP-Adapter", model_name(resident.ip_adapter.face.weights)))
            fields.append(("Face IP-Adapter weight", f"{params.adapt_face_weight:g}"))
        if params.init_image:
            # A1111's img2img writes its strength under the same name as the hires pass does.
            fields.append(("Denoising strength", f"{params.init_denoise:g}"))
        if params.hires_scale:
            if not params.init_image:
                fields.append(("Denoising strength", f"{params.hires_denoise:g}"))
            fields.append(("Hires upscale", f"{params.hires_scale:g}"))
            fields.append(("Hires steps", params.hires_steps))
            fields.append(("Hires upscaler", params.hires_upscaler))
        return infotext(params.full_prompt + tags, params.negative_prompt, fields)

    def _facts(
        self, job_id: str, index: int, seed: int, params: GenerateParams, sha256s: dict[str, str]
    ) -> dict[str, Any]:
        """The ``distillery`` chunk: everything needed to make this one image again, as JSON."""
        resident = self.resident
        return {
            "job_id": job_id,
            "index": index + 1,
            "prompt": params.prompt,
            "full_prompt": params.full_prompt,
            "negative_prompt": params.negative_prompt,
            "seed": seed,
            "steps": params.steps,
            "cfg": params.cfg,
            "sampler": params.sampler or DEFAULT_SAMPLER,
            "width": params.width,
            "height": params.height,
            "base_model": resident.base_model,
            "base_model_sha256": resident.base_model_hash,
            "loras": [
                {"name": use.name, "weight": use.weight, "sha256": sha256s[use.name]} for use in params.loras
            ],
            "adapt": {"image": params.adapt_image, "weight": params.adapt_weight} if params.adapt_image else None,
            "adapts": [{"image": use.image, "weight": use.weight} for use in params.adapts],
            "adapt_face": {"image": params.adapt_face, "weight": params.adapt_face_weight}
            if params.adapt_face
            else None,
            "hires": {
                "scale": params.hires_scale,
                "steps": params.hires_steps,
                "denoise": params.hires_denoise,
                "upscaler": params.hires_upscaler,
            }
            if params.hires_scale
            else None,
            "image": {"name": params.init_image, "denoise": params.init_denoise} if params.init_image else None,
            "upscaled_from": params.upscale_image or None,
        }


def _picture(ctx: JobContext, name: str) -> bytes:
    """A stored picture the job names (--adapt, --adaptface, --image), read by the daemon before dispatch."""
    try:
        return ctx.inputs.pictures[name]
    except KeyError:
        raise ValueError(f"job {ctx.job.id} reached the pipeline without its picture {name}") from None
