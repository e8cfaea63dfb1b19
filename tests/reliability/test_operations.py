"""Operations on the real daemon: socket permissions, TCP token, cancel, metrics, logs, hot backup and restore.

One daemon runs most of the checks (a daemon start costs ~10 s on two cores), a second one proves the restore.
Items: 8 (socket 0660 + group, folder 0750, UNAUTHENTICATED over TCP), 9 (cancel mid-training frees the worker),
metrics, structured logs without the token, backup/restore.
"""

from __future__ import annotations

import asyncio
import grp
import os
import re
import signal
import socket as socketlib
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.client import DaemonClient, DaemonError
from tests.daemon_process import start_daemon
from tests.reliability.helpers import OPERATOR, requester, safetensors_header_ok

TOKEN = "tok-" + "9f3c1d7e5b2a4c6e8f0a1b3c5d7e9f1a"


def free_port() -> int:
    """A loopback port free right now (the daemon binds it a moment later)."""
    with socketlib.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def other_group() -> grp.struct_group:
    """A group the socket can be handed to: another one when we may (root), else our own."""
    if os.geteuid() == 0:
        for name in ("daemon", "nogroup", "users"):
            try:
                return grp.getgrnam(name)
            except KeyError:
                continue
    return grp.getgrgid(os.getegid())


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(reply.read().decode())


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from:\n{text}"
    return float(match.group(1))


async def first_training_step(client: DaemonClient, job_id: str) -> None:
    async for event in client.watch(job_id, OPERATOR):
        if event.stage == pb.STAGE_TRAIN and event.WhichOneof("detail") == "progress":
            return


async def test_socket_token_cancel_metrics_logs_backup_and_restore(
    tmp_path: Path, portrait_png: bytes, demo_models: tuple[Path, Path]
) -> None:
    run_dir = Path(f"/tmp/distillery-ops-{os.getpid()}-{time.monotonic_ns()}")
    sock = run_dir / "d.sock"
    group = other_group()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    tcp_port, metrics_port = free_port(), free_port()
    state = tmp_path / "state"
    daemon = await asyncio.to_thread(
        start_daemon,
        state,
        demo_models,
        "--socket-group",
        group.gr_name,
        "--tcp",
        f"127.0.0.1:{tcp_port}",
        "--token-file",
        str(token_file),
        "--metrics",
        f"127.0.0.1:{metrics_port}",
        socket=sock,
    )
    try:
        # Item 8: the socket is 0660 and its folder 0750, both handed to the frontends' group.
        for path, mode in ((sock, 0o660), (run_dir, 0o750)):
            info = path.lstat()
            assert stat.S_IMODE(info.st_mode) == mode, (path, oct(info.st_mode))
            assert info.st_gid == group.gr_gid

        # Item 8: over TCP a missing or wrong token is UNAUTHENTICATED; the right one works.
        for token in (None, "wrong-token-0000"):
            stranger = DaemonClient(f"127.0.0.1:{tcp_port}", token)
            with pytest.raises(DaemonError) as refused:
                await stranger.list_jobs(OPERATOR)
            assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
            await stranger.close()
        client = DaemonClient(f"127.0.0.1:{tcp_port}", TOKEN)

        # Item 9: cancel mid-training; the worker is free within a step and the next job runs.
        long_job = await client.submit(client.spec(OPERATOR, upload=True, train_steps=3000), portrait_png)
        next_job = await client.submit(client.spec(requester("bea"), upload=True), portrait_png)
        await asyncio.wait_for(first_training_step(client, long_job.job.id), 60)
        cancelled_at = time.monotonic()
        await client.cancel(long_job.job.id, OPERATOR)
        events = [e async for e in client.watch(long_job.job.id, OPERATOR)]
        assert events[-1].state == pb.JOB_STATE_CANCELLED
        assert time.monotonic() - cancelled_at < 10
        events = [e async for e in client.watch(next_job.job.id, requester("bea"))]
        assert events[-1].state == pb.JOB_STATE_SUCCEEDED
        lora_name = next_job.job.lora_name
        lora_file = await client.download_lora(lora_name, requester("bea"))

        # Metrics: queue, jobs by final state, stage durations, memory, on loopback only.
        text = await asyncio.to_thread(scrape, metrics_port)
        assert metric(text, "distillery_ready") == 1
        assert metric(text, "distillery_queue_length") == 0
        assert metric(text, 'distillery_jobs{state="succeeded"}') == 1
        assert metric(text, 'distillery_jobs{state="cancelled"}') == 1
        assert metric(text, 'distillery_job_stage_seconds_count{stage="train"}') == 2
        assert metric(text, 'distillery_job_seconds_count{state="succeeded"}') == 1
        assert metric(text, "distillery_process_resident_bytes") > 0

        # Backup while a job is training: a consistent copy, taken from another process.
        running = await client.submit(client.spec(OPERATOR, upload=True, train_steps=3000), portrait_png)
        await asyncio.wait_for(first_training_step(client, running.job.id), 60)
        backup_dir = tmp_path / "backup"
        cli = [sys.executable, "-m", "frontends.cli"]
        done = await asyncio.to_thread(
            subprocess.run,
            [*cli, "backup", str(backup_dir), "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "3 jobs, 1 LoRAs" in done.stdout
        await client.close()
    finally:
        # Item 10 (bounded stop): SIGTERM with a job mid-training exits cleanly and quickly.
        stopping = time.monotonic()
        status = await asyncio.to_thread(daemon.stop, signal.SIGTERM, 60)
        stop_seconds = time.monotonic() - stopping
    assert status == 0, daemon.log_text()[-3000:]
    assert stop_seconds < 20

    # Logs: never the token (nor a wrong one a client sent), and the job id on the worker's lines about a job.
    log_text = daemon.log_text()
    assert TOKEN not in log_text and "wrong-token-0000" not in log_text
    about_jobs = 0
    for line in log_text.splitlines():
        for job_id in re.findall(r"\bjob ([0-9a-f]{24})\b", line):
            about_jobs += 1
            assert f"job={job_id}:" in line, line
    assert about_jobs >= 6

    # Restore into a fresh state folder; a daemon started there has the jobs and the LoRA.
    fresh = tmp_path / "restored"
    done = await asyncio.to_thread(
        subprocess.run,
        [*cli, "restore", str(backup_dir), "--state-dir", str(fresh)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    again = subprocess.run(
        [*cli, "restore", str(backup_dir), "--state-dir", str(fresh)], capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 2 and "fresh state folder" in again.stderr
    restored = await asyncio.to_thread(start_daemon, fresh, demo_models)
    client = DaemonClient(restored.target)
    try:
        assert await client.download_lora(lora_name, requester("bea")) == lora_file
        assert safetensors_header_ok(lora_file)
        job = await client.get_job(long_job.job.id, OPERATOR)
        assert job.state == pb.JOB_STATE_CANCELLED
        # The copy caught the third job mid-training: the restored daemon took it up again.
        job = await client.get_job(running.job.id, OPERATOR)
        assert job.state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING)
    finally:
        await client.close()
        assert await asyncio.to_thread(restored.stop) == 0
