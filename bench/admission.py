"""Admission benchmark: how long a real daemon takes to answer ``Submit`` as the store's history grows.

Run ``python -m bench.admission`` (``--help`` for the options). For each history size (1k, 10k, 100k jobs by
default) it seeds a new store through the store's API in large transactions (finished distillations and
generations of a few hundred users, each with its event log; one user in a hundred is the benchmark's own),
starts ``python -m daemon`` on the demo preset on that store and measures over gRPC, from a client in this
process:

* ``Submit``: the time from sending an upload of the same small portrait to the reply with the queue position,
  over ``--submissions`` jobs after a few unmeasured warm-up ones. Each job is then cancelled and followed to
  its end before the next one goes, so the queue never fills and every submission meets an idle daemon.
* ``ListJobs`` (the user's newest jobs) and ``GetUserStats``, ``--reads`` calls each.

It prints one table row per size and, last, ``admission p99 <largest>/<smallest> ratio: X``: 1.0 is a flat
line, the goal is admission time independent of history. ``--daemon-source DIR`` runs the daemon from another
checkout (e.g. an older release, for a before/after figure); the store is seeded by this one either way, and a
daemon that does not know the indexes simply ignores them.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from distillery.v1 import distillery_pb2 as pb
from PIL import Image

from daemon.jobs.model import Event, GenerateParams, Job, JobKind, JobState, Requester, Stage
from daemon.store.lmdb_store import Store, StoreConfig
from frontends.cli import wait_ready
from frontends.client import DaemonClient, DaemonError

SIZES = (1_000, 10_000, 100_000)
USERS = 300  # owners of the seeded history
BENCH_USER = Requester("telegram", "", "bench", "bench-chat")
SEED_BATCH = 5_000  # jobs per seeding transaction


@dataclass
class Row:
    """One history size's figures; times in milliseconds."""

    jobs: int
    seed_s: float
    start_s: float
    submit_p50: float
    submit_p99: float
    list_p50: float
    list_p99: float
    stats_p50: float
    stats_p99: float
    load: float  # the machine's 1-minute load average after the run


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def size_label(jobs: int) -> str:
    return f"{jobs // 1000}k" if jobs >= 1000 and jobs % 1000 == 0 else str(jobs)


def small_portrait() -> bytes:
    """The demo portrait scaled to 320 px: a typical phone upload after the chat app's compression."""
    from daemon.pipeline.image import demo_portrait

    with Image.open(io.BytesIO(demo_portrait())) as picture:
        buffer = io.BytesIO()
        picture.resize((320, 320)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def past_job(index: int, total: int, now: float) -> tuple[Job, list[Event]]:
    """The index-th of ``total`` finished jobs, one a minute up to an hour ago, with a short event log."""
    created = now - 3600 - (total - index) * 60
    owner = BENCH_USER if index % 100 == 0 else Requester("telegram", "", f"user{index % USERS}", "chat")
    kind = JobKind.GENERATE if index % 3 == 0 else JobKind.DISTILL
    state = {0: JobState.FAILED, 1: JobState.CANCELLED}.get(index % 20, JobState.SUCCEEDED)
    job_id = f"{int(created * 1000):012x}{index:012x}"
    job = Job(
        id=job_id,
        lora_name="" if kind == JobKind.GENERATE else f"seed{index}",
        owner=owner,
        source="upload",
        image_name="" if kind == JobKind.GENERATE else f"seed{index}.png",
        requested_class=None,
        flip=True,
        train_steps=800,
        created_at=created,
        state=state,
        stage=Stage.DONE if state == JobState.SUCCEEDED else Stage.TRAIN,
        started_at=created + 5,
        finished_at=created + 50,
        stage_seconds={"prepare": 1.0, "train": 40.0} if kind == JobKind.DISTILL else {"generate": 8.0},
        error="Training failed because of an internal error (RuntimeError)." if state == JobState.FAILED else "",
        kind=kind,
    )
    if kind == JobKind.GENERATE:
        job.generate = GenerateParams("a portrait", "a portrait", [], "", 1, 7.0, 20, 512, 512, 2)
        job.outputs = [f"{job_id}-1.png", f"{job_id}-2.png"] if state == JobState.SUCCEEDED else []
    steps = [
        (JobState.QUEUED, Stage.QUEUED, "accepted"),
        (JobState.RUNNING, Stage.PREPARE, ""),
        (JobState.RUNNING, Stage.TRAIN, "progress"),
        (state, job.stage, "finished"),
    ]
    events = [
        Event(job_id, seq, created + seq, event_state, stage, f"step {seq}", kind_name)
        for seq, (event_state, stage, kind_name) in enumerate(steps, start=1)
    ]
    job.last_seq = len(events)
    return job, events


def seed(store_dir: Path, jobs: int) -> float:
    """Fill a new store with ``jobs`` finished jobs through the store's API; returns the seconds it took."""
    started = time.perf_counter()
    store = Store(StoreConfig(path=store_dir))
    now = time.time()
    try:
        for start in range(0, jobs, SEED_BATCH):
            store.put_jobs([past_job(index, jobs, now) for index in range(start, min(start + SEED_BATCH, jobs))])
    finally:
        store.close()
    return time.perf_counter() - started


async def timed(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    """Milliseconds of ``count`` sequential calls."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


async def submit_and_cancel(client: DaemonClient, upload: bytes) -> float:
    """One measured submission (ms); the job is then cancelled and followed to its end, unmeasured."""
    who = pb.Requester(platform=BENCH_USER.platform, user=BENCH_USER.user, chat=BENCH_USER.chat)
    started = time.perf_counter()
    reply = await client.submit(client.spec(who, upload=True, subject_class="woman"), upload)
    elapsed = (time.perf_counter() - started) * 1000
    try:
        await client.cancel(reply.job.id, who)
    except DaemonError as error:
        if error.code != grpc.StatusCode.FAILED_PRECONDITION:  # it had already ended: nothing to cancel
            raise
    async for _ in client.watch(reply.job.id, who):
        pass
    return elapsed


def start_daemon(state: Path, models: tuple[Path, Path], source: Path | None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "daemon", "--preset", "demo", "--state-dir", str(state)]
    command += ["--socket", str(state / "d.sock"), "--base-model", str(models[0]), "--captioner", str(models[1])]
    env = {key: value for key, value in os.environ.items() if not key.startswith("DISTILLERY_")}
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), str(source / "protos")])
    with open(state / "daemon.log", "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=source)


async def measure(jobs: int, args: argparse.Namespace, models: tuple[Path, Path], upload: bytes) -> Row:
    with tempfile.TemporaryDirectory(prefix="admission-") as folder:
        state = Path(folder)
        seed_s = seed(state / "store", jobs)
        started = time.perf_counter()
        daemon = start_daemon(state, models, args.daemon_source)
        client = DaemonClient(f"unix:{state / 'd.sock'}")
        try:
            await wait_ready(client, daemon, timeout=600)
            start_s = time.perf_counter() - started
            for _ in range(args.warmup):
                await submit_and_cancel(client, upload)
            submits = [await submit_and_cancel(client, upload) for _ in range(args.submissions)]
            who = pb.Requester(platform=BENCH_USER.platform, user=BENCH_USER.user)
            lists = await timed(lambda: client.list_jobs(who, limit=50), args.reads)
            stats = await timed(lambda: client.user_stats(who), args.reads)
        finally:
            await client.close()
            daemon.terminate()
            daemon.wait(timeout=120)
    return Row(
        jobs=jobs,
        seed_s=seed_s,
        start_s=start_s,
        submit_p50=percentile(submits, 50),
        submit_p99=percentile(submits, 99),
        list_p50=percentile(lists, 50),
        list_p99=percentile(lists, 99),
        stats_p50=percentile(stats, 50),
        stats_p99=percentile(stats, 99),
        load=os.getloadavg()[0],
    )


def render(rows: Sequence[Row]) -> str:
    """The table, then the ratio line (always last)."""
    lines = [
        "| jobs stored | seed s | daemon start s | Submit p50 ms | Submit p99 ms | ListJobs p50 / p99 ms "
        "| GetUserStats p50 / p99 ms | load avg |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.jobs:,} | {row.seed_s:.1f} | {row.start_s:.1f} | {row.submit_p50:.1f} | {row.submit_p99:.1f} "
            f"| {row.list_p50:.1f} / {row.list_p99:.1f} | {row.stats_p50:.1f} / {row.stats_p99:.1f} "
            f"| {row.load:.1f} |"
        )
    small, large = min(rows, key=lambda row: row.jobs), max(rows, key=lambda row: row.jobs)
    ratio = large.submit_p99 / small.submit_p99
    lines.append(f"admission p99 {size_label(large.jobs)}/{size_label(small.jobs)} ratio: {ratio:.2f}")
    return "\n".join(lines)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.admission", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="history sizes, comma-separated")
    parser.add_argument("--submissions", type=int, default=200, help="measured submissions per size")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured submissions first, per size")
    parser.add_argument("--reads", type=int, default=50, help="measured ListJobs and GetUserStats calls per size")
    parser.add_argument("--models-dir", type=Path, help="where the demo models are built (default: a temp dir)")
    parser.add_argument("--daemon-source", type=Path, help="run the daemon from this checkout instead")
    parser.add_argument("--json", type=Path, help="also write the rows here as JSON")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, out: Callable[[str], None]) -> list[Row]:
    from daemon.models.demo import ensure_demo_models

    sizes = [int(size) for size in args.sizes.split(",")]
    upload = small_portrait()
    with tempfile.TemporaryDirectory(prefix="admission-models-") as scratch:
        models = ensure_demo_models(args.models_dir or Path(scratch))
        rows = []
        for jobs in sizes:
            rows.append(await measure(jobs, args, models, upload))
            out(f"{jobs:,} jobs: Submit p99 {rows[-1].submit_p99:.1f} ms")
    return rows


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> list[Row]:
    """Run the benchmark, print the table and the ratio line; returns the rows."""
    args = parse(argv)
    rows = asyncio.run(run(args, out))
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2))
    out(render(rows))
    return rows


if __name__ == "__main__":
    main()
