"""Item 10 on the daemon's own lifecycle (rpc/server.Daemon, in-process, stand-in pipeline).

The stand-in pipeline holds its job away from a safe point until the test lets it go, which opens the window
in which the stopping daemon can be observed: health NOT_SERVING, new submissions UNAVAILABLE, the running
job back in the queue once it reaches its safe point, and a stop bounded by ``stop_grace`` when it never does.
(The real daemon's SIGTERM path is covered in tests/test_e2e.py and test_operations.py.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from daemon.jobs.contract import JobContext, Outcome
from daemon.jobs.model import JobState, Stage
from daemon.jobs.worker import Worker
from daemon.pipeline.name import NameMinter
from daemon.rpc.server import Daemon
from daemon.settings import load_settings
from daemon.store.lmdb_store import Store, StoreConfig
from frontends.client import DaemonClient, DaemonError
from tests.clip_vocab import build_tokenizer
from tests.reliability.helpers import OPERATOR
from tests.rpc.test_service_rpc import WORDS


class HeldPipeline:
    """Trains until ``release`` is set without checking for a stop: a step that takes long."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, ctx: JobContext) -> Outcome:
        ctx.stage(Stage.TRAIN, "Training.")
        self.entered.set()
        self.release.wait(30)
        ctx.check()  # the safe point
        raise AssertionError("a stopping daemon must not finish the job")


async def started_daemon(tmp_path: Path, stop_grace: float) -> tuple[Daemon, HeldPipeline, DaemonClient]:
    sock = Path(f"/tmp/distillery-stop-{time.monotonic_ns()}.sock")
    settings = load_settings(["--state-dir", str(tmp_path), "--socket", str(sock)], environ={})
    daemon = Daemon(dataclasses.replace(settings, stop_grace=stop_grace))
    await daemon.start()
    pipeline = HeldPipeline()
    # What Daemon.load does once the models are resident, with the stand-in pipeline.
    worker = Worker(daemon.queue, daemon.journal, pipeline)
    daemon.executor = worker
    daemon.core.attach(worker, NameMinter(build_tokenizer(WORDS)), "cpu")
    worker.start()
    for service in ("", "distillery.v1.Distillery"):
        await daemon.health.set(service, health_pb2.HealthCheckResponse.SERVING)
    return daemon, pipeline, DaemonClient(f"unix:{sock}")


async def test_stopping_turns_health_off_refuses_jobs_and_requeues_the_running_one(
    tmp_path: Path, portrait_png: bytes
) -> None:
    daemon, pipeline, client = await started_daemon(tmp_path, stop_grace=30.0)
    try:
        assert await client.ready()
        reply = await client.submit(client.spec(OPERATOR, upload=True), portrait_png)
        assert await asyncio.to_thread(pipeline.entered.wait, 10)
        stopping = asyncio.create_task(daemon.stop())
        deadline = time.monotonic() + 5
        while await client.ready() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not await client.ready()
        with pytest.raises(DaemonError) as refused:
            await client.submit(client.spec(OPERATOR, upload=True, no_flip=True), portrait_png)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        assert not stopping.done()  # still waiting for the job's safe point
        pipeline.release.set()
        await asyncio.wait_for(stopping, 10)
    finally:
        pipeline.release.set()
        await client.close()
    store = Store(StoreConfig(path=tmp_path / "store"))
    try:
        job = store.get_job(reply.job.id)
        assert job.state == JobState.QUEUED and job.attempts == 0
        assert len(store.jobs()) == 1
    finally:
        store.close()


async def test_a_job_that_never_reaches_a_safe_point_does_not_hold_the_stop(
    tmp_path: Path, portrait_png: bytes
) -> None:
    daemon, pipeline, client = await started_daemon(tmp_path, stop_grace=1.0)
    try:
        await client.submit(client.spec(OPERATOR, upload=True), portrait_png)
        assert await asyncio.to_thread(pipeline.entered.wait, 10)
        began = time.monotonic()
        await asyncio.wait_for(daemon.stop(), 15)
        # The grace, then at most the servers' own 2 s grace for open calls.
        assert time.monotonic() - began < 5
    finally:
        pipeline.release.set()
        await client.close()
