"""Prometheus text exposition on loopback (``--metrics 127.0.0.1:PORT``), off by default.

Everything is derived at scrape time from what the daemon already keeps (the queue, the worker, the job records
in the store), so no counter can drift from the truth and a restart loses nothing: jobs by state, stage
durations of finished jobs, failures by reason, the store's size, the process's resident memory and, on CUDA,
GPU memory. A scrape reads the job table once; with the queue capped that is a small, bounded read.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from daemon.jobs.model import Job, JobState
from daemon.store.lmdb_store import Store

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def failure_reason(job: Job) -> str:
    """A small fixed set of reasons, so a free-text error never becomes an unbounded label."""
    error = job.error.lower()
    if "stopped" in error and "running this job" in error:
        return "interrupted"
    if "internal error" in error:
        return "internal"
    if "memory" in error:
        return "out_of_memory"
    return "pipeline"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class _Family:
    name: str
    kind: str
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.samples.append((suffix, labels, value))

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for suffix, labels, value in self.samples:
            text = ",".join(f'{key}="{_escape(val)}"' for key, val in sorted(labels.items()))
            lines.append(f"{self.name}{suffix}{{{text}}} {value:g}" if text else f"{self.name}{suffix} {value:g}")
        return lines


def resident_bytes() -> int:
    """This process's resident set size, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _gpu_memory(device: str) -> tuple[int, int] | None:
    if not device.startswith("cuda"):
        return None
    import torch  # already imported by the models; kept local so metrics load fast without them

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.memory_allocated(device)), int(torch.cuda.memory_reserved(device))


@dataclass
class MetricsSource:
    """Where the figures come from; callables so the worker and device can appear after the models load."""

    store: Store
    queue_length: Callable[[], int]
    ready: Callable[[], bool]
    device: Callable[[], str]
    running_stages: Callable[[], list[str]]  # the stage of every running job


def render(source: MetricsSource) -> str:
    """The whole exposition text; blocking (reads the store), so the server calls it off the event loop."""
    jobs = source.store.jobs()
    states = Counter(job.state.value for job in jobs)
    families = [
        _Family("distillery_ready", "gauge", "1 when the models are loaded and jobs are taken."),
        _Family("distillery_queue_length", "gauge", "Jobs waiting for the worker."),
        _Family("distillery_running_job", "gauge", "Running jobs by the stage they are in."),
        _Family("distillery_jobs", "gauge", "Jobs in the store by state (final states only ever grow)."),
        _Family("distillery_job_failures", "gauge", "Failed jobs by reason."),
        _Family("distillery_job_stage_seconds", "summary", "Time finished jobs spent in each stage."),
        _Family("distillery_job_seconds", "summary", "Wall time of finished jobs from start to end by state."),
        _Family("distillery_store_bytes", "gauge", "LMDB map size and bytes in use."),
        _Family("distillery_process_resident_bytes", "gauge", "Resident memory of the daemon process."),
    ]
    ready, queue, running, by_state, failures, stages, durations, store, rss = families
    ready.add(1.0 if source.ready() else 0.0)
    queue.add(float(source.queue_length()))
    for stage, count in sorted(Counter(source.running_stages()).items()):
        running.add(float(count), stage=stage)
    for state in JobState:
        by_state.add(float(states.get(state.value, 0)), state=state.value)
    for reason, count in sorted(Counter(failure_reason(j) for j in jobs if j.state == JobState.FAILED).items()):
        failures.add(float(count), reason=reason)
    stage_sum: defaultdict[str, float] = defaultdict(float)
    stage_count: Counter[str] = Counter()
    job_sum: defaultdict[str, float] = defaultdict(float)
    job_count: Counter[str] = Counter()
    for job in jobs:
        if not job.state.finished:
            continue
        for name, seconds in job.stage_seconds.items():
            stage_sum[name] += seconds
            stage_count[name] += 1
        if job.started_at and job.finished_at:
            job_sum[job.state.value] += job.finished_at - job.started_at
            job_count[job.state.value] += 1
    for name in sorted(stage_count):
        stages.add(stage_sum[name], "_sum", stage=name)
        stages.add(float(stage_count[name]), "_count", stage=name)
    for name in sorted(job_count):
        durations.add(job_sum[name], "_sum", state=name)
        durations.add(float(job_count[name]), "_count", state=name)
    stats = source.store.stats()
    store.add(float(stats["map_size"]), kind="map")
    store.add(float(stats["used_bytes"]), kind="used")
    rss.add(float(resident_bytes()))
    gpu = _gpu_memory(source.device())
    if gpu is not None:
        family = _Family("distillery_gpu_memory_bytes", "gauge", "CUDA memory held by the daemon.")
        family.add(float(gpu[0]), kind="allocated")
        family.add(float(gpu[1]), kind="reserved")
        families.append(family)
    lines = [line for family in families for line in family.render()]
    return "\n".join(lines) + "\n"


async def start_metrics(address: str, source: MetricsSource) -> web.AppRunner:
    """Serve GET /metrics on a loopback host:port (settings refuse anything else); returns the runner."""

    async def handle(_: web.Request) -> web.Response:
        text = await asyncio.to_thread(render, source)
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = address.rsplit(":", 1)
    site = web.TCPSite(runner, host.strip("[]"), int(port))
    await site.start()
    log.info("metrics on http://%s/metrics", address)
    return runner
