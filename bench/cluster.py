"""``python -m bench.cluster``: the same demo jobs through the local worker, Ray with one actor and Ray with two.

Each configuration runs in its own process (a fresh store, a fresh private Ray) with the daemon's own pieces:
the journal, the queue and the executor, without gRPC. Every worker first runs one untimed warm-up job (it
builds the regularization set and touches every code path once); then ``--jobs`` distill jobs of the demo
portrait are queued at once and timed until the last one has finished. Every worker uses one torch thread, so
two actors on two cores compare fairly with one.

Printed: wall time and throughput per configuration, the throughput of two actors over one, and Ray's dispatch
overhead per job (one actor's wall time minus the local worker's, over the number of jobs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from daemon.jobs.executor import Executor
from daemon.jobs.hub import EventHub
from daemon.jobs.journal import Journal
from daemon.jobs.model import Job, JobState, Requester, SubjectClass
from daemon.jobs.queue import JobQueue
from daemon.settings import Settings, load_settings
from daemon.store.lmdb_store import Store

CONFIGS = ("local", "ray-1", "ray-2")
OWNER = Requester("cli", "", "bench")


@dataclass
class Result:
    config: str
    jobs: int
    wall_s: float
    ready_s: float  # from start to a worker ready (Ray start, model loads)

    @property
    def jobs_per_min(self) -> float:
        return 60.0 * self.jobs / self.wall_s


def _settings(state: Path, models: Path, config: str, steps: int) -> Settings:
    args = ["--state-dir", str(state), "--preset", "demo", "--reg-images", "6", "--train-steps", str(steps)]
    args += ["--base-model", str(models / "base"), "--captioner", str(models / "captioner")]
    if config != "local":
        workers = config.removeprefix("ray-")
        args += ["--executor", "ray", "--ray-address", "local", "--ray-workers", workers]
    return load_settings(args, environ={})


def _add_jobs(store: Store, journal: Journal, queue: JobQueue, count: int, png: bytes, tag: str) -> list[str]:
    ids = []
    for index in range(count):
        job = Job(
            id=f"{time.time_ns():020d}{tag}{index:03d}",
            lora_name=f"bench{tag}{index}",
            owner=OWNER,
            source="upload",
            image_name=f"bench{tag}{index}.png",
            requested_class=SubjectClass.PERSON,
            flip=True,
            train_steps=0,
            created_at=time.time(),
        )
        first = journal.new_event(job, "accepted", 1, "accepted")
        store.create_job(job, first, png, "0" * 64)
        ids.append(job.id)
    for job_id in ids:
        queue.push(job_id)
    return ids


async def _finished(store: Store, ids: list[str]) -> None:
    while True:
        states = [store.get_job(job_id).state for job_id in ids]
        failed = [job_id for job_id, state in zip(ids, states, strict=True) if state == JobState.FAILED]
        if failed:
            raise RuntimeError(f"job {failed[0]} failed: {store.get_job(failed[0]).error}")
        if all(state.finished for state in states):
            return
        await asyncio.sleep(0.05)


async def _open(settings: Settings, store: Store, journal: Journal, queue: JobQueue) -> tuple[Executor, int]:
    """The configuration's executor, started; and how many workers it has."""
    if settings.executor == "ray":
        from daemon.cluster.executor import RayExecutor

        cluster = RayExecutor(queue, journal, store, settings, max_attempts=2)
        await cluster.open()
        cluster.start()
        return cluster, settings.ray_workers
    from daemon.jobs.inputs import StoreBlobs, read_inputs
    from daemon.jobs.worker import Worker
    from daemon.models.resident import load_resident, resolve_model_config
    from daemon.pipeline.runner import WorkerFacts, build_runner

    resident = load_resident(resolve_model_config(settings.models, settings.state_dir))
    facts = WorkerFacts.of(resident)
    runner = build_runner(resident, settings.train, settings.reg_images, settings.lora_cache)
    reg_key, blobs = facts.reg_key(settings.train.resolution), StoreBlobs(store)
    worker = Worker(queue, journal, runner, read_inputs=lambda job: read_inputs(store, job, blobs, reg_key))
    worker.start()
    return worker, 1


async def run_one(config: str, models: Path, jobs: int, steps: int, png: bytes) -> Result:
    """Warm up every worker, then time ``jobs`` jobs queued at once."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{config}-") as folder:
        settings = _settings(Path(folder), models, config, steps)
        store = Store(settings.store)
        journal = Journal(store, EventHub(asyncio.get_running_loop()))
        queue = JobQueue()
        started = time.monotonic()
        executor, workers = await _open(settings, store, journal, queue)
        ready = time.monotonic() - started
        await _finished(store, _add_jobs(store, journal, queue, workers, png, "w"))
        timed = time.monotonic()
        await _finished(store, _add_jobs(store, journal, queue, jobs, png, "j"))
        wall = time.monotonic() - timed
        await asyncio.to_thread(executor.stop, 60.0)
        store.close()
        return Result(config, jobs, wall, ready)


def main(argv: list[str] | None = None) -> None:
    """Run every configuration in its own process and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=24, help="training steps per job")
    parser.add_argument("--one", choices=CONFIGS, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from daemon.pipeline.image import demo_portrait

    if args.one:
        result = asyncio.run(run_one(args.one, args.models, args.jobs, args.steps, demo_portrait()))
        print(json.dumps(result.__dict__))
        return
    from daemon.models.demo import ensure_demo_models

    with tempfile.TemporaryDirectory(prefix="bench-models-") as folder:
        base, captioner = ensure_demo_models(Path(folder))
        models = Path(folder)
        (models / "base").symlink_to(base)
        (models / "captioner").symlink_to(captioner)
        # A private Ray without token authentication, and no idle Ray workers started ahead of need.
        env = os.environ | {"RAY_AUTH_MODE": "disabled", "RAY_enable_worker_prestart": "0"}
        results = []
        for config in CONFIGS:
            command = [sys.executable, "-m", "bench.cluster", "--one", config, "--models", str(models)]
            command += ["--jobs", str(args.jobs), "--steps", str(args.steps)]
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{config} failed:\n{done.stderr[-4000:]}")
            results.append(Result(**json.loads(done.stdout.strip().splitlines()[-1])))
    print(f"{'executor':<9} {'jobs':>4} {'wall s':>8} {'jobs/min':>9} {'ready s':>8}")
    for result in results:
        print(
            f"{result.config:<9} {result.jobs:>4} {result.wall_s:>8.1f} "
            f"{result.jobs_per_min:>9.2f} {result.ready_s:>8.1f}"
        )
    local, one, two = results
    print(f"throughput ray 2 actors / 1 actor: {two.jobs_per_min / one.jobs_per_min:.2f}x")
    print(f"ray dispatch overhead per job: {(one.wall_s - local.wall_s) / one.jobs:.2f} s")


if __name__ == "__main__":
    main()
