"""Several SD 1.5 checkpoints for /serve --model, one resident at a time, on the same modules.

Switching loads the other checkpoint's weights into the resident UNet, VAE and text encoder (``load_state_dict``),
so every view of the pipeline, the IP-Adapter and the compiled shapes stay as they are and nothing is held
twice. The LoRA cache is emptied first: its adapters wrap the layers whose weights change. Training always
runs on the configured base: the job runner puts it back before a distillation.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from daemon.errors import BadInput, DistilleryError
from daemon.models.config import ModelConfig
from daemon.models.resident import Resident, load_pipeline
from daemon.pipeline.adapters import AdapterCache

logger = logging.getLogger(__name__)


@dataclass
class ModelSwitcher:
    """Which checkpoint is resident; ``ensure`` switches. ``""`` names the configured (training) base."""

    resident: Resident
    config: ModelConfig
    adapters: AdapterCache
    current: str = ""

    @property
    def names(self) -> list[str]:
        """The /serve --model names, in the operator's order."""
        return [name for name, _ in self.config.serve_models]

    def ensure(self, name: str, announce: Callable[[str], None] = lambda _text: None) -> None:
        """Make ``name`` the resident model, loading its weights when another one is resident."""
        if name == self.current:
            return
        sources = dict(self.config.serve_models)
        if name and name not in sources:
            raise BadInput(f"There is no model called {name}; /models lists them.")
        source = sources[name] if name else self.config.base_model
        announce(f"Loading the model {name or 'base'}.")
        logger.info("switching the resident model to %s (%s)", name or "base", source)
        self.adapters.clear()
        pipe, digest = load_pipeline(dataclasses.replace(self.config, base_model=source), self.resident.dtype)
        pairs = [
            (self.resident.unet, pipe.unet),
            (self.resident.vae, pipe.vae),
            (self.resident.text_encoder, pipe.text_encoder),
        ]
        for target, loaded in pairs:
            # Checked before anything is copied, so a wrong checkpoint leaves the resident model whole.
            mine = {key: value.shape for key, value in target.state_dict().items()}
            theirs = {key: value.shape for key, value in loaded.state_dict().items()}
            if mine != theirs:
                raise DistilleryError(f"The model {name or 'base'} is not an SD 1.5 checkpoint like the base.")
        with torch.no_grad():
            for target, loaded in pairs:
                target.load_state_dict(loaded.state_dict())
        self.resident.base_model, self.resident.base_model_hash = source, digest
        self.current = name
