"""The core's live message in virtual time: per-chat pacing, coalescing, unchanged looks, rate limits, gone
messages and network failures, whatever the platform."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from frontends.live import NETWORK_ATTEMPTS, LiveMessage, Pacer
from frontends.platform import Button, Look, MessageGone, Place, Refused, RetryLater, Unreachable
from tests.frontends.fakes import FakeClock, FakePlatform

PRIVATE, GROUP = "42", "-100123"
CANCEL = (Button("Cancel", "cancel", "job1"),)


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def running(text: str) -> Look:
    return Look(text, CANCEL)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def platform(clock: FakeClock) -> FakePlatform:
    return FakePlatform(clock)


@pytest.fixture
def pacer(clock: FakeClock, platform: FakePlatform) -> Pacer:
    return Pacer(platform.interval, clock=clock, sleep=clock.sleep)


def live(
    platform: FakePlatform, pacer: Pacer, chat: str = PRIVATE, message: str = "7", **options: object
) -> LiveMessage:
    return LiveMessage(platform, pacer, Place(chat, message), **options)  # type: ignore[arg-type]


async def test_a_burst_of_looks_is_coalesced_and_paced(
    clock: FakeClock, platform: FakePlatform, pacer: Pacer
) -> None:
    message = live(platform, pacer, shown=running("start"))
    for step in range(1, 101):
        message.show(running(f"step {step}/100"), seq=step)
        if step % 10 == 0:
            await clock.sleep(0.25)  # events arrive faster than the platform allows edits
    await message.finish(Look("done"), seq=101)
    times = [at for at, _, _ in platform.edits]
    assert all(gap >= 1.0 for gap in gaps(times)), gaps(times)
    # Far fewer edits than events, and the last one is the final look without the button.
    assert 2 <= len(platform.edits) < 10
    assert platform.edits[-1][2] == Look("done") and message.shown == Look("done")


async def test_an_unchanged_look_is_not_sent_again(clock: FakeClock, platform: FakePlatform, pacer: Pacer) -> None:
    message = live(platform, pacer, shown=running("same"))
    message.show(running("same"))
    await clock.sleep(5)
    message.show(running("other"))
    await clock.sleep(5)
    message.show(running("other"))
    await message.finish(Look("other"), seq=3)  # only the button goes away
    assert [look for _, _, look in platform.edits] == [running("other"), Look("other")]


async def test_groups_are_edited_at_their_own_slower_pace(
    clock: FakeClock, platform: FakePlatform, pacer: Pacer
) -> None:
    message = live(platform, pacer, chat=GROUP)
    for step in range(30):
        message.show(running(f"step {step}"))
        await clock.sleep(0.5)
    await message.finish(Look("done"))
    times = [at for at, _, _ in platform.edits]
    assert len(times) >= 3 and all(gap >= 3.0 for gap in gaps(times))


async def test_two_messages_in_one_chat_share_the_chat_pace(
    clock: FakeClock, platform: FakePlatform, pacer: Pacer
) -> None:
    first, second = live(platform, pacer, message="7"), live(platform, pacer, message="8")
    for step in range(10):
        first.show(running(f"a {step}"))
        second.show(running(f"b {step}"))
        await clock.sleep(0.3)
    await asyncio.gather(first.finish(Look("a done")), second.finish(Look("b done")))
    assert all(gap >= 1.0 for gap in gaps(sorted(at for at, _, _ in platform.edits)))


async def test_a_bot_wide_rate_limit_holds_every_chat_then_the_newest_look_is_shown(
    clock: FakeClock, platform: FakePlatform, pacer: Pacer
) -> None:
    platform.errors.append(RetryLater(7, everywhere=True))
    message = live(platform, pacer)
    other_chat = live(platform, pacer, chat="43", message="9")
    start = clock()
    message.show(running("one"))
    await clock.sleep(0.1)  # the first edit meets the rate limit
    message.show(running("two"))
    other_chat.show(running("elsewhere"))
    await asyncio.gather(message.finish(running("two")), other_chat.finish(running("elsewhere")))
    assert all(at >= start + 7 for at, _, _ in platform.edits), platform.edits
    assert running("one") not in [look for _, _, look in platform.edits]


async def test_a_chat_rate_limit_holds_only_that_chat(
    clock: FakeClock, platform: FakePlatform, pacer: Pacer
) -> None:
    platform.errors.append(RetryLater(7))
    held, free = live(platform, pacer), live(platform, pacer, chat="43", message="9")
    start = clock()
    held.show(running("one"))
    await clock.sleep(0.1)
    free.show(running("elsewhere"))
    await asyncio.gather(held.finish(running("one")), free.finish(running("elsewhere")))
    times = {place.chat: at for at, place, _ in platform.edits}
    assert times["43"] < start + 1 and times[PRIVATE] >= start + 7


async def test_pacer_call_waits_out_a_rate_limit(clock: FakeClock, pacer: Pacer) -> None:
    attempts: list[float] = []

    async def send() -> str:
        attempts.append(clock())
        if len(attempts) == 1:
            raise RetryLater(5)
        return "sent"

    assert await pacer.call(PRIVATE, send) == "sent"
    assert attempts[1] - attempts[0] >= 5


async def test_a_refused_look_counts_as_done_and_a_gone_message_stops_edits(
    clock: FakeClock, platform: FakePlatform, pacer: Pacer
) -> None:
    platform.errors.append(Refused("Bad Request: can't parse entities"))
    message = live(platform, pacer)
    await message.finish(Look("refused"))
    assert message.shown == Look("refused") and not message.lost

    platform.errors.append(MessageGone("Message to edit not found"))
    gone = live(platform, pacer, message="8")
    gone.show(running("progress"))
    await gone.finish(Look("final"))
    assert gone.lost and gone.shown is None and platform.edits == []
    gone.show(running("later"))  # nothing is tried on a message that is gone
    await gone.flush()
    assert platform.edits == []


async def test_network_errors_are_retried_at_the_next_slot_then_given_up(
    clock: FakeClock, platform: FakePlatform, pacer: Pacer
) -> None:
    platform.errors.extend([Unreachable("connection reset"), Unreachable("timed out")])
    message = live(platform, pacer)
    await message.finish(Look("final"))
    assert [look.text for _, _, look in platform.edits] == ["final"]

    platform.errors.extend([Unreachable("down")] * NETWORK_ATTEMPTS)
    stuck = live(platform, pacer, message="8")
    await stuck.finish(Look("never"))
    assert stuck.shown is None and [look.text for _, _, look in platform.edits] == ["final"]


async def test_on_shown_reports_each_look_that_reached_the_screen(
    clock: FakeClock, platform: FakePlatform, pacer: Pacer
) -> None:
    reported: list[int] = []

    async def on_shown(seq: int) -> None:
        reported.append(seq)

    message = live(platform, pacer, on_shown=on_shown)
    message.show(running("a"), seq=1)
    await clock.sleep(2)
    await message.finish(Look("b"), seq=2)
    assert reported == [1, 2]


async def test_close_stops_without_showing_the_rest(
    clock: FakeClock, platform: FakePlatform, pacer: Pacer
) -> None:
    message = live(platform, pacer)
    pacer.note_sent(PRIVATE)  # the next slot is a second away
    message.show(running("never"))
    await message.close()
    assert platform.edits == []
