"""Fixtures shared by every tier: the demo portrait, tiny models built once, a real daemon process."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_process import RunningDaemon, start_daemon


@pytest.fixture(scope="session")
def portrait_png() -> bytes:
    """scikit-image's astronaut (Eileen Collins, NASA, public domain) as PNG bytes."""
    from daemon.pipeline.image import demo_portrait

    return demo_portrait()


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The demo preset's tiny random-weight models, built once per test session."""
    from daemon.models.demo import ensure_demo_models

    return ensure_demo_models(tmp_path_factory.mktemp("demo-models"))


@pytest.fixture
def running_daemon(tmp_path: Path, demo_models: tuple[Path, Path]) -> Iterator[RunningDaemon]:
    """A real daemon on a temporary socket with the demo preset, stopped (SIGTERM) after the test."""
    daemon = start_daemon(tmp_path / "state", demo_models)
    yield daemon
    status = daemon.stop(signal.SIGTERM)
    assert status == 0, f"daemon exited with {status}:\n{daemon.log_text()}"
