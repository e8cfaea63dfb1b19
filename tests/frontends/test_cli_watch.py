"""`distillery watch` when the daemon goes away mid-job: the command that resumes where it stopped."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import grpc
import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.cli import ProgressPrinter, follow
from frontends.client import OFFLINE, DaemonError


async def events_then_offline(count: int) -> AsyncIterator[pb.JobEvent]:
    for seq in range(1, count + 1):
        yield pb.JobEvent(job_id="job7", seq=seq, state=pb.JOB_STATE_RUNNING, text=f"Step {seq}")
    raise DaemonError(grpc.StatusCode.UNAVAILABLE, OFFLINE)


async def test_a_daemon_gone_mid_watch_prints_the_resume_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DaemonError):
        await follow(events_then_offline(3), ProgressPrinter(io.StringIO(), as_json=False))
    assert "distillery watch job7 --after 3" in capsys.readouterr().err


async def test_other_errors_print_no_resume_command(capsys: pytest.CaptureFixture[str]) -> None:
    async def denied() -> AsyncIterator[pb.JobEvent]:
        yield pb.JobEvent(job_id="job7", seq=1)
        raise DaemonError(grpc.StatusCode.NOT_FOUND, "No such job.")

    with pytest.raises(DaemonError):
        await follow(denied(), ProgressPrinter(io.StringIO(), as_json=False))
    assert "--after" not in capsys.readouterr().err
