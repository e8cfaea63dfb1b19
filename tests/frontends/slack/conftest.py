"""Fixtures of the Slack tests: the fake Slack Web API, the fake daemon, and a bot served over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.frontends.fakes import FakeDaemon
from tests.frontends.slack.fake_slack_api import FakeSlack
from tests.frontends.slack.harness import BotHarness, settings_for


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = await FakeSlack().start()
    yield fake
    await fake.close()


@pytest.fixture
def fake_daemon() -> FakeDaemon:
    return FakeDaemon()


@pytest.fixture
async def bot(fake_slack: FakeSlack, fake_daemon: FakeDaemon) -> AsyncIterator[BotHarness]:
    """The bot in HTTP mode on a loopback port, talking to the fakes."""
    harness = await BotHarness(fake_slack, fake_daemon, settings_for(fake_slack)).start()
    yield harness
    await harness.close()
