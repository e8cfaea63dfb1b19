"""The models the daemon keeps loaded: one Stable Diffusion 1.5 pipeline and one captioner, shared by every job.

``load_resident`` runs once at start. Training borrows ``unet`` for a job (adding and then removing a LoRA
adapter) and generation uses ``pipeline``; both see the same modules, so nothing is loaded twice. Everything is
frozen (eval mode, ``requires_grad`` False); only LoRA parameters ever train. An optional IP-Adapter (and face
IP-Adapter) is loaded too, then taken off the UNet again: it goes on only for the generation that asks for it
(``IpAdapter``).
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
from daemon.models.demo import IP_ADAPTER_DIR, ensure_demo_models
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
class IpAdapterUnit:
    """One loaded IP-Adapter model: its image attention in every cross-attention layer and its image projection."""

    weights: str  # the weights file, as configured (models/ip-adapter_sd15.safetensors)
    processors: dict[str, Any]  # cross-attention processor name -> IP-Adapter processor (to_k_ip/to_v_ip)
    # diffusers' ImageProjection (the plain model: CLIP's image embedding) or IPAdapterPlusImageProjection (the
    # "plus" models: a Resampler over the encoder's penultimate hidden states, which the pipeline then reads).
    projection: Any


@dataclass
class IpAdapter:
    """The IP-Adapters, loaded once, that are part of the UNet only inside ``attached``.

    Loaded, an IP-Adapter swaps the UNet's cross-attention processors and adds an image projection that every
    forward then insists on (``image_embeds``): training, regularization images and plain generations would all
    break. So the loaded parts are kept here and the UNet gets its own processors back; ``attached`` swaps them
    in for one generation and out again, which costs no I/O. Both models share the CLIP image encoder.
    """

    pipeline: Any  # the resident StableDiffusionPipeline; its image_encoder and feature_extractor stay registered
    picture: IpAdapterUnit  # /serve --adapt
    plain: dict[str, Any]  # the processors the UNet had before the IP-Adapter came
    source: str  # as configured, for the record
    face: IpAdapterUnit | None = None  # /serve --adaptface, when configured

    @contextmanager
    def attached(self, scales: float | Sequence[float], face: float | None = None) -> Iterator[None]:
        """The IP-Adapter on the UNet for the duration, one picture per scale, then the face IP-Adapter's picture
        when ``face`` (its scale) is given; off again however the block ends.

        Several pictures (``/serve --adapt1..4``) each get their own scale, as several IP-Adapter units do in
        A1111 and ComfyUI: every cross-attention adds one image attention per picture, all through the same
        loaded weights. The pipeline's ``ip_adapter_image`` takes the pictures in that order.
        """
        from diffusers.models.embeddings import MultiIPAdapterImageProjection

        scales = [scales] if isinstance(scales, int | float) else list(scales)
        units = [self.picture] * len(scales)
        if face is not None:
            if self.face is None:
                raise ValueError("no face IP-Adapter is loaded")
            units.append(self.face)
            scales.append(face)
        unet = self.pipeline.unet
        # Processors first: a "plus" projection holds attention layers of its own, which set_attn_processor
        # would count (and want processors for) once the projection is on the UNet.
        unet.set_attn_processor(self._processors(units))
        unet.encoder_hid_proj = MultiIPAdapterImageProjection([unit.projection for unit in units])
        unet.config.encoder_hid_dim_type = "ip_image_proj"
        try:
            self.pipeline.set_ip_adapter_scale(scales)
            yield
        finally:
            self.detach()

    def _processors(self, units: Sequence[IpAdapterUnit]) -> dict[str, Any]:
        """The UNet's attention processors with one image attention per unit in every cross-attention layer (the
        loaded layers themselves, so nothing is copied), each with a scale of its own."""
        processors: dict[str, Any] = {}
        for name, own in self.plain.items():
            loaded = [unit.processors[name] for unit in units if name in unit.processors]
            # Self-attentions have no image attention: they keep the UNet's own processor.
            if not loaded:
                processors[name] = own
                continue
            # Built empty and filled with the loaded layers: the constructor would allocate random ones.
            kind: Any = type(loaded[0])
            twin = kind.__new__(kind)
            torch.nn.Module.__init__(twin)
            twin.hidden_size = loaded[0].hidden_size
            twin.cross_attention_dim = loaded[0].cross_attention_dim
            twin.num_tokens = [tokens for processor in loaded for tokens in processor.num_tokens]
            twin.scale = [scale for processor in loaded for scale in processor.scale]
            twin.to_k_ip = torch.nn.ModuleList([layer for processor in loaded for layer in processor.to_k_ip])
            twin.to_v_ip = torch.nn.ModuleList([layer for processor in loaded for layer in processor.to_v_ip])
            processors[name] = twin
        return processors

    def detach(self) -> None:
        """Give the UNet back its own attention processors and no image projection."""
        unet = self.pipeline.unet
        # Projection first, for the same reason as in ``attached``.
        unet.encoder_hid_proj = None
        unet.config.encoder_hid_dim_type = None
        unet.set_attn_processor(dict(self.plain))


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
    """For the demo preset, build the tiny models under ``state_dir`` and point the config at them (the
    IP-Adapters too, unless one is configured).

    Paths given explicitly (tests share one prebuilt set across many daemons) are used as they are.
    """
    if cfg.preset != "demo" or (cfg.base_model and cfg.captioner_model):
        return cfg
    root = Path(state_dir) / "models" / "demo"
    base, captioner = ensure_demo_models(root)
    resolved = dataclasses.replace(cfg, base_model=str(base), captioner_model=str(captioner))
    if cfg.ip_adapter:
        return resolved
    # The demo's own IP-Adapters, so /serve --adapt and --adaptface work on it too.
    return dataclasses.replace(resolved, ip_adapter=str(root / IP_ADAPTER_DIR), face_ip_adapter=True)


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
    """Load the configured IP-Adapter (and the face IP-Adapter when switched on) with their CLIP image encoder
    into ``pipe``, then take them off the UNet again.

    A local folder is read with ``local_files_only``, so it never reaches the hub; a hub id is fetched (or found
    in the cache) like the base model.
    """
    if not cfg.ip_adapter:
        return None
    plain = dict(pipe.unet.attn_processors)
    picture = _load_unit(pipe, cfg.ip_adapter, cfg.ip_adapter_weight, plain)
    adapter = IpAdapter(pipe, picture, plain, cfg.ip_adapter)
    adapter.detach()
    if cfg.face_ip_adapter:
        # One after the other: each load replaces the last on the UNet, and the encoder is loaded only once.
        adapter.face = _load_unit(pipe, cfg.ip_adapter, cfg.face_ip_adapter_weight, plain)
        adapter.detach()
    return adapter


def _load_unit(pipe: Any, source: str, weights: str, plain: dict[str, Any]) -> IpAdapterUnit:
    """One IP-Adapter model loaded through diffusers and left on the UNet; its parts frozen."""
    subfolder, _, weight_name = weights.rpartition("/")
    logger.info("loading IP-Adapter %s (%s)", source, weights)
    pipe.load_ip_adapter(
        source,
        subfolder=subfolder,
        weight_name=weight_name,
        image_encoder_folder="image_encoder",
        local_files_only=Path(source).is_dir() or None,
    )
    unet = pipe.unet
    # The UNet's own cross-attentions only: a "plus" projection's attention layers are listed too while it is on.
    processors = {
        name: processor
        for name, processor in unet.attn_processors.items()
        if name in plain and hasattr(processor, "to_k_ip")
    }
    [projection] = unet.encoder_hid_proj.image_projection_layers
    for module in (pipe.image_encoder, projection, *processors.values()):
        module.requires_grad_(False)
        module.eval()
    return IpAdapterUnit(weights, processors, projection)


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
