"""Prometheus text exposition on loopback (``--metrics 127.0.0.1:PORT``), off by default.

Everything comes from what the daemon already keeps (the queue, the worker, the store), so a restart loses
nothing: jobs by state, stage durations of finished jobs, failures by reason, the store's size, the process's
resident memory and, on CUDA, GPU memory. The job figures are the store's totals, which it changes in the same
transaction as the job records they count (daemon/store/indexes.py), so they cannot drift from the records and
a scrape costs the same with a hundred jobs stored or a million.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from daemon.jobs.model import JobState
from daemon.store.indexes import failure_reason
from daemon.store.lmdb_store import Store

__all__ = ["CONTENT_TYPE", "MetricsSource", "failure_reason", "render", "resident_bytes", "start_metrics"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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


def _named(totals: dict[str, float], prefix: str) -> list[tuple[str, float]]:
    """The counters under ``prefix`` that are not zero, as (name after the prefix, value), by name."""
    return sorted(
        (key.removeprefix(prefix), value) for key, value in totals.items() if key.startswith(prefix) and value
    )


def render(source: MetricsSource) -> str:
    """The whole exposition text; blocking (reads the store), so the server calls it off the event loop."""
    totals = source.store.totals()
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
    for stage, jobs in sorted(Counter(source.running_stages()).items()):
        running.add(float(jobs), stage=stage)
    for state in JobState:
        by_state.add(totals.get(f"state/{state.value}", 0.0), state=state.value)
    for reason, count in _named(totals, "failure/"):
        failures.add(count, reason=reason)
    for name, count in _named(totals, "stage_count/"):
        stages.add(totals.get(f"stage_sum/{name}", 0.0), "_sum", stage=name)
        stages.add(count, "_count", stage=name)
    for name, count in _named(totals, "job_count/"):
        durations.add(totals.get(f"job_sum/{name}", 0.0), "_sum", state=name)
        durations.add(count, "_count", state=name)
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
