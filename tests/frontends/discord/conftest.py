"""Fixtures of the Discord tests: the fake Discord API on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.frontends.discord.fake_discord import FakeDiscord


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    fake = await FakeDiscord().start()
    yield fake
    await fake.close()
