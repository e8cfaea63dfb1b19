"""``distillery events prune`` and the PruneEvents call behind it, on a real gRPC server with stand-in jobs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.cli import build_parser, run
from frontends.client import DaemonError
from tests.rpc.test_service_rpc import ALICE, Api, collect, start_api

OPERATOR = pb.Requester(platform="cli", user="ops", chat="terminal")
DAY = 86400.0


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    running, stop = await start_api(tmp_path)
    yield running
    await stop()  # type: ignore[misc]


async def finished_job(api: Api, portrait: bytes, days_ago: float) -> str:
    """A distillation run to its end, then dated as if it had ended ``days_ago`` days ago."""
    events = await collect(api.client.distill(api.client.spec(ALICE, upload=True), portrait))
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED and len(events) > 3
    job = api.store.get_job(events[0].job_id)
    api.store.put_job(replace(job, finished_at=time.time() - days_ago * DAY))
    return job.id


async def test_the_operator_prunes_old_event_logs_from_the_cli(
    api: Api, portrait_png: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    old = await finished_job(api, portrait_png, days_ago=40)
    recent = await finished_job(api, portrait_png, days_ago=3)
    old_events, recent_events = api.store.events_after(old, 0), api.store.events_after(recent, 0)

    args = build_parser().parse_args(
        ["--socket", str(api.socket), "--user", "ops", "events", "prune", "--older-than-days", "30"]
    )
    assert await run(args) == 0

    printed = capsys.readouterr().out
    assert f"Pruned {len(old_events) - 1} events of 1 job that ended more than 30 days ago" in printed
    # The old job replays only how it ended, with its LoRA; the recent one keeps its whole log.
    replayed = await collect(api.client.watch(old, ALICE))
    assert [event.seq for event in replayed] == [old_events[-1].seq]
    assert replayed[0].finished.lora.name == api.store.get_job(old).lora_name
    assert api.store.events_after(recent, 0) == recent_events
    again = await api.client.prune_events(OPERATOR, 30)
    assert (again.jobs, again.events) == (0, 0)


async def test_pruning_is_for_operators_and_needs_a_number_of_days(api: Api) -> None:
    with pytest.raises(DaemonError) as refused:
        await api.client.prune_events(ALICE, 30)
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "Only an operator" in refused.value.message
    with pytest.raises(DaemonError) as zero:
        await api.client.prune_events(OPERATOR, 0)
    assert zero.value.code == grpc.StatusCode.INVALID_ARGUMENT and "at least 1" in zero.value.message
