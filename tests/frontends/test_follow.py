"""The retry rules both bots follow jobs with: pauses that grow and reset, breaks told, permanent codes final."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.client import DaemonError
from frontends.follow import BACKOFF, follow_job, pause, when_answered
from frontends.render import JobView

DOWN = DaemonError(grpc.StatusCode.UNAVAILABLE, "The trainer is offline.")
GONE = DaemonError(grpc.StatusCode.NOT_FOUND, "There is no job j1.")


def progress(seq: int) -> pb.JobEvent:
    event = pb.JobEvent(job_id="j1", seq=seq, state=pb.JOB_STATE_RUNNING, stage=pb.STAGE_TRAIN)
    event.progress.step, event.progress.total = seq, 10
    return event


def finished(seq: int) -> pb.JobEvent:
    event = pb.JobEvent(job_id="j1", seq=seq, state=pb.JOB_STATE_SUCCEEDED)
    event.finished.job.id = "j1"
    return event


class Daemon:
    """Each Watch answers with the next scripted outcome: events (then the stream ends) or an error."""

    def __init__(self, *outcomes: list[pb.JobEvent] | DaemonError) -> None:
        self.outcomes = list(outcomes)
        self.asked_after: list[int] = []

    async def watch(self, after: int) -> AsyncIterator[pb.JobEvent]:
        self.asked_after.append(after)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, DaemonError):
            raise outcome
        for event in outcome:
            if event.seq > after:
                yield event


class Recorder:
    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.breaks: list[grpc.StatusCode | None] = []
        self.seen: list[int] = []

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)

    def on_break(self, error: DaemonError | None) -> None:
        self.breaks.append(None if error is None else error.code)

    def on_event(self, event: pb.JobEvent) -> None:
        self.seen.append(event.seq)


async def follow(daemon: Daemon, recorder: Recorder, view: JobView, **options: object) -> str:
    return await follow_job(
        view,
        daemon.watch,
        on_event=recorder.on_event,
        on_break=recorder.on_break,
        sleep=recorder.sleep,
        **options,  # type: ignore[arg-type]
    )


async def test_outages_grow_the_pause_and_an_event_resets_it() -> None:
    daemon = Daemon(DOWN, DOWN, DOWN, [progress(1), progress(2)], DOWN, [progress(3), finished(4)])
    recorder = Recorder()
    view = JobView()
    assert await follow(daemon, recorder, view) == ""
    assert view.finished and view.last_seq == 4
    # Each watch starts after the last event applied, and every event is told once, in order.
    assert daemon.asked_after == [0, 0, 0, 0, 2, 2]
    assert recorder.seen == [1, 2, 3, 4]
    # Three failures in a row: 0.5, 1, 2 s. The early end after seq 2 is the first break since an event.
    assert recorder.pauses == [0.5, 1.0, 2.0, 0.5, 1.0]
    down = grpc.StatusCode.UNAVAILABLE
    assert recorder.breaks == [down, down, down, None, down]


async def test_the_pause_stops_growing_at_the_last_step() -> None:
    assert [pause(n) for n in range(len(BACKOFF) + 3)] == [*BACKOFF, BACKOFF[-1], BACKOFF[-1], BACKOFF[-1]]
    assert pause(5, (2.0, 3.0)) == 3.0


async def test_a_job_that_is_gone_ends_the_following_with_the_reason() -> None:
    daemon = Daemon([progress(1)], DOWN, GONE)
    recorder = Recorder()
    assert await follow(daemon, recorder, JobView()) == "There is no job j1."
    assert recorder.seen == [1]
    assert recorder.breaks == [None, grpc.StatusCode.UNAVAILABLE]


async def test_the_first_stream_is_read_before_any_watch() -> None:
    async def answer() -> AsyncIterator[pb.JobEvent]:
        yield progress(1)
        raise DOWN

    daemon = Daemon([progress(1), progress(2), finished(3)])
    recorder = Recorder()
    assert await follow(daemon, recorder, JobView(), first=answer()) == ""
    assert daemon.asked_after == [1]
    assert recorder.seen == [1, 2, 3]


async def test_a_job_that_ended_unwatched_still_delivers_its_last_events() -> None:
    job = pb.Job(id="j1", state=pb.JOB_STATE_SUCCEEDED, last_seq=4)
    view = JobView()
    view.apply_job(job)
    view.last_seq = 2
    daemon = Daemon([progress(1), progress(2), progress(3), finished(4)])
    recorder = Recorder()
    assert await follow(daemon, recorder, view) == ""
    assert recorder.seen == [3, 4] and recorder.pauses == []


async def test_when_answered_waits_out_an_outage_and_raises_what_waiting_cannot_fix() -> None:
    recorder = Recorder()
    answers: list[int | DaemonError] = [DOWN, DOWN, 7]

    async def call() -> int:
        answer = answers.pop(0)
        if isinstance(answer, DaemonError):
            raise answer
        return answer

    assert await when_answered(call, "count", recorder.sleep) == 7
    assert recorder.pauses == [0.5, 1.0]

    answers[:] = [DOWN, GONE]
    with pytest.raises(DaemonError) as raised:
        await when_answered(call, "count", recorder.sleep)
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
