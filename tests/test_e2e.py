"""The whole /distill on the real daemon process (demo preset), as an operator and a frontend see it."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch
from distillery.v1 import distillery_pb2 as pb

from frontends.client import DaemonClient
from tests.daemon_process import RunningDaemon, start_daemon

OPERATOR = pb.Requester(platform="cli", user="operator", chat="terminal")


async def collect(events: AsyncIterator[pb.JobEvent]) -> list[pb.JobEvent]:
    return [event async for event in events]


def stages_with(events: list[pb.JobEvent], detail: str) -> set[int]:
    return {event.stage for event in events if event.WhichOneof("detail") == detail}


async def test_a_portrait_becomes_a_lora_that_loads_into_a_pipeline(
    running_daemon: RunningDaemon, portrait_png: bytes, demo_models: tuple[Path, Path]
) -> None:
    client = DaemonClient(running_daemon.target)
    try:
        events = await collect(client.distill(client.spec(OPERATOR, upload=True), portrait_png))
        second = await collect(client.distill(client.spec(OPERATOR, upload=True, no_flip=True), portrait_png))
        lora_bytes = await client.download_lora(events[0].accepted.lora_name, OPERATOR)
        status = await client.status()
    finally:
        await client.close()

    name = events[0].accepted.lora_name
    final = events[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.text
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    seen = [e.stage for e in events]
    for stage in (pb.STAGE_PREPARE, pb.STAGE_CAPTION, pb.STAGE_CLASSIFY, pb.STAGE_REGULARIZATION, pb.STAGE_TRAIN):
        assert stage in seen
    assert seen.index(pb.STAGE_CAPTION) < seen.index(pb.STAGE_REGULARIZATION) < seen.index(pb.STAGE_TRAIN)
    # The likeness stage's test pictures are the preview: no separate first picture is drawn.
    assert stages_with(events, "progress") == {pb.STAGE_REGULARIZATION, pb.STAGE_TRAIN, pb.STAGE_LIKENESS}
    assert pb.STAGE_PREVIEW not in seen
    assert seen.index(pb.STAGE_TRAIN) < seen.index(pb.STAGE_LIKENESS) < seen.index(pb.STAGE_SAVE)
    # The demo's random models draw no face: the likeness says so, and the last snapshot is the LoRA.
    likeness = final.finished.lora.likeness
    assert not likeness.measured and likeness.reason == "likeness not measured: no face in the test pictures"
    assert final.finished.job.likeness == likeness and likeness.step == int(final.finished.lora.training["steps"])
    assert "Likeness not measured: no face in the test pictures." in final.text
    # The preview sheet comes with the final event: each test picture of the kept snapshot, labelled "no face".
    [preview] = final.finished.images
    assert preview.name == f"{final.job_id}-preview-1.png" and preview.seed == 0
    lines = preview.parameters.splitlines()
    assert lines[0].startswith(f"Likeness test pictures of {name}, the LoRA after {likeness.step} training steps.")
    assert len(lines) == 1 + int(final.finished.lora.training["likeness_samples"])
    assert all(": no face, seed " in line for line in lines[1:])
    assert all(line.endswith(f"<lora:{name}:1>") for line in lines[1:])
    assert list(final.finished.job.output_images) == [preview.name]
    lora = final.finished.lora
    assert lora.name == name and lora.image_name == f"{name}.png" and len(lora.tokens) == 2
    assert name in lora.instance_prompt and lora.caption == final.finished.job.caption
    assert lora.training["flip"] == "true" and second[-1].finished.lora.training["flip"] == "false"
    assert set(final.finished.job.stage_seconds) >= {"prepare", "caption", "classify", "regularization", "train"}

    # The second job reused the cached regularization set (nothing generated) and the resident models.
    assert second[-1].state == pb.JOB_STATE_SUCCEEDED
    assert stages_with(second, "progress") == {pb.STAGE_TRAIN, pb.STAGE_LIKENESS}
    assert running_daemon.log_text().count("ready:") == 1
    assert status.jobs_done == 2 and status.preset == "demo"

    from daemon.models.config import ModelConfig
    from daemon.models.resident import load_resident
    from daemon.pipeline.save import load_lora_into

    base, captioner = demo_models
    resident = load_resident(ModelConfig(preset="demo", base_model=str(base), captioner_model=str(captioner)))
    pipe = resident.pipeline

    def generate() -> torch.Tensor:
        result = pipe(
            f"a photo of {name}",
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        )
        return result.images  # type: ignore[no-any-return]

    without = generate()
    load_lora_into(pipe, lora_bytes, adapter_name=name)
    with_lora = generate()
    assert not torch.equal(without, with_lora)


async def test_a_job_interrupted_by_kill_9_runs_again_after_a_restart(
    tmp_path: Path, portrait_png: bytes, demo_models: tuple[Path, Path]
) -> None:
    state = tmp_path / "state"
    daemon = start_daemon(state, demo_models)
    client = DaemonClient(daemon.target)
    reply = await client.submit(client.spec(OPERATOR, upload=True, train_steps=400), portrait_png)
    async for event in client.watch(reply.job.id, OPERATOR):
        if event.stage == pb.STAGE_TRAIN and event.WhichOneof("detail") == "progress":
            break
    await client.close()
    daemon.stop(signal.SIGKILL)

    restarted = start_daemon(state, demo_models)
    client = DaemonClient(restarted.target)
    try:
        events = await collect(client.watch(reply.job.id, OPERATOR))
        job = await client.get_job(reply.job.id, OPERATOR)
    finally:
        await client.close()
        assert restarted.stop() == 0
    assert any("restarted" in event.text for event in events)
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED
    assert job.attempts == 2


async def test_sigterm_requeues_the_running_job_and_exits_cleanly(
    tmp_path: Path, portrait_png: bytes, demo_models: tuple[Path, Path]
) -> None:
    daemon = start_daemon(tmp_path / "state", demo_models)
    client = DaemonClient(daemon.target)
    reply = await client.submit(client.spec(OPERATOR, upload=True, train_steps=2000), portrait_png)
    async for event in client.watch(reply.job.id, OPERATOR):
        if event.stage == pb.STAGE_TRAIN and event.WhichOneof("detail") == "progress":
            break
    await client.close()
    assert await asyncio.to_thread(daemon.stop, signal.SIGTERM, 60) == 0

    from daemon.store.lmdb_store import Store, StoreConfig

    store = Store(StoreConfig(path=tmp_path / "state" / "store"))
    job = store.get_job(reply.job.id)
    store.close()
    assert job.state.value == "queued" and job.attempts == 0


@pytest.mark.parametrize("flag", ["--tcp"])
def test_tcp_without_a_token_refuses_to_start(tmp_path: Path, demo_models: tuple[Path, Path], flag: str) -> None:
    with pytest.raises(RuntimeError, match="needs a token"):
        start_daemon(tmp_path / "state", demo_models, flag, "127.0.0.1:0", timeout=30)
