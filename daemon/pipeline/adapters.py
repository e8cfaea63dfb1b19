"""The LoRAs a generation uses, kept loaded in the resident pipeline between jobs: a small LRU of adapters.

Loading a LoRA is cheap next to loading a model, but a chat that generates with the same LoRA again and
again should not pay for it every time, and switching LoRAs must never touch the base model. So each LoRA is
loaded once as a named peft adapter into the resident pipeline (``load_lora_weights`` reads the kohya keys of
the stored file) and stays there until it is the least recently used one past ``capacity``; a job then only
picks which adapters are on, and at what weight (``set_adapters``). With no LoRAs the adapters are switched
off (``disable_lora``), which makes every wrapped layer call its original module alone: the output is the bare
base model's, bit for bit.

Training shares the UNet and refuses to start while any adapter is loaded, so the distill pipeline calls
``clear()`` first, which swaps every wrapped layer back to its original module object.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from daemon.jobs.model import LoraUse
from daemon.pipeline.save import load_lora_into

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 8
# peft keeps adapters in ModuleDicts, whose keys may not contain dots; names are plain words, but be safe.
_UNSAFE = re.compile(r"[^0-9A-Za-z_]")


def adapter_name(lora: str, file_sha256: str) -> str:
    """The adapter name of a LoRA file: readable in logs, and new whenever the file's bytes differ."""
    return f"{_UNSAFE.sub('_', lora)}_{file_sha256[:12]}"


class AdapterCache:
    """Generation LoRAs loaded into one pipeline, least recently used first out past ``capacity``."""

    def __init__(self, pipeline: Any, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"the LoRA cache must hold at least one LoRA, not {capacity}")
        self._pipeline = pipeline
        self.capacity = capacity
        # (LoRA name, sha256 of its file) -> adapter name, least recently used first.
        self._loaded: OrderedDict[tuple[str, str], str] = OrderedDict()

    @property
    def loaded(self) -> list[str]:
        """The LoRA names loaded now, least recently used first."""
        return [name for name, _ in self._loaded]

    def activate(self, uses: Sequence[LoraUse], load: Callable[[str], bytes]) -> None:
        """Make exactly ``uses`` active at their weights: load what is missing, switch everything else off.

        ``load(name)`` returns a LoRA's file (the store's kohya-format safetensors); it is read on every call so
        that a changed file can never hide behind a cached adapter. A LoRA named twice counts once, with the
        weights added up, as two copies of the same low-rank update would.
        """
        weights: dict[str, float] = {}
        for use in uses:
            data = load(use.name)
            key = (use.name, hashlib.sha256(data).hexdigest())
            adapter = self._loaded.get(key)
            if adapter is None:
                # Room for one more; never evict what this request uses, even past the capacity.
                self._shrink(max(self.capacity - 1, len(weights)), keep=set(weights))
                adapter = adapter_name(*key)
                try:
                    load_lora_into(self._pipeline, data, adapter)
                except Exception:
                    # A half-injected adapter would block its name forever: start from a clean UNet instead.
                    self.clear()
                    raise
                self._loaded[key] = adapter
                logger.info("loaded LoRA %s as adapter %s", use.name, adapter)
            self._loaded.move_to_end(key)
            weights[adapter] = weights.get(adapter, 0.0) + float(use.weight)
        # Past the capacity only while one request needs it: trim what an earlier, bigger request left behind.
        self._shrink(max(self.capacity, len(weights)), keep=set(weights))
        if weights:
            self._pipeline.enable_lora()
            self._pipeline.set_adapters(list(weights), list(weights.values()))
        elif self._loaded:
            self._pipeline.disable_lora()

    def _shrink(self, limit: int, keep: set[str]) -> None:
        """Delete least recently used adapters until at most ``limit`` are loaded, sparing those in ``keep``."""
        for key, adapter in list(self._loaded.items()):
            if len(self._loaded) <= limit:
                return
            if adapter in keep:
                continue
            self._pipeline.delete_adapters(adapter)
            del self._loaded[key]
            logger.info("evicted LoRA adapter %s", adapter)

    def clear(self) -> None:
        """Unload every adapter, leaving the UNet's modules and weights exactly as they were loaded."""
        # Unconditional: cheap when nothing is loaded, and it also sweeps up an adapter someone else left.
        self._pipeline.unload_lora_weights()
        self._loaded.clear()
