"""Fixtures every bot's tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from frontends.client import DaemonClient


class RunningDaemon(Protocol):
    """A real daemon a test module started (each module has its own ``daemon`` fixture)."""

    @property
    def target(self) -> str: ...


@pytest.fixture
async def client(daemon: RunningDaemon) -> AsyncIterator[DaemonClient]:
    """A client of the module's real daemon."""
    client = DaemonClient(daemon.target)
    yield client
    await client.close()
