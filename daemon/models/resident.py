"""The models the daemon keeps loaded: one Stable Diffusion 1.5 pipeline and one captioner, shared by every job.

``load_resident`` runs once at start. Training borrows ``unet`` for a job (adding and then removing a LoRA
adapter) and generation uses ``pipeline``; both see the same modules, so nothing is loaded twice. Everything is
frozen (eval mode, ``requires_grad`` False); only LoRA parameters ever train. An optional IP-Adapter is loaded
too, then taken off the UNet again: it goes on only for the generation that asks for it (``IpAdapter``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from daemon.models.captioner import Captioner, VlmCaptioner
from daemon.models.config import SD15_BASE_MODEL, ModelConfig
from daemon.models.demo import ensure_demo_models
from daemon.models.sd15_arch import write_config_folder

logger = logging.getLogger(__name__)

# The weights file diffusers loads by default: not a variant like ".fp16", maybe sharded.
_UNET_WEIGHTS = re.compile(r"diffusion_pytorch_model(-\d{5}-of-\d{5})?\.(safetensors|bin)")
# VAE encoder batches: big enough to keep the GPU busy, small enough for 512 px on any card we target.
ENCODE_BATCH = 8
# Denoising steps when the resident generates (regularization images); DPM-Solver++ is sharp at 25.
SAMPLE_STEPS = 25
DEMO_SAMPLE_STEPS = 4


@dataclass
class IpAdapter:
    """An IP-Adapter, loaded once, that is part of the UNet only inside ``attached``.

    Loaded, an IP-Adapter swaps the UNet's cross-attention processors and adds an image projection that every
    forward then insists on (``image_embeds``): training, regularization images and plain generations would all
    break. So the loaded parts are kept here and the UNet gets its own processors back; ``attached`` swaps them
    in for one generation and out again, which costs no I/O.
    """

    pipeline: Any  # the resident StableDiffusionPipeline; its image_encoder and feature_extractor stay registered
    processors: dict[str, Any]  # processor name -> IP-Adapter processor, holding the to_k_ip/to_v_ip weights
    projection: Any  # diffusers MultiIPAdapterImageProjection
    plain: dict[str, Any]  # the processors the UNet had before the IP-Adapter came
    source: str  # as configured, for the record

    @contextmanager
    def attached(self, scales: float | Sequence[float]) -> Iterator[None]:
        """The IP-Adapter on the UNet for the duration, one picture per scale; off again however the block ends.

        Several pictures (``/serve --adapt1..4``) each get their own scale, as several IP-Adapter units do in
        A1111 and ComfyUI: every cross-attention adds one image attention per picture, all through the same
        loaded weights.
        """
        scales = [scales] if isinstance(scales, int | float) else list(scales)
        unet = self.pipeline.unet
        # set_attn_processor pops from the dict it is given: hand it a copy.
        unet.set_attn_processor(dict(self.processors) if len(scales) == 1 else self._repeated(len(scales)))
        unet.encoder_hid_proj = self.projection if len(scales) == 1 else self._projection(len(scales))
        unet.config.encoder_hid_dim_type = "ip_image_proj"
        try:
            self.pipeline.set_ip_adapter_scale(scales)
            yield
        finally:
            self.detach()

    def _repeated(self, count: int) -> dict[str, Any]:
        """The attention processors for ``count`` pictures: each image layer listed ``count`` times (the same
        modules, so nothing is copied), with a scale of its own."""
        processors: dict[str, Any] = {}
        for name, processor in self.processors.items():
            if not hasattr(processor, "to_k_ip"):
                processors[name] = processor
                continue
            # Built empty and filled with the loaded layers: the constructor would allocate random ones.
            kind: Any = type(processor)
            twin = kind.__new__(kind)
            torch.nn.Module.__init__(twin)
            twin.hidden_size = processor.hidden_size
            twin.cross_attention_dim = processor.cross_attention_dim
            twin.num_tokens = list(processor.num_tokens) * count
            twin.scale = list(processor.scale) * count
            twin.to_k_ip = torch.nn.ModuleList(list(processor.to_k_ip) * count)
            twin.to_v_ip = torch.nn.ModuleList(list(processor.to_v_ip) * count)
            processors[name] = twin
        return processors

    def _projection(self, count: int) -> Any:
        """The image projection repeated for ``count`` pictures (the same layers)."""
        from diffusers.models.embeddings import MultiIPAdapterImageProjection

        return MultiIPAdapterImageProjection(list(self.projection.image_projection_layers) * count)

    def detach(self) -> None:
        """Give the UNet back its own attention processors and no image projection."""
        unet = self.pipeline.unet
        unet.set_attn_processor(dict(self.plain))
        unet.encoder_hid_proj = None
        unet.config.encoder_hid_dim_type = None


@dataclass
class Resident:
    """Everything loaded once and reused by every job.

    ``unet`` is shared: training adds its adapter and removes it again, and refuses to start while any other
    LoRA is loaded. Generation keeps the LoRAs it used loaded in ``pipeline`` between jobs
    (``daemon.pipeline.adapters``), so the distill pipeline unloads them all before it trains.
    """

    pipeline: Any  # diffusers.StableDiffusionPipeline
    unet: Any  # diffusers.UNet2DConditionModel
    vae: Any  # diffusers.AutoencoderKL
    text_encoder: Any  # transformers.CLIPTextModel
    tokenizer: Any  # transformers.CLIPTokenizer
    noise_scheduler: Any  # diffusers.DDPMScheduler, the training-time noise schedule
    captioner: Captioner
    device: torch.device
    dtype: torch.dtype
    base_model: str
    base_model_hash: str
    resolution: int
    sample_steps: int = SAMPLE_STEPS
    ip_adapter: IpAdapter | None = None

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: the VAE's factor times the UNet's downsampling."""
        levels = len(self.unet.config.block_out_channels)
        return int(self.pipeline.vae_scale_factor * 2 ** (levels - 1))

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image], resolution: int) -> torch.Tensor:
        """VAE latents (N x 4 x r/8 x r/8, scaled as the UNet sees them, float32 on the device) of square crops.

        Uses the posterior mean rather than a sample: the SD VAE's posterior is so narrow that sampling adds
        nothing but noise to a cache that is reused for a thousand steps.
        """
        config = self.vae.config
        shift = getattr(config, "shift_factor", None) or 0.0
        out = []
        for start in range(0, len(images), ENCODE_BATCH):
            batch = torch.stack(
                [image_tensor(image, resolution) for image in images[start : start + ENCODE_BATCH]]
            )
            batch = batch.to(self.device, dtype=self.dtype)
            mean = self.vae.encode(batch).latent_dist.mode()
            out.append(((mean.float() - shift) * config.scaling_factor).float())
        return torch.cat(out)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text-encoder hidden states (N x 77 x dim, in the resident dtype) for the UNet's cross-attention."""
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        hidden: torch.Tensor = self.text_encoder(tokens.input_ids.to(self.device))[0]
        return hidden.to(self.dtype)


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """The largest centered square of ``image``, resized to ``size`` x ``size`` RGB."""
    image = image.convert("RGB")
    side = min(image.size)
    left = (image.width - side) // 2
    top = (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    # Lanczos keeps a downscaled face sharp; the VAE sees every aliasing artifact.
    return square.resize((size, size), Image.Resampling.LANCZOS)


def image_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """A 3 x size x size float tensor in [-1, 1], the range the VAE was trained on."""
    array = np.asarray(center_crop_resize(image, size), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def sha256_files(paths: Sequence[Path]) -> str:
    """One sha256 over the concatenated bytes of ``paths`` in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def unet_weight_files(folder: Path) -> list[Path]:
    """The UNet weights file(s) that ``from_pretrained`` reads from a diffusers folder, safetensors first."""
    unet = folder / "unet"
    names = sorted(p.name for p in unet.iterdir() if _UNET_WEIGHTS.fullmatch(p.name))
    safetensors = [n for n in names if n.endswith(".safetensors")]
    chosen = safetensors or names
    if not chosen:
        raise FileNotFoundError(f"no UNet weights in {unet}")
    return [unet / name for name in chosen]


def resolve_model_config(cfg: ModelConfig, state_dir: Path) -> ModelConfig:
    """For the demo preset, build the tiny models under ``state_dir`` and point the config at them.

    Paths given explicitly (tests share one prebuilt set across many daemons) are used as they are.
    """
    if cfg.preset != "demo" or (cfg.base_model and cfg.captioner_model):
        return cfg
    base, captioner = ensure_demo_models(Path(state_dir) / "models" / "demo")
    return dataclasses.replace(cfg, base_model=str(base), captioner_model=str(captioner))


def _load_single_file(path: Path, base_config: str, dtype: torch.dtype, extra: dict[str, Any]) -> Any:
    """``from_single_file`` with local configs, so loading never asks the hub which architecture it is."""
    from diffusers import StableDiffusionPipeline

    if base_config:
        return StableDiffusionPipeline.from_single_file(
            str(path), config=base_config, local_files_only=True, dtype=dtype, **extra
        )
    from transformers import CLIPTokenizer

    # The shipped SD 1.5 configs describe the weights; only the tokenizer's vocabulary (data, ~1.5 MB) comes
    # from SD 1.5's own folder, found in the hub cache (or fetched once) like any hub model.
    tokenizer = CLIPTokenizer.from_pretrained(SD15_BASE_MODEL, subfolder="tokenizer")
    with tempfile.TemporaryDirectory(prefix="sd15-config-") as tmp:
        tokenizer_folder = Path(tmp) / "tokenizer-src"
        tokenizer.save_pretrained(tokenizer_folder)
        folder = write_config_folder(Path(tmp) / "config", tokenizer_folder)
        return StableDiffusionPipeline.from_single_file(
            str(path), config=str(folder), local_files_only=True, dtype=dtype, **extra
        )


def load_pipeline(cfg: ModelConfig, dtype: torch.dtype) -> tuple[Any, str]:
    """The base pipeline of ``cfg`` (frozen modules not yet on the device) and the sha256 of its weights."""
    from diffusers import StableDiffusionPipeline

    # No safety checker (it would hold ~1 GB of VRAM beside the models): class images never leave the daemon,
    # and /serve images go back only to the person who asked, on the operator's own machine (see README).
    no_checker: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False}
    if cfg.is_single_file:
        path = Path(cfg.base_model)
        return _load_single_file(path, cfg.base_config, dtype, no_checker), sha256_files([path])
    folder = Path(cfg.base_model)
    if not folder.is_dir():
        # A hub id: fetch (or find in the cache) first, so the exact files loaded can be hashed.
        folder = Path(StableDiffusionPipeline.download(cfg.base_model, safety_checker=None))
    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=dtype, **no_checker)  # type: ignore[no-untyped-call]
    return pipe, sha256_files(unet_weight_files(folder))


def load_ip_adapter(pipe: Any, cfg: ModelConfig) -> IpAdapter | None:
    """Load the configured IP-Adapter and its CLIP image encoder into ``pipe``, then take it off the UNet again.

    A local folder is read with ``local_files_only``, so it never reaches the hub; a hub id is fetched (or found
    in the cache) like the base model.
    """
    if not cfg.ip_adapter:
        return None
    subfolder, _, weight_name = cfg.ip_adapter_weight.rpartition("/")
    local = Path(cfg.ip_adapter).is_dir()
    logger.info("loading IP-Adapter %s (%s)", cfg.ip_adapter, cfg.ip_adapter_weight)
    plain = dict(pipe.unet.attn_processors)
    pipe.load_ip_adapter(
        cfg.ip_adapter,
        subfolder=subfolder,
        weight_name=weight_name,
        image_encoder_folder="image_encoder",
        local_files_only=local or None,
    )
    unet = pipe.unet
    processors = dict(unet.attn_processors)
    projection = unet.encoder_hid_proj
    ip_modules = [p for p in processors.values() if isinstance(p, torch.nn.Module)]
    for module in (pipe.image_encoder, projection, *ip_modules):
        module.requires_grad_(False)
        module.eval()
    adapter = IpAdapter(pipe, processors, projection, plain, cfg.ip_adapter)
    adapter.detach()
    return adapter


def load_resident(cfg: ModelConfig) -> Resident:
    """Load the base pipeline and the captioner onto the configured device, frozen, ready for every job."""
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler
    from diffusers.models.attention_processor import AttnProcessor2_0

    if not cfg.base_model or not cfg.captioner_model:
        raise ValueError("the model config names no models; call resolve_model_config first")
    device, dtype = cfg.torch_device(), cfg.torch_dtype()
    if cfg.preset == "demo" and device.type == "cpu":
        # The demo's layers are too small for intra-op threads to pay off, and on a busy 2-core machine
        # OpenMP's spinning threads made a training step ~15x slower (720 ms instead of 48 ms).
        torch.set_num_threads(1)
    logger.info("loading %s on %s as %s", cfg.base_model, device, dtype)
    pipe, base_hash = load_pipeline(cfg, dtype)
    # Training needs the model's own noise schedule; DDPM is the schedule the UNet was trained with.
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)  # type: ignore[no-untyped-call]
    # Sampling: DPM-Solver++ reaches PNDM's 50-step quality in ~25 steps, halving regularization time.
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)  # type: ignore[no-untyped-call]
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
        module.eval()
    # PyTorch SDPA (flash / memory-efficient kernels) for both training and generation.
    pipe.unet.set_attn_processor(AttnProcessor2_0())  # type: ignore[no-untyped-call]
    pipe.vae.set_attn_processor(AttnProcessor2_0())  # type: ignore[no-untyped-call]
    ip_adapter = load_ip_adapter(pipe, cfg)
    captioner = VlmCaptioner(cfg.captioner_model, device=device, dtype=dtype)
    resolution = int(pipe.vae_scale_factor * pipe.unet.config.sample_size)
    return Resident(
        pipeline=pipe,
        unet=pipe.unet,
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        noise_scheduler=noise_scheduler,
        captioner=captioner,
        device=device,
        dtype=dtype,
        base_model=cfg.base_model,
        base_model_hash=base_hash,
        resolution=resolution,
        sample_steps=DEMO_SAMPLE_STEPS if cfg.preset == "demo" else SAMPLE_STEPS,
        ip_adapter=ip_adapter,
    )
