"""The Ray executor on one machine: a real daemon (``--executor ray --ray-address local --ray-workers 2``)
with two CPU actors on the demo preset, driven over gRPC and by the real Telegram bot.

One daemon, and so one local Ray, serves the whole module (starting Ray and loading the models in two actors
takes seconds). The tests follow each job's own events; the only waits are for events, jobs or processes.
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.client import DaemonClient
from frontends.telegram.bot import DistilleryBot
from tests.daemon_process import RunningDaemon, start_daemon
from tests.frontends.telegram.conftest import StartBot, bot_api, final_edit, reply_to, start_bot  # noqa: F401
from tests.frontends.telegram.fake_bot_api import FakeBotApi, private_chat, user

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

OPERATOR = pb.Requester(platform="cli", user="operator", chat="terminal")
RAY_ARGS = ("--executor", "ray", "--ray-address", "local", "--ray-workers", "2", "--ray-object-store-mb", "128")
# Long enough to be caught mid-training on any machine, short enough for CI.
LONG_JOB_STEPS = 150


class ClusterDaemon:
    """The module's Ray-backed daemon; the last test kills it."""

    def __init__(self, state_dir: Path, models: tuple[Path, Path]) -> None:
        self.state_dir, self.models = state_dir, models
        # Ray's sockets must fit the kernel's path limit: a short folder of its own, not under pytest's tmp.
        self.ray_dir = Path(tempfile.mkdtemp(prefix="dray-"))
        self.running: RunningDaemon = start_daemon(
            state_dir, models, *RAY_ARGS, "--ray-temp-dir", str(self.ray_dir), "--user-active-limit", "20",
            timeout=300.0,
        )
        self.killed = False


@pytest.fixture(scope="module")
def cluster(demo_models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDaemon]:
    with pytest.MonkeyPatch.context() as env:
        # The daemon starts its private Ray as a user's would: token authentication on, with its own token.
        for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_TMPDIR"):
            env.delenv(name, raising=False)
        daemon = ClusterDaemon(tmp_path_factory.mktemp("ray") / "state", demo_models)
        yield daemon
        if not daemon.killed:
            status = daemon.running.stop(timeout=120)
            assert status == 0, daemon.running.log_text()
        shutil.rmtree(daemon.ray_dir, ignore_errors=True)


@pytest.fixture
async def client(cluster: ClusterDaemon) -> AsyncIterator[DaemonClient]:
    client = DaemonClient(cluster.running.target)
    yield client
    await client.close()


def spec(client: DaemonClient, steps: int = 0) -> pb.DistillSpec:
    request = client.spec(OPERATOR, upload=True)
    request.train_steps = steps
    return request


async def collect(events: AsyncIterator[pb.JobEvent]) -> list[pb.JobEvent]:
    return [event async for event in events]


def assert_contiguous(events: list[pb.JobEvent]) -> None:
    """In order, with no gap and no duplicate, from the first event to the final one."""
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert events[-1].WhichOneof("detail") == "finished"


def training_step(event: pb.JobEvent) -> bool:
    """A progress event of the training stage: the job is mid-run."""
    return event.stage == pb.STAGE_TRAIN and event.WhichOneof("detail") == "progress"


async def follow_acting_mid_training(
    client: DaemonClient, job_id: str, act: Callable[[pb.Worker], Awaitable[None]]
) -> tuple[list[pb.JobEvent], pb.Worker]:
    """Every event of the job; at its first training step, ``act`` on the worker running it."""
    events: list[pb.JobEvent] = []
    worker: pb.Worker | None = None
    async for event in client.watch(job_id, OPERATOR):
        events.append(event)
        if worker is None and training_step(event):
            [worker] = [w for w in (await client.status()).workers if w.job_id == job_id]
            await act(worker)
    assert worker is not None, "the job never reached training"
    return events, worker


async def until_idle(client: DaemonClient, count: int, timeout: float = 300.0) -> list[pb.Worker]:
    """Wait until ``count`` workers are idle (a restarted actor loads its models first)."""
    deadline = time.monotonic() + timeout
    while True:
        workers = list((await client.status()).workers)
        if sum(worker.state == pb.WORKER_STATE_IDLE for worker in workers) == count:
            return workers
        assert time.monotonic() < deadline, workers
        await asyncio.sleep(0.1)


def wait_process_gone(pid: int, timeout: float) -> bool:
    """Block until the process ``pid`` (not our child) exits: its pidfd turns readable."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


async def test_two_actors_run_two_jobs_at_once_and_all_four_succeed(
    client: DaemonClient, portrait_png: bytes
) -> None:
    workers = await until_idle(client, 2)
    assert {worker.id for worker in workers} == {"ray-0", "ray-1"}
    assert all(worker.pid > 0 and worker.device == "cpu" and worker.node for worker in workers)
    replies = [await client.submit(spec(client), portrait_png) for _ in range(4)]
    runs = await asyncio.gather(*(collect(client.watch(reply.job.id, OPERATOR)) for reply in replies))
    for events in runs:
        assert events[-1].state == pb.JOB_STATE_SUCCEEDED, events[-1].text
        assert_contiguous(events)
    jobs = [await client.get_job(reply.job.id, OPERATOR) for reply in replies]
    intervals = sorted((job.started_at, job.finished_at) for job in jobs)
    # Two actors: the first two jobs were dispatched together, so their runs overlap.
    (_, first_end), (second_start, _) = intervals[0], intervals[1]
    assert second_start < first_end, intervals
    assert (await client.status()).ready


async def test_an_actor_killed_mid_job_loses_nothing(client: DaemonClient, portrait_png: bytes) -> None:
    await until_idle(client, 2)
    reply = await client.submit(spec(client, LONG_JOB_STEPS), portrait_png)

    async def kill(worker: pb.Worker) -> None:
        os.kill(worker.pid, signal.SIGKILL)

    events, killed = await follow_acting_mid_training(client, reply.job.id, kill)
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED, events[-1].text
    assert_contiguous(events)
    texts = [event.text for event in events]
    assert "Its worker stopped; your job is first in the queue again." in texts
    job = await client.get_job(reply.job.id, OPERATOR)
    assert job.attempts == 2
    # Ray restarted the killed actor: the same worker, a new process, taking jobs again.
    workers = {worker.id: worker for worker in await until_idle(client, 2)}
    assert workers[killed.id].pid != killed.pid


async def test_cancel_stops_the_running_job_and_the_actor_takes_the_next(
    client: DaemonClient, portrait_png: bytes
) -> None:
    await until_idle(client, 2)
    reply = await client.submit(spec(client, 5000), portrait_png)

    async def cancel(worker: pb.Worker) -> None:
        await client.cancel(reply.job.id, OPERATOR)

    events, worker = await follow_acting_mid_training(client, reply.job.id, cancel)
    assert events[-1].state == pb.JOB_STATE_CANCELLED
    assert_contiguous(events)
    # The same process, not a restarted one, and both actors finish the next two jobs.
    workers = {w.id: w for w in await until_idle(client, 2)}
    assert workers[worker.id].pid == worker.pid
    replies = [await client.submit(spec(client), portrait_png) for _ in range(2)]
    runs = await asyncio.gather(*(collect(client.watch(r.job.id, OPERATOR)) for r in replies))
    assert [events[-1].state for events in runs] == [pb.JOB_STATE_SUCCEEDED] * 2


async def test_a_job_sent_while_both_actors_restart_runs_once_they_are_back_on_attempt_one(
    client: DaemonClient, portrait_png: bytes
) -> None:
    workers = await until_idle(client, 2)
    for worker in workers:
        os.kill(worker.pid, signal.SIGKILL)
    reply = await client.submit(spec(client), portrait_png)
    events = await collect(client.watch(reply.job.id, OPERATOR))
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED, events[-1].text
    assert_contiguous(events)
    assert (await client.get_job(reply.job.id, OPERATOR)).attempts == 1
    restarted = {worker.id: worker for worker in await until_idle(client, 2)}
    assert all(restarted[worker.id].pid != worker.pid for worker in workers)


async def test_a_job_sent_while_one_actor_restarts_runs_on_attempt_one(
    client: DaemonClient, portrait_png: bytes
) -> None:
    killed, _ = await until_idle(client, 2)
    os.kill(killed.pid, signal.SIGKILL)
    reply = await client.submit(spec(client), portrait_png)
    events = await collect(client.watch(reply.job.id, OPERATOR))
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED, events[-1].text
    assert_contiguous(events)
    assert (await client.get_job(reply.job.id, OPERATOR)).attempts == 1
    await until_idle(client, 2)


def test_every_log_line_naming_a_job_is_about_that_job(cluster: ClusterDaemon) -> None:
    lines = cluster.running.log_text().splitlines()
    revival = re.compile(r"worker ray-\d+ (is not back yet|ready on)")
    revivals = [line for line in lines if revival.search(line)]
    # The kills above made the daemon revive workers; those lines concern a worker, never a job.
    assert revivals, "no worker was revived"
    assert not [line for line in revivals if " job=" in line], revivals
    for line in lines:
        tagged = re.search(r" job=([\w-]+):", line)
        if tagged is None:
            continue
        message = line.split(": ", 1)[-1]
        named = [name for name in re.findall(r"\bjob ([\w-]+)", message) if len(name) == len(tagged[1])]
        assert set(named) <= {tagged[1]}, line


def test_the_private_rays_files_stay_in_its_folder(cluster: ClusterDaemon) -> None:
    token = cluster.ray_dir / "auth_token"
    assert token.stat().st_mode & 0o777 == 0o600
    assert any(cluster.ray_dir.glob("session_*/logs/raylet.out"))


async def test_a_telegram_user_distills_through_the_ray_daemon(
    bot_api: FakeBotApi, start_bot: StartBot, client: DaemonClient, portrait_png: bytes  # noqa: F811
) -> None:
    bot: DistilleryBot = await start_bot(client)
    message = bot_api.photo(user(801), private_chat(801), portrait_png, caption="/distill")
    bot_api.send(message)
    first = await reply_to(bot_api, message)
    summary = await final_edit(bot_api, 801, first.result["message_id"], timeout=120)
    assert " is ready in " in summary.text and "Caption: " in summary.text
    assert bot is not None


async def test_a_killed_daemon_takes_its_actors_along_and_the_job_recovers(
    cluster: ClusterDaemon, client: DaemonClient, portrait_png: bytes, demo_models: tuple[Path, Path]
) -> None:
    workers = await until_idle(client, 2)
    reply = await client.submit(spec(client, LONG_JOB_STEPS), portrait_png)
    async for event in client.watch(reply.job.id, OPERATOR):
        if training_step(event):
            break
    cluster.killed = True
    cluster.running.stop(signal.SIGKILL)
    # Not detached: the actors die with their driver and free their GPUs.
    for worker in workers:
        assert await asyncio.to_thread(wait_process_gone, worker.pid, 60.0), f"actor {worker.pid} outlived it"
    # The next start (the local executor here) finds the job in the store and runs it again.
    restarted = start_daemon(cluster.state_dir, demo_models)
    recovered = DaemonClient(restarted.target)
    try:
        events = await collect(recovered.watch(reply.job.id, OPERATOR))
        assert events[-1].state == pb.JOB_STATE_SUCCEEDED, events[-1].text
        assert_contiguous(events)
        assert (await recovered.get_job(reply.job.id, OPERATOR)).attempts == 2
    finally:
        await recovered.close()
        assert restarted.stop() == 0, restarted.log_text()
