"""Run the real daemon as a child process on a temporary socket, for end-to-end tests of every frontend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Small enough that a whole /distill takes a few seconds on two cores, big enough to exercise every stage.
FAST_JOB = ("--reg-images", "6", "--train-steps", "6")


@dataclass
class RunningDaemon:
    process: subprocess.Popen[bytes]
    socket: Path
    state_dir: Path
    log: Path

    @property
    def target(self) -> str:
        return f"unix:{self.socket}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the daemon and wait for it to exit; returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout)


def wait_serving(target: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Block until health answers SERVING; fail with the daemon's exit if it dies first."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the daemon exited with {process.returncode} while starting")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"the daemon at {target} was not SERVING within {timeout} s")


def start_daemon(
    state_dir: Path,
    models: tuple[Path, Path],
    *extra_args: str,
    wait: bool = True,
    timeout: float = 180.0,
    socket: Path | None = None,
) -> RunningDaemon:
    """Start ``python -m daemon`` on the demo preset with prebuilt tiny models; wait until it serves.

    Pass the socket of an earlier daemon to restart "the same" daemon where its clients expect it.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    # Unix socket paths are limited to ~107 bytes; pytest's temp folders can be longer.
    socket = socket or Path(f"/tmp/distillery-test-{os.getpid()}-{time.monotonic_ns()}.sock")
    base_model, captioner = models
    log = state_dir / "daemon.log"
    command = [
        sys.executable,
        "-m",
        "daemon",
        "--preset",
        "demo",
        "--state-dir",
        str(state_dir),
        "--socket",
        str(socket),
        "--base-model",
        str(base_model),
        "--captioner",
        str(captioner),
        "--allow-private-urls",
        *FAST_JOB,
        *extra_args,
    ]
    env = {key: value for key, value in os.environ.items() if not key.startswith("DISTILLERY_")}
    with open(log, "ab") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    daemon = RunningDaemon(process=process, socket=socket, state_dir=state_dir, log=log)
    if wait:
        try:
            wait_serving(daemon.target, process, timeout)
        except Exception:
            daemon.stop(signal.SIGKILL)
            raise RuntimeError(f"daemon failed to start; its log:\n{daemon.log_text()}") from None
    return daemon
