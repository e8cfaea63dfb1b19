"""Pacing of progress edits in virtual time: per-chat intervals, coalescing, unchanged text, RetryAfter."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from telegram.error import BadRequest, NetworkError, RetryAfter

from frontends.telegram.progress import LiveMessage, Pacer, Shown, retry_after_seconds
from tests.frontends.telegram.fakes import FakeClock

# PTB 22 warns when RetryAfter is built with seconds (they become a timedelta in v23).
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

PRIVATE, GROUP = 42, -100123


class Recorder:
    """An Editor that records (time, chat, text, keyboard) and can fail on demand."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.edits: list[tuple[float, int, str, bool]] = []
        self.errors: list[Exception] = []

    async def __call__(self, chat_id: int, message_id: int, text: str, keyboard: bool) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.edits.append((self.clock(), chat_id, text, keyboard))


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pacer(clock: FakeClock) -> Pacer:
    return Pacer(1.0, 3.0, clock=clock, sleep=clock.sleep)


async def test_a_burst_of_texts_is_coalesced_and_paced(clock: FakeClock, pacer: Pacer) -> None:
    recorder = Recorder(clock)
    live = LiveMessage(PRIVATE, 7, recorder, pacer, shown=Shown("start", True))
    for step in range(1, 101):
        live.show(f"step {step}/100", keyboard=True, seq=step)
        if step % 10 == 0:
            await clock.sleep(0.25)  # events arrive faster than Telegram allows edits
    await live.finish("done", seq=101)
    times = [at for at, *_ in recorder.edits]
    assert all(gap >= 1.0 for gap in gaps(times)), gaps(times)
    # Far fewer edits than events, and the last one is the final text without the button.
    assert 2 <= len(recorder.edits) < 10
    assert recorder.edits[-1][2:] == ("done", False)
    assert live.shown == Shown("done", False, 101)


async def test_unchanged_text_is_not_sent_again(clock: FakeClock, pacer: Pacer) -> None:
    recorder = Recorder(clock)
    live = LiveMessage(PRIVATE, 7, recorder, pacer, shown=Shown("same", True))
    live.show("same", keyboard=True)
    await clock.sleep(5)
    live.show("other", keyboard=True)
    await clock.sleep(5)
    live.show("other", keyboard=True)
    await live.finish("other", seq=3)  # only the button goes away
    assert [(text, keyboard) for _, _, text, keyboard in recorder.edits] == [("other", True), ("other", False)]


async def test_groups_are_edited_at_most_every_three_seconds(clock: FakeClock, pacer: Pacer) -> None:
    recorder = Recorder(clock)
    live = LiveMessage(GROUP, 7, recorder, pacer)
    for step in range(30):
        live.show(f"step {step}", keyboard=True)
        await clock.sleep(0.5)
    await live.finish("done")
    assert all(gap >= 3.0 for gap in gaps([at for at, *_ in recorder.edits]))


async def test_two_messages_in_one_chat_share_the_chat_pace(clock: FakeClock, pacer: Pacer) -> None:
    recorder = Recorder(clock)
    first = LiveMessage(PRIVATE, 7, recorder, pacer)
    second = LiveMessage(PRIVATE, 8, recorder, pacer)
    for step in range(10):
        first.show(f"a {step}", keyboard=True)
        second.show(f"b {step}", keyboard=True)
        await clock.sleep(0.3)
    await asyncio.gather(first.finish("a done"), second.finish("b done"))
    assert all(gap >= 1.0 for gap in gaps(sorted(at for at, *_ in recorder.edits)))


async def test_retry_after_pauses_every_edit_then_shows_the_newest_text(clock: FakeClock, pacer: Pacer) -> None:
    recorder = Recorder(clock)
    recorder.errors.append(RetryAfter(7))
    live = LiveMessage(PRIVATE, 7, recorder, pacer)
    other_chat = LiveMessage(PRIVATE + 1, 9, recorder, pacer)
    start = clock()
    live.show("one", keyboard=True)
    await clock.sleep(0.1)  # the first edit meets the RetryAfter
    live.show("two", keyboard=True)
    other_chat.show("elsewhere", keyboard=True)
    await asyncio.gather(live.finish("two"), other_chat.finish("elsewhere"))
    assert all(at >= start + 7 for at, *_ in recorder.edits), recorder.edits
    assert ("one", True) not in [(text, keyboard) for _, _, text, keyboard in recorder.edits]
    assert recorder.edits[-1][2] in ("two", "elsewhere")


async def test_pacer_call_waits_out_retry_after(clock: FakeClock, pacer: Pacer) -> None:
    attempts: list[float] = []

    async def send() -> str:
        attempts.append(clock())
        if len(attempts) == 1:
            raise RetryAfter(5)
        return "sent"

    assert await pacer.call(PRIVATE, send) == "sent"
    assert attempts[1] - attempts[0] >= 5


async def test_not_modified_counts_as_shown_and_a_deleted_message_stops_edits(
    clock: FakeClock, pacer: Pacer
) -> None:
    recorder = Recorder(clock)
    recorder.errors.append(BadRequest("Message is not modified: specified new message content ..."))
    live = LiveMessage(PRIVATE, 7, recorder, pacer)
    await live.finish("same as on screen")
    assert live.shown is not None and live.shown.text == "same as on screen" and not live.lost

    recorder.errors.append(BadRequest("Message to edit not found"))
    gone = LiveMessage(PRIVATE, 8, recorder, pacer)
    gone.show("progress", keyboard=True)
    await gone.finish("final")
    assert gone.lost and gone.shown is None and recorder.edits == []


async def test_network_errors_are_retried_at_the_next_slot(clock: FakeClock, pacer: Pacer) -> None:
    recorder = Recorder(clock)
    recorder.errors.extend([NetworkError("connection reset"), NetworkError("timed out")])
    live = LiveMessage(PRIVATE, 7, recorder, pacer)
    await live.finish("final")
    assert [text for _, _, text, _ in recorder.edits] == ["final"]


async def test_on_shown_reports_each_edit_that_reached_the_screen(clock: FakeClock, pacer: Pacer) -> None:
    recorder = Recorder(clock)
    reported: list[int] = []

    async def on_shown(shown: Shown) -> None:
        reported.append(shown.seq)

    live = LiveMessage(PRIVATE, 7, recorder, pacer, on_shown=on_shown)
    live.show("a", keyboard=True, seq=1)
    await clock.sleep(2)
    await live.finish("b", seq=2)
    assert reported == [1, 2]


async def test_close_stops_without_showing_the_rest(clock: FakeClock, pacer: Pacer) -> None:
    recorder = Recorder(clock)
    live = LiveMessage(PRIVATE, 7, recorder, pacer)
    pacer.note_sent(PRIVATE)  # the next slot is a second away
    live.show("never", keyboard=True)
    await live.close()
    assert recorder.edits == []


def test_retry_after_seconds_reads_int_and_timedelta() -> None:
    import datetime as dtm

    assert retry_after_seconds(RetryAfter(3)) == 3.0
    assert retry_after_seconds(RetryAfter(dtm.timedelta(seconds=1.5))) == 1.5
