"""Tiny random-weight stand-ins for the real models, built locally so the demo and the tests need no hub.

``ensure_demo_models`` writes three folders:

* ``sd15-tiny``: a Stable Diffusion 1.5-shaped diffusers pipeline (UNet, 3-level VAE, CLIP text encoder, CLIP
  BPE tokenizer, PNDM scheduler as SD 1.5 ships it, no safety checker) at 64 px (16x16 latents), small enough
  that one training step takes tens of milliseconds on two CPU cores.
* ``vlm-tiny``: a LLaVA-shaped image-text-to-text model (tiny CLIP vision tower + tiny Llama) with a processor
  and chat template, loadable with ``AutoProcessor`` + ``AutoModelForImageTextToText`` like a real instruct VLM.
* ``ip-adapter-tiny``: IP-Adapters for that UNet in h94/IP-Adapter's layout: ``models/image_encoder`` (a tiny
  CLIP vision model), the plain ``models/ip-adapter_sd15.safetensors`` (/serve --adapt) and the "plus face"
  ``models/ip-adapter-plus-face_sd15.safetensors`` (/serve --adaptface, a Resampler over the encoder's
  penultimate hidden states), in the original checkpoints' key names.

All are then loaded through the very code path real weights take. Random weights caption in word salad; that
is expected.

The CLIP tokenizer is real byte-pair encoding in CLIP's layout, learned here from a deterministic synthetic
corpus: ``daemon.pipeline.name`` mints LoRA names from its rare merges, so it needs thousands of them, with
plenty of 3-6 letter alphabetic pieces both word-final (``</w>``) and word-internal.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import random
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

BASE_DIR = "sd15-tiny"
CAPTIONER_DIR = "vlm-tiny"
IP_ADAPTER_DIR = "ip-adapter-tiny"
MARKER = "BUILT"
# Bumped whenever the recipe changes, so an old build in a state directory is rebuilt rather than reused.
RECIPE_VERSION = "3"

WORD_END = "</w>"
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
# 512 byte symbols + merges + 2 specials; big enough to mint names from, small enough to learn in a second.
CLIP_VOCAB_SIZE = 4096
SEED = 1234
# The "plus" Resampler as h94 ships it: 4 blocks (diffusers builds 4 whatever the file holds), 64-wide attention
# heads, 16 query tokens, a feed-forward 4 times as wide.
RESAMPLER_DEPTH = 4
RESAMPLER_HEAD = 64
FACE_TOKENS = 16
FFN_RATIO = 4

# Words a portrait caption uses, so the demo tokenizers have whole tokens for them like a real one does.
PORTRAIT_WORDS = """
a an the of with and in on at wearing his her their photo photograph portrait picture image painting drawing
sketch illustration render close up headshot selfie studio man woman person men women people boy girl guy lady
gentleman male female child adult young old elderly middle aged teenager smiling smile laughing serious neutral
expression calm happy looking camera face eyes nose mouth lips beard mustache glasses hat cap hair short long
curly straight wavy blond blonde brown black red gray grey white dark light bald ponytail braid bun shirt suit
jacket dress sweater hoodie coat tie uniform spacesuit blue green yellow orange pink purple background outdoor
indoor office street park wall sky flag blurred plain soft natural lighting sunlight shadow color colour
monochrome realistic digital art oil film style in front
""".split()  # noqa: SIM905 - a word list reads better as prose

_ONSETS = [
    "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
    "br", "cr", "dr", "fl", "gr", "kl", "pr", "st", "tr", "sh", "ch", "th", "sk", "pl", "qu", "",
]  # fmt: skip
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "y", "io", "ee", "oa"]
_CODAS = ["", "", "", "n", "r", "s", "l", "m", "t", "k", "x", "nd", "st", "rn", "ll", "ck"]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table: printable bytes map to themselves."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, str] = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            # Whitespace and control bytes get stand-ins above 255 so every token stays visible text.
            table[b] = chr(256 + shifted)
            shifted += 1
    # CLIP numbers the alphabet in this order: printable ranges first, then the stand-ins.
    return {b: table[b] for b in [*printable, *sorted(set(range(256)) - set(printable))]}


def synthetic_word_counts(seed: int = SEED) -> Counter[str]:
    """A deterministic Zipf-shaped corpus: English portrait words plus pronounceable pseudo-words."""
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    for rank, word in enumerate(PORTRAIT_WORDS, start=1):
        counts[word] += 20000 // rank + 500
    pseudo: list[str] = []
    seen = set(PORTRAIT_WORDS)
    while len(pseudo) < 9000:
        syllables = rng.choice((2, 2, 2, 3, 3, 4))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))
        if 4 <= len(word) <= 12 and word not in seen:
            seen.add(word)
            pseudo.append(word)
    for rank, word in enumerate(pseudo, start=1):
        # Zipf tail: frequent pseudo-words become whole tokens, rare ones stay split into syllables. The
        # floor of 2 keeps even the last merges above ties of single counts, which would learn alphabetically.
        counts[word] += max(2, int(2000 / rank**0.7))
    return counts


def learn_clip_bpe(counts: Counter[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn byte-pair merges over ``counts`` and lay them out as CLIP does.

    Ids 0-255 are the byte alphabet, 256-511 the same symbols word-final (``</w>``), then one token per merge in
    the order learned (so a high id means a rare piece), then the two specials. Words must be lowercase ASCII
    letters, which the byte table maps to themselves.
    """
    alphabet = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in [*alphabet, *(a + WORD_END for a in alphabet)]:
        vocab[symbol] = len(vocab)
    n_merges = vocab_size - len(vocab) - 2

    words = [[*word[:-1], word[-1] + WORD_END] for word in counts]
    freqs = list(counts.values())
    pair_counts: Counter[tuple[str, str]] = Counter()
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for index, symbols in enumerate(words):
        for pair in itertools.pairwise(symbols):
            pair_counts[pair] += freqs[index]
            where[pair].add(index)
    # Max-heap by (count, pair) with lazy deletion: an entry is live only while its count is current.
    # Ties break on the pair itself so the same corpus always gives the same merges.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    banned: set[tuple[str, str]] = set()
    while len(merges) < n_merges and heap:
        negative, pair = heapq.heappop(heap)
        if pair in banned or pair_counts.get(pair, 0) != -negative or negative == 0:
            continue
        merged = pair[0] + pair[1]
        if merged in vocab:
            # Another merge order already made this string; a second id for it would break CLIP's layout.
            banned.add(pair)
            continue
        vocab[merged] = len(vocab)
        merges.append(pair)
        touched: set[tuple[str, str]] = set()
        for index in sorted(where.pop(pair)):
            symbols = words[index]
            freq = freqs[index]
            for old in itertools.pairwise(symbols):
                pair_counts[old] -= freq
                touched.add(old)
            out: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                    out.append(merged)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            words[index] = out
            for new in itertools.pairwise(out):
                pair_counts[new] += freq
                where[new].add(index)
                touched.add(new)
        pair_counts.pop(pair, None)
        for changed in touched:
            if changed != pair and pair_counts.get(changed, 0) > 0:
                heapq.heappush(heap, (-pair_counts[changed], changed))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, merges


def build_clip_tokenizer(vocab_size: int = CLIP_VOCAB_SIZE) -> Any:
    """A transformers ``CLIPTokenizer`` over merges learned from the synthetic corpus."""
    from transformers import CLIPTokenizer

    vocab, merges = learn_clip_bpe(synthetic_word_counts(), vocab_size)
    # 77 tokens, as every SD 1.5 prompt is padded to; without it the pipeline would pad to "infinity".
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)  # type: ignore[arg-type]


def _build_sd15(out: Path) -> None:
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_clip_tokenizer()
    vocab = tokenizer.get_vocab()
    torch.manual_seed(SEED)
    # Shapes after diffusers' own SD tests (32/64 channels, cross-attention 32, attention only at the lower
    # resolution), one layer per block and a 16x16 latent: one training step is ~45 ms of CPU time.
    unet = UNet2DConditionModel(  # type: ignore[no-untyped-call]
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=32,
    )
    # Three levels (a factor of 4, where SD's VAE has 8): 64 px images make 16x16 latents.
    vae = AutoencoderKL(  # type: ignore[no-untyped-call]
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=vocab[BOS],
            eos_token_id=vocab[EOS],
            pad_token_id=vocab[EOS],
        )
    )
    # SD 1.5's own scheduler settings, so the training noise schedule matches the real model's.
    scheduler = PNDMScheduler(  # type: ignore[no-untyped-call]
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )
    pipe = StableDiffusionPipeline(  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out)  # type: ignore[attr-defined]


def _caption_corpus(seed: int = SEED) -> list[str]:
    """Synthetic portrait captions; the demo VLM's vocabulary is learned from them, so its salad reads as words."""
    rng = random.Random(seed)
    subjects = ["man", "woman", "person", "young woman", "old man", "boy", "girl", "middle aged man"]
    hair = ["short brown hair", "long blond hair", "curly black hair", "gray hair", "a ponytail", "a bald head"]
    looks = ["smiling", "with a serious expression", "laughing", "looking at the camera"]
    wear = ["a suit and tie", "a white shirt", "a blue spacesuit", "glasses", "a red dress", "a hoodie"]
    styles = ["photo", "portrait photograph", "oil painting", "digital art", "film photo", "sketch"]
    backs = ["a plain background", "an office", "a flag", "a park", "a blurred street", "a studio wall"]
    lines = []
    for _ in range(3000):
        lines.append(
            f"A {rng.choice(styles)} of a {rng.choice(subjects)} with {rng.choice(hair)}, {rng.choice(looks)}, "
            f"wearing {rng.choice(wear)}, in front of {rng.choice(backs)}."
        )
    return lines


# LLaVA-1.5's turn format, written as a Jinja chat template like a hub model ships it.
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _build_vlm(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    specials = ["<s>", "</s>", "<pad>", "<image>"]
    # Byte-level like Llama 3 / Qwen: every string encodes, no unknown token needed.
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=800,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_caption_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        model_max_length=512,
    )
    ids: dict[str, int] = {}
    for token in specials:
        token_id = backend.token_to_id(token)
        assert token_id is not None, "the trainer adds every special token"
        ids[token] = token_id

    image_size, patch_size = 32, 8
    torch.manual_seed(SEED)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=patch_size,
            projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=backend.get_vocab_size(),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=ids["<s>"],
            eos_token_id=ids["</s>"],
            pad_token_id=ids["<pad>"],
        ),
        image_token_index=ids["<image>"],
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config.bos_token_id = ids["<s>"]
    model.generation_config.eos_token_id = ids["</s>"]
    model.generation_config.pad_token_id = ids["<pad>"]
    # Random weights may emit end-of-sequence at once; a real model's one-sentence caption is longer anyway.
    model.generation_config.min_new_tokens = 12
    processor = LlavaProcessor(  # type: ignore[no-untyped-call]
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        ),
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token, which "default" then drops again
        chat_template=_CHAT_TEMPLATE,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _ip_attention(unet: Any, scaled: Callable[..., torch.Tensor]) -> dict[str, torch.Tensor]:
    """An IP-Adapter's image key/value pair for every cross-attention of ``unet``, numbered 1, 3, 5... in the
    UNet's processor order as h94's files number them (even numbers are self-attentions, which have none)."""
    cross = unet.config.cross_attention_dim
    tensors: dict[str, torch.Tensor] = {}
    cross_attentions = [name for name in unet.attn_processors if name.endswith("attn2.processor")]
    for number, name in zip(range(1, 2 * len(cross_attentions), 2), cross_attentions, strict=True):
        hidden = unet.get_submodule(name.removesuffix(".processor")).to_k.out_features
        tensors[f"ip_adapter.{number}.to_k_ip.weight"] = scaled(hidden, cross, gain=0.3 * cross**0.5)
        tensors[f"ip_adapter.{number}.to_v_ip.weight"] = scaled(hidden, cross, gain=0.3 * cross**0.5)
    return tensors


def _resampler(embed_dim: int, cross: int, scaled: Callable[..., torch.Tensor]) -> dict[str, torch.Tensor]:
    """The "plus" image projection in the original Resampler's key names: learned query tokens that attend to
    the image encoder's hidden states through RESAMPLER_DEPTH blocks, then project to the cross-attention width."""
    width = RESAMPLER_HEAD  # one head: diffusers reads the head count as to_q's width / 64
    tensors = {
        "image_proj.latents": scaled(1, FACE_TOKENS, width),
        "image_proj.proj_in.weight": scaled(width, embed_dim),
        "image_proj.proj_in.bias": torch.zeros(width),
        "image_proj.proj_out.weight": scaled(cross, width),
        "image_proj.proj_out.bias": torch.zeros(cross),
        "image_proj.norm_out.weight": torch.ones(cross),
        "image_proj.norm_out.bias": torch.zeros(cross),
    }
    for block in range(RESAMPLER_DEPTH):
        attention, feed_forward = f"image_proj.layers.{block}.0", f"image_proj.layers.{block}.1"
        for norm in ("norm1", "norm2"):
            tensors[f"{attention}.{norm}.weight"] = torch.ones(width)
            tensors[f"{attention}.{norm}.bias"] = torch.zeros(width)
        tensors[f"{attention}.to_q.weight"] = scaled(width, width)
        tensors[f"{attention}.to_kv.weight"] = scaled(2 * width, width)
        tensors[f"{attention}.to_out.weight"] = scaled(width, width)
        tensors[f"{feed_forward}.0.weight"] = torch.ones(width)
        tensors[f"{feed_forward}.0.bias"] = torch.zeros(width)
        tensors[f"{feed_forward}.1.weight"] = scaled(FFN_RATIO * width, width)
        tensors[f"{feed_forward}.3.weight"] = scaled(width, FFN_RATIO * width)
    return tensors


def build_tiny_ip_adapter(unet: Any, folder: Path, embed_dim: int = 16) -> None:
    """IP-Adapters for ``unet`` laid out like h94/IP-Adapter under ``folder``: ``models/image_encoder``, the plain
    ``models/ip-adapter_sd15.safetensors`` and the "plus face" ``models/ip-adapter-plus-face_sd15.safetensors``:
    random weights in the shapes and key names diffusers' ``load_ip_adapter`` reads from the real files."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    models = Path(folder) / "models"
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=32,
                patch_size=8,
                projection_dim=embed_dim,
            )
        )
    encoder.save_pretrained(models / "image_encoder")
    generator = torch.Generator().manual_seed(SEED)

    def scaled(*shape: int, gain: float = 1.0) -> torch.Tensor:
        # Weights with unit gain over their last (input) dimension, so activations stay near unit size.
        weights = torch.randn(*shape, generator=generator)
        weights.mul_(gain / shape[-1] ** 0.5)
        return weights

    cross = unet.config.cross_attention_dim
    # The plain IP-Adapter: the CLIP image embedding projected to 4 extra cross-attention tokens.
    plain = {
        "image_proj.proj.weight": scaled(4 * cross, embed_dim, gain=0.3 * embed_dim**0.5),
        "image_proj.proj.bias": torch.zeros(4 * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
        **_ip_attention(unet, scaled),
    }
    face = {**_resampler(encoder.config.hidden_size, cross, scaled), **_ip_attention(unet, scaled)}
    save_file(plain, str(models / "ip-adapter_sd15.safetensors"))
    save_file(face, str(models / "ip-adapter-plus-face_sd15.safetensors"))


def _build_ip_adapter(out: Path, base: Path) -> None:
    from diffusers import UNet2DConditionModel

    # Only the UNet's shapes matter, so a fresh one from the saved config will do.
    config = UNet2DConditionModel.load_config(base / "unet")
    build_tiny_ip_adapter(UNet2DConditionModel.from_config(config), out)  # type: ignore[no-untyped-call]


def ensure_demo_models(root: Path) -> tuple[Path, Path]:
    """Build the demo models under ``root`` once and return (base_model_dir, captioner_dir); the IP-Adapters
    are beside them in ``IP_ADAPTER_DIR``.

    Idempotent: the marker file is written last, so a finished build is reused as is and an interrupted one is
    thrown away and redone.
    """
    root = Path(root)
    base, captioner, marker = root / BASE_DIR, root / CAPTIONER_DIR, root / MARKER
    if marker.is_file() and marker.read_text().strip() == RECIPE_VERSION:
        return base, captioner
    logger.info("building the tiny demo models in %s", root)
    root.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    # Build beside the target and move in, so a crash never leaves a half-written folder under the final name.
    with tempfile.TemporaryDirectory(dir=root, prefix=".build-") as scratch:
        work = Path(scratch)
        _build_sd15(work / BASE_DIR)
        _build_vlm(work / CAPTIONER_DIR)
        _build_ip_adapter(work / IP_ADAPTER_DIR, work / BASE_DIR)
        for name in (BASE_DIR, CAPTIONER_DIR, IP_ADAPTER_DIR):
            shutil.rmtree(root / name, ignore_errors=True)
            (work / name).rename(root / name)
    (root / "recipe.json").write_text(json.dumps({"seed": SEED, "clip_vocab_size": CLIP_VOCAB_SIZE}))
    marker.write_text(RECIPE_VERSION)
    return base, captioner
