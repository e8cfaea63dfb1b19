"""Session fixtures for the model-side tests: the demo models loaded once through ``load_resident``.

Test modules pull these in with ``pytest_plugins = ["tests.fixtures_models"]``; the models themselves come
from the root conftest's ``demo_models`` fixture, so the whole session builds them once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from daemon.models.config import ModelConfig
from daemon.models.resident import Resident, load_resident


def demo_config(demo_models: tuple[Path, Path]) -> ModelConfig:
    """The demo preset pointed at the built folders, pinned to fp32 on CPU like CI runs it."""
    base, captioner = demo_models
    return ModelConfig("demo", str(base), str(captioner), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def resident(demo_models: tuple[Path, Path]) -> Resident:
    """The demo models, loaded once per session the way the daemon loads real weights."""
    return load_resident(demo_config(demo_models))


@pytest.fixture(scope="session")
def portrait() -> Image.Image:
    """scikit-image's astronaut portrait (Eileen Collins, NASA, public domain), 512 x 512 RGB."""
    from skimage import data

    return Image.fromarray(data.astronaut())  # type: ignore[no-untyped-call]
