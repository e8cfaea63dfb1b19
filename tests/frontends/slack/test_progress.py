"""Pacing of message writes: at least the interval apart per channel, newest content wins, 429s honoured.

Time is a fake clock whose sleep advances it, so minutes of Slack pacing run in milliseconds; the Web API
calls themselves are real HTTP to the loopback fake.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from frontends.slack.blocks import Content
from frontends.slack.progress import ChannelPacer, LiveMessage, paced_call, retry_after
from tests.frontends.slack.fake_slack_api import BOT_TOKEN, FakeSlack


class VirtualClock:
    """Virtual time: a sleeper wakes when the clock reaches its deadline, and the clock moves only to the
    earliest deadline once everything else had a moment (of real time) to run, like a discrete-event
    simulation. Concurrent sleepers therefore wake in deadline order at exactly their deadlines.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), next(self._order), future))
        await future

    async def drive(self) -> None:
        """Run in the background: wake the earliest sleeper whenever the loop has been idle for a moment."""
        while True:
            await asyncio.sleep(0.002)  # room for whatever is runnable, loopback HTTP included
            if self._sleepers:
                deadline, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, deadline)
                if not future.done():
                    future.set_result(None)


@pytest.fixture
async def clock() -> AsyncIterator[VirtualClock]:
    clock = VirtualClock()
    driver = asyncio.create_task(clock.drive())
    yield clock
    driver.cancel()
    await asyncio.gather(driver, return_exceptions=True)


@pytest.fixture
async def client(fake_slack: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    yield AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.api_url)


async def _posted(client: AsyncWebClient, channel: str = "C1") -> str:
    reply = await client.chat_postMessage(channel=channel, text="start")
    return str(reply["ts"])


async def test_turns_are_an_interval_apart_per_channel(clock: VirtualClock) -> None:
    pacer = ChannelPacer(1.0, clock, clock.sleep)
    times: list[tuple[str, float]] = []

    async def write(channel: str) -> None:
        await pacer.turn(channel)
        times.append((channel, clock()))

    await asyncio.gather(write("C1"), write("C1"), write("C1"), write("C2"))
    assert [t for channel, t in times if channel == "C1"] == [0.0, 1.0, 2.0]
    assert [t for channel, t in times if channel == "C2"] == [0.0]  # other channels do not wait


async def test_retry_after_holds_the_channel_even_for_turns_already_waiting(clock: VirtualClock) -> None:
    pacer = ChannelPacer(1.0, clock, clock.sleep)
    await pacer.turn("C1")
    times: list[float] = []

    async def write() -> None:
        await pacer.turn("C1")
        times.append(clock())

    waiting = [asyncio.create_task(write()), asyncio.create_task(write())]  # slots t=1 and t=2
    await asyncio.sleep(0)
    pacer.hold("C1", 5.0)  # a 429 arrives meanwhile
    await asyncio.gather(*waiting)
    assert times == [5.0, 6.0]  # nothing before Retry-After, and still an interval apart after it
    await write()
    assert times[-1] == 7.0


async def test_a_burst_of_progress_becomes_one_write_of_the_newest(
    fake_slack: FakeSlack, client: AsyncWebClient, clock: VirtualClock
) -> None:
    ts = await _posted(client)
    pacer = ChannelPacer(1.0, clock, clock.sleep)
    await pacer.turn("C1")  # the post above took this second's turn
    live = LiveMessage(client, pacer, "C1", ts)
    for step in range(50):
        live.show(Content(text=f"step {step}"), step)
    await live.flush()
    assert [call.params["text"] for call in fake_slack.of("chat.update")] == ["step 49"]
    assert live.updates == 1

    live.show(Content(text="step 49"), 50)  # unchanged: not sent again
    await live.flush()
    assert len(fake_slack.of("chat.update")) == 1
    await live.close()


async def test_steady_events_are_written_at_most_once_per_interval(
    fake_slack: FakeSlack, client: AsyncWebClient, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ts = await _posted(client)
    pacer = ChannelPacer(1.0, clock, clock.sleep)
    issued_at: list[float] = []
    update = client.chat_update

    async def timed_update(**fields: Any) -> AsyncSlackResponse:
        issued_at.append(clock())
        return await update(**fields)

    monkeypatch.setattr(client, "chat_update", timed_update)
    live = LiveMessage(client, pacer, "C1", ts)
    # Forty events 0.1 s apart: four seconds of training progress.
    for step in range(40):
        live.show(Content(text=f"step {step}"), step)
        await clock.sleep(0.1)
    await live.flush()
    await live.close()
    gaps = [b - a for a, b in itertools.pairwise(issued_at)]
    assert all(gap >= 1.0 - 1e-9 for gap in gaps), gaps
    assert 4 <= len(issued_at) <= 6, issued_at
    assert fake_slack.message("C1", ts)["text"] == "step 39"  # the last version always lands


async def test_a_429_is_waited_out_and_the_newest_version_sent(
    fake_slack: FakeSlack, client: AsyncWebClient, clock: VirtualClock
) -> None:
    ts = await _posted(client)
    pacer = ChannelPacer(1.0, clock, clock.sleep)
    live = LiveMessage(client, pacer, "C1", ts)
    fake_slack.rate_limits = [7.0]
    live.show(Content(text="one"), 1)
    await fake_slack.wait_for(lambda: len(fake_slack.of("chat.update")) == 1)
    live.show(Content(text="two"), 2)  # arrives while the channel is held
    await live.flush()
    await live.close()
    assert [call.params["text"] for call in fake_slack.of("chat.update")] == ["one", "two"]
    assert fake_slack.message("C1", ts)["text"] == "two"
    assert clock() >= 7.0 and any(wait >= 6.0 for wait in clock.sleeps)


async def test_an_update_slack_refuses_is_dropped_not_retried(
    fake_slack: FakeSlack, client: AsyncWebClient, clock: VirtualClock
) -> None:
    live = LiveMessage(client, ChannelPacer(1.0, clock, clock.sleep), "C1", "1.000")  # no such message
    live.show(Content(text="lost"), 1)
    await live.flush()
    await live.close()
    assert len(fake_slack.of("chat.update")) == 1 and live.updates == 0


async def test_paced_call_retries_a_rate_limited_post(
    fake_slack: FakeSlack, client: AsyncWebClient, clock: VirtualClock
) -> None:
    pacer = ChannelPacer(1.0, clock, clock.sleep)
    fake_slack.rate_limits = [3.0, 2.0]

    reply = await paced_call(pacer, "C1", lambda: client.chat_postMessage(channel="C1", text="hello"))
    assert reply["ok"] and len(fake_slack.of("chat.postMessage")) == 3
    assert clock() >= 5.0

    fake_slack.rate_limits = [1.0] * 5
    with pytest.raises(SlackApiError):
        await paced_call(pacer, "C1", lambda: client.chat_postMessage(channel="C1", text="again"), attempts=2)


async def test_retry_after_reads_only_rate_limits(fake_slack: FakeSlack, client: AsyncWebClient) -> None:
    fake_slack.rate_limits = [12.0]
    with pytest.raises(SlackApiError) as limited:
        await client.chat_update(channel="C1", ts="1", text="x")
    assert retry_after(limited.value) == 12.0
    with pytest.raises(SlackApiError) as refused:
        await client.chat_update(channel="C1", ts="1", text="x")
    assert retry_after(refused.value) is None  # message_not_found is not a reason to wait
