"""The core's job followers in virtual time, on a recording platform: resume from the last event, say "offline"
only after an outage outlasts a restart, give up on a job that is gone, deliver results in albums counted on
the job so that a restart sends none twice; and the client-state record every platform shares."""

from __future__ import annotations

import json

import grpc
import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.client import OFFLINE, DaemonError
from frontends.clientstate import ClientState
from frontends.follow import GONE, OFFLINE_NOTE, Followers, preview_image
from frontends.live import Pacer
from frontends.render import JobView
from tests.frontends.fakes import FakeClock, FakeDaemon, FakePlatform

ANN = pb.Requester(platform="telegram", user="7", chat="7")
DOWN = DaemonError(grpc.StatusCode.UNAVAILABLE, OFFLINE)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon("telegram", "")


@pytest.fixture
def platform(clock: FakeClock) -> FakePlatform:
    return FakePlatform(clock)


def followers(daemon: FakeDaemon, platform: FakePlatform, clock: FakeClock, **options: object) -> Followers:
    pacer = Pacer(platform.interval, clock=clock, sleep=clock.sleep)
    return Followers(
        daemon,
        platform,
        pacer,
        platform_name="telegram",
        bot="1",
        clock=clock,
        sleep=clock.sleep,
        **options,  # type: ignore[arg-type]
    )


async def submitted(daemon: FakeDaemon) -> pb.Job:
    reply = await daemon.submit(pb.DistillSpec(requester=ANN, url="https://example.org/a.jpg"))
    return reply.job


def note(daemon: FakeDaemon, job_id: str) -> ClientState:
    state = ClientState.decode(daemon.jobs[job_id].client_state)
    assert state is not None
    return state


async def test_a_job_is_posted_followed_and_summarised(
    daemon: FakeDaemon, platform: FakePlatform, clock: FakeClock
) -> None:
    job = await submitted(daemon)
    jobs = followers(daemon, platform, clock, lora_file_limit=100)
    view = JobView()
    view.apply_job(job)
    place = await jobs.post(job, view, reply_to="3")
    assert note(daemon, job.id) == ClientState(chat="7", message=place.message, bot="1")
    await daemon.run_to(job.id, steps=3)
    await daemon.finish(job.id)
    await jobs.wait(job.id)
    assert platform.sent[0][2].buttons[0].value == job.id  # the Cancel button, until the end
    assert platform.edits[-1][2].text.startswith("name1 is ready") and platform.edits[-1][2].buttons == ()
    [(where, [lora_file])] = platform.uploads
    assert where == place and lora_file.name == "name1.safetensors" and not lora_file.picture
    assert note(daemon, job.id) == ClientState("7", place.message, daemon.jobs[job.id].last_seq, True, 1, "1")


async def shown_and_broken(daemon: FakeDaemon, failed_watches: int) -> pb.Job:
    """A running job whose message shows its second event, and a daemon whose next watches fail."""
    job = await submitted(daemon)
    await daemon.emit(job.id, state=pb.JOB_STATE_RUNNING, stage=pb.STAGE_TRAIN)
    daemon.jobs[job.id].client_state = ClientState("7", "70", seq=2, bot="1").encode()
    daemon.watch_errors = [DOWN] * failed_watches
    return job


async def test_a_broken_watch_resumes_after_the_last_event(
    daemon: FakeDaemon, platform: FakePlatform, clock: FakeClock
) -> None:
    job = await shown_and_broken(daemon, 2)  # the daemon restarts: two attempts fail
    jobs = followers(daemon, platform, clock, offline_after=30.0)
    assert await jobs.reattach() == 1
    await daemon.finish(job.id)
    await jobs.wait(job.id)
    assert [args[2] for name, args in daemon.calls if name == "watch"] == [2, 2, 2]
    # A short outage (1.5 s of backoff) is not worth telling the user about.
    assert not any(OFFLINE_NOTE in text for text in platform.texts())
    assert platform.texts()[-1].startswith("name1 is ready") and note(daemon, job.id).done


async def test_a_long_outage_is_shown_until_the_job_goes_on(
    daemon: FakeDaemon, platform: FakePlatform, clock: FakeClock
) -> None:
    job = await shown_and_broken(daemon, 8)  # about 40 s of backoff
    jobs = followers(daemon, platform, clock, offline_after=20.0)
    started = clock()
    await jobs.reattach()
    await daemon.emit(job.id, progress=pb.Progress(step=1, total=4))
    await daemon.finish(job.id)
    await jobs.wait(job.id)
    offline = [at for at, _, look in platform.edits if look.note == OFFLINE_NOTE]
    assert offline and offline[0] - started >= 20.0
    assert platform.edits[-1][2].note == ""


async def test_a_job_that_is_gone_is_given_up(
    daemon: FakeDaemon, platform: FakePlatform, clock: FakeClock
) -> None:
    job = await submitted(daemon)
    daemon.jobs[job.id].client_state = ClientState("7", "70", bot="1").encode()
    jobs = followers(daemon, platform, clock)
    await jobs.reattach()
    record = daemon.jobs.pop(job.id)  # the daemon's store was wiped
    await daemon.break_watches()
    await jobs.wait(job.id)
    last = platform.edits[-1][2]
    assert last.note == GONE and last.buttons == ()
    assert ClientState.decode(record.client_state) is not None


async def test_a_generation_is_delivered_in_albums_counted_on_the_job(
    daemon: FakeDaemon, platform: FakePlatform, clock: FakeClock
) -> None:
    events = daemon.generate(pb.GenerateSpec(prompt="a cat", count=3), ANN)
    accepted = await anext(events)
    job = await daemon.get_job(accepted.job_id, ANN)
    jobs = followers(daemon, platform, clock)
    view = JobView()
    view.apply_job(job)
    await jobs.post(job, view)
    await daemon.finish(job.id)
    await jobs.wait(job.id)
    await events.aclose()
    # The platform takes two files per upload: two uploads, the note counting after each.
    assert [[file.name for file in files] for _, files in platform.uploads] == [
        ["job1-1.png", "job1-2.png"],
        ["job1-3.png"],
    ]
    assert platform.uploads[0][1][0].caption.startswith("job1-1.png - seed 1234")
    counts = [json.loads(state).get("delivered", 0) for job_id, state in daemon.states if job_id == job.id]
    assert counts[-3:] == [2, 3, 3] and note(daemon, job.id).done  # the last one marks it done


async def test_a_restart_while_delivering_sends_only_what_is_left(
    daemon: FakeDaemon, platform: FakePlatform, clock: FakeClock
) -> None:
    events = daemon.generate(pb.GenerateSpec(prompt="a cat", count=3), ANN)
    accepted = await anext(events)
    await events.aclose()
    await daemon.finish(accepted.job_id)
    # As the note reads when the bot stopped after the summary and the first album.
    daemon.jobs[accepted.job_id].client_state = ClientState(
        "7", "70", seq=daemon.jobs[accepted.job_id].last_seq, delivered=2, bot="1"
    ).encode()
    jobs = followers(daemon, platform, clock)
    assert await jobs.reattach() == 1
    await jobs.wait(accepted.job_id)
    [(_, [picture])] = platform.uploads
    # Read back from the record (no FINISHED event after the note's seq), with its facts asked for.
    assert picture.name == "job1-3.png" and picture.caption.startswith("job1-3.png - seed 1236")
    assert note(daemon, accepted.job_id).done
    assert await followers(daemon, platform, clock).reattach() == 0  # done: nothing more, ever


async def test_a_preview_and_file_after_a_restart_come_from_the_records(
    daemon: FakeDaemon, platform: FakePlatform, clock: FakeClock
) -> None:
    job = await submitted(daemon)
    await daemon.finish(job.id)
    daemon.images["name1-preview.png"] = b"PNG preview"
    daemon.jobs[job.id].output_images.append("name1-preview.png")
    daemon.jobs[job.id].client_state = ClientState("7", "70", seq=daemon.jobs[job.id].last_seq, bot="1").encode()
    jobs = followers(daemon, platform, clock, result_image=preview_image(daemon), lora_file_limit=100)
    await jobs.reattach()
    await jobs.wait(job.id)
    [(_, files)] = platform.uploads
    assert [(file.name, file.picture) for file in files] == [
        ("name1-preview.png", True),
        ("name1.safetensors", False),
    ]
    assert files[0].title == "name1: its preview"


async def test_reattach_takes_this_bots_unfinished_jobs_only(
    daemon: FakeDaemon, platform: FakePlatform, clock: FakeClock
) -> None:
    # Ours and running; ours and done; another bot's; no note at all; ours from before bot ids were noted.
    ids = [(await submitted(daemon)).id for _ in range(5)]
    notes = {
        ids[0]: ClientState("7", "1", bot="1"),
        ids[1]: ClientState("7", "2", done=True, bot="1"),
        ids[2]: ClientState("7", "3", bot="2"),
        ids[4]: ClientState("7", "5"),
    }
    for job_id, state in notes.items():
        daemon.jobs[job_id].client_state = state.encode()
    jobs = followers(daemon, platform, clock)
    assert await jobs.reattach() == 2
    assert jobs.is_following(ids[0]) and jobs.is_following(ids[4])
    assert all(args[0] == pb.Requester(platform="telegram") for name, args in daemon.calls if name == "list_jobs")
    await jobs.close()


def test_client_state_round_trips_reads_older_notes_and_refuses_foreign_ones() -> None:
    state = ClientState(chat="-100", message="5", seq=9, delivered=2, bot="1")
    assert ClientState.decode(state.encode()) == state
    assert ClientState.decode(state.finished(12).encode()) == ClientState("-100", "5", 12, True, 2, "1")
    # Telegram's numbers and Slack's channel/ts/images, as notes written before the shared record.
    assert ClientState.decode(b'{"bot":1,"chat":-100,"message":5,"seq":3}') == ClientState("-100", "5", 3, bot="1")
    slack = b'{"channel":"C1","ts":"1.2","seq":4,"done":true,"images":2}'
    assert ClientState.decode(slack) == ClientState("C1", "1.2", 4, True, 2)
    for foreign in (b"", b"not json", b"[1, 2]", b'{"chat": "x"}', b'{"chat": true, "message": 1}', b"{}"):
        assert ClientState.decode(foreign) is None
    assert len(ClientState("C0123456789", "1700000000.123456", 2**40, True, 99, str(2**40)).encode()) < 150
