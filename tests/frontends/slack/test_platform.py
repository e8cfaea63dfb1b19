"""Slack under the frontend core: paced writes, the newest content wins, 429s honoured, refusals and DMs.

Time is the shared virtual clock (with a moment of real time for loopback HTTP before it moves on), so minutes
of Slack pacing run in milliseconds; the Web API calls themselves are real HTTP to the loopback fake.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from distillery.v1 import distillery_pb2 as pb
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from frontends.live import LiveMessage, Pacer
from frontends.platform import Attachment, Button, Look, Place, Refused, RetryLater
from frontends.slack.platform import CANCEL_ACTION, SlackPlatform, look_blocks, retry_after
from tests.frontends.fakes import FakeClock
from tests.frontends.slack.fake_slack_api import BOT_TOKEN, FakeSlack


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=0.0, settle=0.002)


@pytest.fixture
async def client(fake_slack: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    yield AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.api_url)


@pytest.fixture
def platform(client: AsyncWebClient) -> SlackPlatform:
    return SlackPlatform(client, interval=1.0)


def pacer_of(platform: SlackPlatform, clock: FakeClock) -> Pacer:
    return Pacer(platform.interval, clock, clock.sleep)


async def test_turns_are_an_interval_apart_per_channel(platform: SlackPlatform, clock: FakeClock) -> None:
    pacer = pacer_of(platform, clock)
    times: list[tuple[str, float]] = []

    async def write(channel: str) -> None:
        await pacer.turn(channel)
        times.append((channel, clock()))

    await asyncio.gather(write("C1"), write("C1"), write("C1"), write("C2"))
    assert [t for channel, t in times if channel == "C1"] == [0.0, 1.0, 2.0]
    assert [t for channel, t in times if channel == "C2"] == [0.0]  # other channels do not wait


async def test_retry_after_holds_the_channel_even_for_turns_already_waiting(
    platform: SlackPlatform, clock: FakeClock
) -> None:
    pacer = pacer_of(platform, clock)
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
    fake_slack: FakeSlack, platform: SlackPlatform, clock: FakeClock
) -> None:
    pacer = pacer_of(platform, clock)
    place = await platform.send("C1", Look("start"))
    pacer.note_sent("C1")  # the post took this second's turn
    live = LiveMessage(platform, pacer, place)
    for step in range(50):
        live.show(Look(f"step {step}"), step)
    await live.flush()
    assert [call.params["text"] for call in fake_slack.of("chat.update")] == ["step 49"]
    assert live.edits == 1

    live.show(Look("step 49"), 50)  # unchanged: not sent again
    await live.flush()
    assert len(fake_slack.of("chat.update")) == 1
    await live.close()


async def test_steady_events_are_written_at_most_once_per_interval(
    fake_slack: FakeSlack,
    client: AsyncWebClient,
    platform: SlackPlatform,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    place = await platform.send("C1", Look("start"))
    pacer = pacer_of(platform, clock)
    issued_at: list[float] = []
    update = client.chat_update

    async def timed_update(**fields: Any) -> AsyncSlackResponse:
        issued_at.append(clock())
        return await update(**fields)

    monkeypatch.setattr(client, "chat_update", timed_update)
    live = LiveMessage(platform, pacer, place)
    # Forty events 0.1 s apart: four seconds of training progress.
    for step in range(40):
        live.show(Look(f"step {step}"), step)
        await clock.sleep(0.1)
    await live.finish(Look("step 39"))
    gaps = [b - a for a, b in itertools.pairwise(issued_at)]
    assert all(gap >= 1.0 - 1e-9 for gap in gaps), gaps
    assert 4 <= len(issued_at) <= 6, issued_at
    assert fake_slack.message("C1", place.message)["text"] == "step 39"  # the last version always lands


async def test_a_429_is_waited_out_and_the_newest_version_sent(
    fake_slack: FakeSlack, platform: SlackPlatform, clock: FakeClock
) -> None:
    place = await platform.send("C1", Look("start"))
    live = LiveMessage(platform, pacer_of(platform, clock), place)
    fake_slack.rate_limits = [7.0]
    live.show(Look("one"), 1)
    await fake_slack.wait_for(lambda: len(fake_slack.of("chat.update")) == 1)
    live.show(Look("two"), 2)  # arrives while the channel is held
    await live.finish(Look("two"))
    assert [call.params["text"] for call in fake_slack.of("chat.update")] == ["one", "two"]
    assert fake_slack.message("C1", place.message)["text"] == "two"
    assert clock() >= 7.0 and any(wait >= 6.0 for wait in clock.sleeps)


async def test_an_update_of_a_message_that_is_gone_stops_the_edits(
    fake_slack: FakeSlack, platform: SlackPlatform, clock: FakeClock
) -> None:
    live = LiveMessage(platform, pacer_of(platform, clock), Place("C1", "1.000"))  # no such message
    live.show(Look("lost"), 1)
    await live.finish(Look("final"))
    assert len(fake_slack.of("chat.update")) == 1 and live.lost and live.edits == 0


async def test_a_paced_call_retries_a_rate_limited_post(
    fake_slack: FakeSlack, platform: SlackPlatform, clock: FakeClock
) -> None:
    pacer = pacer_of(platform, clock)
    fake_slack.rate_limits = [3.0, 2.0]
    place = await pacer.call("C1", lambda: platform.send("C1", Look("hello")), attempts=5, paced=True)
    assert place.chat == "C1" and len(fake_slack.of("chat.postMessage")) == 3
    assert clock() >= 5.0

    fake_slack.rate_limits = [1.0] * 5
    with pytest.raises(RetryLater):
        await pacer.call("C1", lambda: platform.send("C1", Look("again")), attempts=2)


async def test_a_channel_the_bot_is_not_in_gets_the_message_in_the_owners_dm(
    fake_slack: FakeSlack, platform: SlackPlatform
) -> None:
    fake_slack.no_access.add("C9")
    with pytest.raises(Refused):  # no owner to fall back to
        await platform.send("C9", Look("hi"))
    place = await platform.send("C9", Look("hi"), owner=pb.Requester(platform="slack", user="U5"))
    assert place.chat == "D5" and fake_slack.message("D5", place.message)["text"] == "hi"


async def test_files_go_into_the_thread_with_their_comment(fake_slack: FakeSlack, platform: SlackPlatform) -> None:
    place = await platform.send("C1", Look("done"))
    await platform.upload(place, [Attachment("a.png", b"\x89PNG a", "a.png - seed 1"), Attachment("b.png", b"b")])
    uploads = list(fake_slack.uploads.values())
    assert [upload.filename for upload in uploads] == ["a.png", "b.png"]
    assert all(upload.completed["thread_ts"] == place.message for upload in uploads)
    assert uploads[0].completed["initial_comment"] == "a.png - seed 1"


def test_a_look_becomes_plain_text_who_asked_a_note_and_the_cancel_button() -> None:
    look = Look("step *1* <!channel>", (Button("Cancel", "cancel", "job1", confirm="It stops."),), "offline", "U1")
    section, asked, note, actions = look_blocks(look)
    assert section["text"] == {"type": "plain_text", "text": "step *1* <!channel>", "emoji": False}
    assert asked["elements"][0]["text"] == "Requested by <@U1>" and note["elements"][0]["text"] == "offline"
    [button] = actions["elements"]
    assert (button["action_id"], button["value"]) == (CANCEL_ACTION, "job1")
    assert button["confirm"]["text"]["text"] == "It stops."


async def test_retry_after_reads_only_rate_limits(fake_slack: FakeSlack, client: AsyncWebClient) -> None:
    fake_slack.rate_limits = [12.0]
    with pytest.raises(SlackApiError) as limited:
        await client.chat_update(channel="C1", ts="1", text="x")
    assert retry_after(limited.value) == 12.0
    with pytest.raises(SlackApiError) as refused:
        await client.chat_update(channel="C1", ts="1", text="x")
    assert retry_after(refused.value) is None  # message_not_found is not a reason to wait
