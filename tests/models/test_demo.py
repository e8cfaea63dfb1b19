"""The tiny demo models: built once and idempotently, with a real CLIP BPE tokenizer and a loadable VLM."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemon.models import demo
from daemon.models.demo import (
    BOS,
    CLIP_VOCAB_SIZE,
    EOS,
    WORD_END,
    build_clip_tokenizer,
    bytes_to_unicode,
    ensure_demo_models,
    learn_clip_bpe,
)
from daemon.models.resident import Resident
from daemon.pipeline.name import NameMinter

pytest_plugins = ["tests.fixtures_models"]

ALPHA = re.compile(r"[a-z]{3,6}")


@pytest.fixture(scope="module")
def clip_tokenizer(demo_models: tuple[Path, Path]):  # type: ignore[no-untyped-def]
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(demo_models[0] / "tokenizer")


def test_a_second_call_reuses_the_build(demo_models: tuple[Path, Path]) -> None:
    base, captioner = demo_models
    files = sorted(path for folder in (base, captioner) for path in folder.rglob("*") if path.is_file())
    before = [(path, path.stat().st_mtime_ns) for path in files]
    assert ensure_demo_models(base.parent) == (base, captioner)
    # Nothing was written again: the same files with the same modification times.
    after = sorted(path for folder in (base, captioner) for path in folder.rglob("*") if path.is_file())
    assert [(path, path.stat().st_mtime_ns) for path in after] == before
    assert (base / "model_index.json").is_file() and (captioner / "chat_template.jinja").is_file()


def test_the_marker_is_written_last_so_a_failed_build_is_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[str] = []

    def fake(name: str, fail: bool = False):  # type: ignore[no-untyped-def]
        def build(out: Path, *inputs: Path) -> None:
            builds.append(name)
            if fail:
                raise RuntimeError("disk full")
            out.mkdir()
            (out / "weights").write_text(name)

        return build

    monkeypatch.setattr(demo, "_build_sd15", fake("sd"))
    monkeypatch.setattr(demo, "_build_vlm", fake("vlm", fail=True))
    monkeypatch.setattr(demo, "_build_ip_adapter", fake("ip"))
    with pytest.raises(RuntimeError):
        ensure_demo_models(tmp_path)
    assert not (tmp_path / demo.MARKER).exists() and not (tmp_path / demo.BASE_DIR).exists()

    monkeypatch.setattr(demo, "_build_vlm", fake("vlm"))
    base, captioner = ensure_demo_models(tmp_path)
    assert (base / "weights").read_text() == "sd" and (captioner / "weights").read_text() == "vlm"
    assert (tmp_path / demo.IP_ADAPTER_DIR / "weights").read_text() == "ip"
    ensure_demo_models(tmp_path)
    assert builds == ["sd", "vlm", "sd", "vlm", "ip"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".build-")] == []


def test_tokenizer_has_clips_layout(clip_tokenizer) -> None:  # type: ignore[no-untyped-def]
    vocab = clip_tokenizer.get_vocab()
    alphabet = list(bytes_to_unicode().values())
    assert len(vocab) == CLIP_VOCAB_SIZE
    assert [vocab[ch] for ch in alphabet] == list(range(256))
    assert [vocab[ch + WORD_END] for ch in alphabet] == list(range(256, 512))
    assert (vocab[BOS], vocab[EOS]) == (CLIP_VOCAB_SIZE - 2, CLIP_VOCAB_SIZE - 1)
    assert vocab["a</w>"] == 320  # as in the real SD 1.5 tokenizer: same alphabet order
    assert clip_tokenizer.model_max_length == 77


@pytest.mark.parametrize(
    "text",
    ["a photo of a smiling woman with curly brown hair", "rifttami kadeejaim zorblaxquen", "a man , a woman !"],
)
def test_tokenizer_round_trips_text(clip_tokenizer, text: str) -> None:  # type: ignore[no-untyped-def]
    ids = clip_tokenizer(text).input_ids
    assert ids[0] == clip_tokenizer.bos_token_id and ids[-1] == clip_tokenizer.eos_token_id
    assert clip_tokenizer.decode(ids, skip_special_tokens=True) == text


def test_common_portrait_words_are_single_tokens(clip_tokenizer) -> None:  # type: ignore[no-untyped-def]
    for word in ("man", "woman", "person", "photo", "portrait", "smiling", "hair"):
        assert clip_tokenizer.tokenize(word) == [word + WORD_END]


def test_tokenizer_has_many_rare_alphabetic_tokens_of_both_kinds(clip_tokenizer) -> None:  # type: ignore[no-untyped-def]
    vocab = clip_tokenizer.get_vocab()
    rare = [t for t, i in vocab.items() if i >= 512 + (CLIP_VOCAB_SIZE - 514) // 2 and not t.startswith("<|")]
    final = [t for t in rare if t.endswith(WORD_END) and ALPHA.fullmatch(t[: -len(WORD_END)])]
    internal = [t for t in rare if not t.endswith(WORD_END) and ALPHA.fullmatch(t)]
    assert len(final) >= 300 and len(internal) >= 300


def test_lora_names_can_be_minted_from_it(clip_tokenizer) -> None:  # type: ignore[no-untyped-def]
    import random

    minter = NameMinter(clip_tokenizer, random.Random(0))
    names = set()
    for _ in range(20):
        lora = minter.mint(lambda name: name in names)
        assert clip_tokenizer.tokenize(lora.name) == list(lora.tokens)
        names.add(lora.name)
    assert len(names) == 20


def test_bpe_learning_is_deterministic_and_matches_the_saved_tokenizer(clip_tokenizer) -> None:  # type: ignore[no-untyped-def]
    assert build_clip_tokenizer().get_vocab() == clip_tokenizer.get_vocab()


def test_bpe_learner_merges_the_most_frequent_pair_first() -> None:
    from collections import Counter

    vocab, merges = learn_clip_bpe(Counter({"abab": 10, "abc": 3, "xy": 1}), 512 + 4 + 2)
    assert merges[0] == ("a", "b")
    assert vocab["ab"] == 512 and len(vocab) == 518


def test_captioner_folder_loads_through_the_generic_auto_classes(demo_models: tuple[Path, Path]) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(demo_models[1])  # type: ignore[no-untyped-call]
    model = AutoModelForImageTextToText.from_pretrained(demo_models[1])
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Who is this?"}]}],
        add_generation_prompt=True,
    )
    assert prompt.startswith("USER: <image>") and prompt.endswith("ASSISTANT:")
    assert sum(p.numel() for p in model.parameters()) < 200_000


def test_the_ip_adapters_are_laid_out_like_h94s(demo_models: tuple[Path, Path], resident: Resident) -> None:
    from safetensors import safe_open

    models = demo_models[0].parent / demo.IP_ADAPTER_DIR / "models"
    assert (models / "image_encoder" / "config.json").is_file()
    with safe_open(str(models / "ip-adapter_sd15.safetensors"), "pt") as plain:
        plain_keys = set(plain.keys())
    with safe_open(str(models / "ip-adapter-plus-face_sd15.safetensors"), "pt") as face:
        face_keys = set(face.keys())
        latents = face.get_tensor("image_proj.latents")
    # The original checkpoints' names: the plain projection, the Resampler's blocks, and one image key/value
    # pair per cross-attention, numbered 1, 3, 5...
    assert {"image_proj.proj.weight", "image_proj.norm.weight"} <= plain_keys
    assert {
        "image_proj.proj_in.weight",
        "image_proj.layers.3.0.to_kv.weight",
        "image_proj.layers.3.1.3.weight",
    } <= face_keys
    ip_keys = {key for key in face_keys if key.startswith("ip_adapter.")}
    assert ip_keys == {key for key in plain_keys if key.startswith("ip_adapter.")}
    cross_attentions = [name for name in resident.unet.attn_processors if name.endswith("attn2.processor")]
    numbers = range(1, 2 * len(cross_attentions), 2)
    assert ip_keys == {f"ip_adapter.{n}.to_{kv}_ip.weight" for n in numbers for kv in "kv"}
    assert latents.shape == (1, demo.FACE_TOKENS, demo.RESAMPLER_HEAD)
