"""Following a job across broken streams, in virtual time: resume from the last event, say "offline" only after
an outage outlasts a restart, give up on a job that is gone; and the note the bot keeps on each job."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.client import OFFLINE, DaemonError
from frontends.render import JobView
from frontends.telegram.progress import LiveMessage, Pacer
from frontends.telegram.reattach import OFFLINE_NOTE, ClientState, Follower, unfinished_jobs
from frontends.telegram.trainer import requester
from tests.frontends.telegram.fakes import FakeClock, FakeTrainer

ANN = requester(7, 7)
DOWN = DaemonError(grpc.StatusCode.UNAVAILABLE, OFFLINE)


class Screen:
    """An Editor that keeps every text shown, with its virtual time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.texts: list[tuple[float, str]] = []

    async def __call__(self, chat_id: int, message_id: int, text: str, keyboard: bool) -> None:
        self.texts.append((self.clock(), text))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def submitted(trainer: FakeTrainer) -> str:
    reply = await trainer.submit(pb.DistillSpec(requester=ANN, url="https://example.org/a.jpg"))
    return str(reply.job.id)


def follower(trainer: FakeTrainer, job_id: str, clock: FakeClock, screen: Screen, **options: float) -> Follower:
    live = LiveMessage(7, 70, screen, Pacer(1.0, 3.0, clock=clock, sleep=clock.sleep))
    return Follower(
        trainer,
        job_id,
        ANN,
        JobView(),
        live,
        offline_after=options.get("offline_after", 30.0),
        clock=clock,
        sleep=clock.sleep,
    )


async def test_a_broken_watch_resumes_after_the_last_event(clock: FakeClock) -> None:
    trainer = FakeTrainer()
    job_id = await submitted(trainer)
    await trainer.emit(job_id, state=pb.JOB_STATE_RUNNING, stage=pb.STAGE_CAPTION)
    await trainer.finish(job_id)
    trainer.watch_errors = [DOWN, DOWN]  # the daemon restarts: two attempts fail
    screen = Screen(clock)
    view = await follower(trainer, job_id, clock, screen).run()
    assert view.finished and view.state == pb.JOB_STATE_SUCCEEDED
    watches = [args for name, args in trainer.calls if name == "watch"]
    assert [after for _, _, after in watches] == [0, 0, 0]
    # A short outage (1.5 s of backoff) is not worth telling the user about.
    assert not any(OFFLINE_NOTE in text for _, text in screen.texts)


async def test_watching_again_starts_after_the_events_already_seen(clock: FakeClock) -> None:
    trainer = FakeTrainer()
    job_id = await submitted(trainer)
    await trainer.emit(job_id, state=pb.JOB_STATE_RUNNING, stage=pb.STAGE_TRAIN)
    view = JobView()
    view.last_seq = 2  # what the bot had shown before it restarted
    run = follower(trainer, job_id, clock, Screen(clock))
    run.view = view
    await trainer.finish(job_id)
    await run.run()
    assert [args[2] for name, args in trainer.calls if name == "watch"] == [2]
    assert view.last_seq == 3 and view.finished


async def test_a_long_outage_is_shown_until_the_job_goes_on(clock: FakeClock) -> None:
    trainer = FakeTrainer()
    job_id = await submitted(trainer)
    await trainer.emit(job_id, state=pb.JOB_STATE_RUNNING, stage=pb.STAGE_TRAIN)
    trainer.watch_errors = [DOWN] * 8  # about 40 s of backoff
    screen = Screen(clock)
    run = follower(trainer, job_id, clock, screen, offline_after=20.0)
    started = clock()
    task_view = run.run()
    await trainer.emit(job_id, progress=pb.Progress(step=1, total=4))
    await trainer.finish(job_id)
    view = await task_view
    await run.live.finish("done")
    offline = [(at, text) for at, text in screen.texts if OFFLINE_NOTE in text]
    assert offline and offline[0][0] - started >= 20.0
    assert view.finished and screen.texts[-1][1] == "done"


async def test_a_job_that_is_gone_is_given_up(clock: FakeClock) -> None:
    trainer = FakeTrainer()
    run = follower(trainer, "no-such-job", clock, Screen(clock))
    view = await run.run()
    assert not view.finished and run.lost_reason == "There is no job no-such-job."


async def test_a_stream_that_ends_early_is_watched_again(clock: FakeClock) -> None:
    class EndsEarly(FakeTrainer):
        def __init__(self) -> None:
            super().__init__()
            self.cut = True

        async def watch(
            self, job_id: str, requester: pb.Requester, after_seq: int = 0
        ) -> AsyncIterator[pb.JobEvent]:
            if self.cut:  # the daemon closes the stream while stopping, without an error
                self.cut = False
                for event in self.events[job_id][after_seq:1]:
                    yield event
                return
            async for event in super().watch(job_id, requester, after_seq):
                yield event

    trainer = EndsEarly()
    job_id = await submitted(trainer)
    await trainer.finish(job_id)
    view = await follower(trainer, job_id, clock, Screen(clock)).run()
    assert view.finished and [args[2] for name, args in trainer.calls if name == "watch"] == [1]


def test_client_state_round_trip_and_foreign_notes() -> None:
    state = ClientState(bot=1, chat=-100, message=5, seq=9)
    assert ClientState.decode(state.encode()) == state
    assert ClientState.decode(state.finished(12).encode()) == ClientState(1, -100, 5, 12, True)
    for foreign in (
        b"",
        b"not json",
        b'{"channel": "C1", "ts": "1.2"}',
        b"[1, 2]",
        b'{"chat": "x", "message": 1}',
    ):
        assert ClientState.decode(foreign) is None
    assert len(ClientState(bot=2**40, chat=-(10**13), message=2**31, seq=2**40).encode()) < 200


async def test_unfinished_jobs_are_this_bots_and_not_done() -> None:
    trainer = FakeTrainer()
    # Ours and running; ours and done; another bot's; no note at all; ours and ended while we were away.
    ids = [await submitted(trainer) for _ in range(5)]
    notes = {
        ids[0]: ClientState(bot=1, chat=7, message=1),
        ids[1]: ClientState(bot=1, chat=7, message=2, done=True),
        ids[2]: ClientState(bot=2, chat=7, message=3),
        ids[4]: ClientState(bot=1, chat=7, message=5, seq=3),
    }
    for job_id, note in notes.items():
        trainer.jobs[job_id].client_state = note.encode()
    await trainer.finish(ids[4])  # ended while the bot was down: its chat still needs the summary
    found = await unfinished_jobs(trainer, bot_id=1)
    assert sorted(job.id for job, _ in found) == sorted([ids[0], ids[4]])
    platform_calls = [args for name, args in trainer.calls if name == "list_jobs"]
    assert all(args[0] == pb.Requester(platform="telegram") and args[2] for args in platform_calls)
