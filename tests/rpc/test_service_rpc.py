"""The gRPC API on a real grpc.aio server (temporary unix socket) with a stand-in pipeline.

Covers submission from each source, the first event, replay, idempotency, every bad input's status and
sentence (with nothing stored), ownership, cancel, queue limits and the TCP token.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from distillery.v1 import distillery_pb2 as pb
from distillery.v1 import distillery_pb2_grpc as pb_grpc
from PIL import Image

from daemon.jobs.contract import JobContext, Outcome
from daemon.jobs.hub import EventHub
from daemon.jobs.journal import Journal
from daemon.jobs.model import LoraRecord, Stage, SubjectClass
from daemon.jobs.queue import JobQueue
from daemon.jobs.worker import Worker
from daemon.pipeline.name import NameMinter
from daemon.pipeline.serve_request import GenerationDefaults
from daemon.rpc.auth import TokenInterceptor
from daemon.rpc.guard import GuardInterceptor
from daemon.rpc.servicer import DistilleryServicer
from daemon.service import Distillery
from daemon.settings import load_settings
from daemon.store.lmdb_store import Store
from frontends.client import DaemonClient, DaemonError
from tests.clip_vocab import build_tokenizer
from tests.image_server import serving

ALICE = pb.Requester(platform="telegram", user="111", chat="c1")
BOB = pb.Requester(platform="telegram", user="222", chat="c2")
WORDS = [
    "photo</w>",
    "the</w>",
    "man</w>",
    "port",
    "rift",
    "luna",
    "vek",
    "orbo",
    "tami</w>",
    "zor</w>",
    "kesh</w>",
]


def fake_distill(release: threading.Event | None) -> Callable[[JobContext], Outcome]:
    """Walks the stages like the real pipeline, optionally waiting for ``release`` mid-training."""

    def run(ctx: JobContext) -> Outcome:
        ctx.stage(Stage.CAPTION, "Describing the portrait.")
        ctx.captioned("a woman in a spacesuit")
        ctx.stage(Stage.CLASSIFY, "Deciding.")
        ctx.classified(SubjectClass.WOMAN, False)
        ctx.stage(Stage.TRAIN, "Training.")
        for step in range(1, 6):
            while release is not None and not release.is_set():
                ctx.check()
                time.sleep(0.01)
            ctx.progress(step, 5, loss=0.1)
        job = ctx.job
        lora = LoraRecord(
            name=job.lora_name,
            owner=job.owner,
            job_id=job.id,
            subject_class=SubjectClass.WOMAN,
            caption=job.caption,
            instance_prompt=f"a photo of {job.lora_name} woman",
            base_model="fake",
            base_model_hash="0",
            image_name=job.image_name,
            image_sha256="",
            size_bytes=9,
            created_at=time.time(),
            tokens=[],
            training={"steps": "5"},
        )
        return Outcome(lora=lora, lora_file=b"safetensor", summary=f"{job.lora_name} is ready")

    return run


@dataclass
class Api:
    client: DaemonClient
    store: Store
    core: Distillery
    release: threading.Event
    socket: Path


async def start_api(
    tmp_path: Path,
    *flags: str,
    gated: bool = False,
    pipeline: Callable[[threading.Event], Callable[[JobContext], Outcome]] = fake_distill,
    generation: GenerationDefaults | None = None,
) -> tuple[Api, Callable[[], object]]:
    settings = load_settings(["--state-dir", str(tmp_path), *flags])
    store = Store(settings.store)
    queue = JobQueue()
    hub = EventHub(asyncio.get_running_loop())
    journal = Journal(store, hub)
    core = Distillery(settings, store, hub, journal, queue)
    release = threading.Event()
    if not gated:
        release.set()
    worker = Worker(queue, journal, pipeline(release))
    core.attach(worker, NameMinter(build_tokenizer(WORDS)), "cpu", generation)
    worker.start()
    server = grpc.aio.server(interceptors=[GuardInterceptor()])
    pb_grpc.add_DistilleryServicer_to_server(DistilleryServicer(core), server)
    socket = Path(f"/tmp/distillery-rpc-{time.monotonic_ns()}.sock")
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    client = DaemonClient(f"unix:{socket}")

    async def stop() -> None:
        release.set()
        await client.close()
        await server.stop(None)
        await asyncio.to_thread(worker.stop, 5)
        store.close()

    return Api(client, store, core, release, socket), stop


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    running, stop = await start_api(tmp_path, "--allow-private-urls")
    yield running
    await stop()  # type: ignore[misc]


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 80, 60)).save(buffer, "PNG")
    return buffer.getvalue()


async def collect(events: AsyncIterator[pb.JobEvent]) -> list[pb.JobEvent]:
    return [event async for event in events]


async def test_distill_an_upload_from_accepted_to_finished(api: Api, portrait_png: bytes) -> None:
    spec = api.client.spec(ALICE, upload=True)
    events = await collect(api.client.distill(spec, portrait_png))

    first = events[0]
    assert first.WhichOneof("detail") == "accepted"
    name = first.accepted.lora_name
    assert first.accepted.queue_position == 1 and first.seq == 1
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert any(e.WhichOneof("detail") == "captioned" for e in events)
    assert any(e.WhichOneof("detail") == "progress" and e.progress.step == 5 for e in events)
    last = events[-1]
    assert last.state == pb.JOB_STATE_SUCCEEDED and last.finished.lora.name == name
    assert last.finished.job.image_name == f"{name}.png"

    assert await api.client.download_lora(name, ALICE) == b"safetensor"
    stored = Image.open(io.BytesIO(await api.client.get_image(f"{name}.png", ALICE)))
    assert stored.format == "PNG" and stored.size == (512, 512)


async def test_watch_replays_after_a_sequence_and_ends(api: Api, portrait_png: bytes) -> None:
    reply = await api.client.submit(api.client.spec(ALICE, upload=True), portrait_png)
    everything = await collect(api.client.watch(reply.job.id, ALICE))
    tail = await collect(api.client.watch(reply.job.id, ALICE, after_seq=3))
    assert [e.seq for e in tail] == [e.seq for e in everything[3:]]
    assert tail[-1].state == pb.JOB_STATE_SUCCEEDED
    # A finished job watched from its end returns at once.
    assert await collect(api.client.watch(reply.job.id, ALICE, after_seq=everything[-1].seq)) == []


async def test_the_daemon_keeps_nothing_in_memory_for_finished_jobs(api: Api, portrait_png: bytes) -> None:
    for _ in range(3):
        events = await collect(api.client.distill(api.client.spec(ALICE, upload=True), portrait_png))
        assert events[-1].state == pb.JOB_STATE_SUCCEEDED
    # The final wake-up reaches the event loop from the worker thread; give it a moment.
    for _ in range(100):
        if len(api.core.hub) == 0:
            break
        await asyncio.sleep(0.01)
    assert len(api.core.hub) == 0


async def test_a_stored_image_name_and_a_url_are_sources_too(api: Api, portrait_png: bytes) -> None:
    first = await api.client.submit(api.client.spec(ALICE, upload=True), portrait_png)
    again = await api.client.submit(api.client.spec(ALICE, image_name=first.job.image_name))
    assert again.job.lora_name != first.job.lora_name

    async with serving({"me.png": (portrait_png, "image/png")}) as site:
        fetched = await api.client.submit(api.client.spec(ALICE, url=f"{site}/me.png"))
    assert fetched.job.source.endswith("/me.png")
    # Bob may not start from Alice's stored picture.
    with pytest.raises(DaemonError) as caught:
        await api.client.submit(api.client.spec(BOB, image_name=first.job.image_name))
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


async def test_the_same_idempotency_key_makes_one_job(api: Api, portrait_png: bytes) -> None:
    spec = api.client.spec(ALICE, upload=True, idempotency_key="tg:1:42")
    first = await api.client.submit(spec, portrait_png)
    second = await api.client.submit(spec, portrait_png)
    assert second.duplicate and second.job.id == first.job.id
    different = api.client.spec(ALICE, upload=True, idempotency_key="tg:1:42", no_flip=True)
    with pytest.raises(DaemonError) as caught:
        await api.client.submit(different, portrait_png)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert len(api.store.jobs()) == 1


@pytest.mark.parametrize(
    ("kwargs", "image", "code", "words"),
    [
        ({"upload": True}, b"this is not an image", grpc.StatusCode.INVALID_ARGUMENT, "not a JPEG"),
        ({"upload": True}, png(200, 300), grpc.StatusCode.INVALID_ARGUMENT, "256"),
        ({"url": "ftp://example.org/a.png"}, None, grpc.StatusCode.INVALID_ARGUMENT, "http"),
        ({"url": "http://127.0.0.1:9/none.png"}, None, grpc.StatusCode.INVALID_ARGUMENT, "did not answer"),
        ({"image_name": "nosuch.png"}, None, grpc.StatusCode.NOT_FOUND, "nosuch.png"),
    ],
)
async def test_bad_input_gets_a_status_and_a_sentence_and_stores_nothing(
    api: Api, kwargs: dict[str, object], image: bytes | None, code: grpc.StatusCode, words: str
) -> None:
    with pytest.raises(DaemonError) as caught:
        await api.client.submit(api.client.spec(ALICE, **kwargs), image)  # type: ignore[arg-type]
    assert caught.value.code == code
    assert words in caught.value.message and caught.value.message.endswith(".")
    assert api.store.jobs() == []


async def test_private_addresses_are_refused_unless_tests_allow_them(tmp_path: Path) -> None:
    running, stop = await start_api(tmp_path)
    try:
        with pytest.raises(DaemonError) as caught:
            await running.client.submit(running.client.spec(ALICE, url="http://127.0.0.1:9/a.png"))
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "private" in caught.value.message or "loopback" in caught.value.message
    finally:
        await stop()  # type: ignore[misc]


async def test_a_request_without_a_user_is_invalid(api: Api, portrait_png: bytes) -> None:
    with pytest.raises(DaemonError) as caught:
        await api.client.submit(api.client.spec(pb.Requester(platform="telegram"), upload=True), portrait_png)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_other_users_jobs_and_loras_do_not_exist_for_them(api: Api, portrait_png: bytes) -> None:
    events = await collect(api.client.distill(api.client.spec(ALICE, upload=True), portrait_png))
    job_id, name = events[0].job_id, events[0].accepted.lora_name
    calls = [
        api.client.get_job(job_id, BOB),
        api.client.cancel(job_id, BOB),
        api.client.get_lora(name, BOB),
        api.client.download_lora(name, BOB),
        api.client.get_image(f"{name}.png", BOB),
        collect(api.client.watch(job_id, BOB)),
    ]
    for call in calls:
        with pytest.raises(DaemonError) as caught:
            await call
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert await api.client.list_loras(BOB) == []
    assert [lora.name for lora in await api.client.list_loras(ALICE)] == [name]
    # The platform itself (a bot re-attaching) sees its users' jobs; a user cannot ask for that.
    platform = pb.Requester(platform="telegram")
    assert [job.id for job in await api.client.list_jobs(platform, whole_platform=True)] == [job_id]
    with pytest.raises(DaemonError):
        await api.client.list_jobs(BOB, whole_platform=True)


async def test_unknown_ids_are_not_found(api: Api) -> None:
    for call in (api.client.get_job("nope", ALICE), api.client.get_lora("nope", ALICE)):
        with pytest.raises(DaemonError) as caught:
            await call
        assert caught.value.code == grpc.StatusCode.NOT_FOUND


async def test_cancel_queued_and_running_jobs_and_the_queue_limits(tmp_path: Path, portrait_png: bytes) -> None:
    running, stop = await start_api(tmp_path, "--queue-limit", "2", "--user-active-limit", "2", gated=True)
    client = running.client
    carol = pb.Requester(platform="slack", workspace="T1", user="U3")
    try:
        first = await client.submit(client.spec(ALICE, upload=True), portrait_png)
        while (await client.get_job(first.job.id, ALICE)).state != pb.JOB_STATE_RUNNING:
            await asyncio.sleep(0.01)
        second = await client.submit(client.spec(ALICE, upload=True), portrait_png)
        with pytest.raises(DaemonError) as caught:
            await client.submit(client.spec(ALICE, upload=True), portrait_png)
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "already have 2" in caught.value.message
        await client.submit(client.spec(BOB, upload=True), portrait_png)  # two waiting now
        with pytest.raises(DaemonError) as caught:
            await client.submit(client.spec(carol, upload=True), portrait_png)
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue is full" in caught.value.message

        cancelled = await client.cancel(second.job.id, ALICE)
        assert cancelled.state == pb.JOB_STATE_CANCELLED
        await client.cancel(first.job.id, ALICE)
        events = await collect(client.watch(first.job.id, ALICE))
        assert events[-1].state == pb.JOB_STATE_CANCELLED
        with pytest.raises(DaemonError) as caught:
            await client.cancel(first.job.id, ALICE)
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await stop()  # type: ignore[misc]


async def test_tcp_needs_the_token(api: Api) -> None:
    server = grpc.aio.server(interceptors=[TokenInterceptor("s3cret"), GuardInterceptor()])
    pb_grpc.add_DistilleryServicer_to_server(DistilleryServicer(api.core), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        for token, expected in (
            (None, grpc.StatusCode.UNAUTHENTICATED),
            ("wrong", grpc.StatusCode.UNAUTHENTICATED),
        ):
            client = DaemonClient(f"127.0.0.1:{port}", token)
            with pytest.raises(DaemonError) as caught:
                await client.status()
            assert caught.value.code == expected
            with pytest.raises(DaemonError) as caught:
                await collect(client.watch("x", ALICE))
            assert caught.value.code == expected
            await client.close()
        good = DaemonClient(f"127.0.0.1:{port}", "s3cret")
        status = await good.status()
        assert status.ready and status.device == "cpu"
        await good.close()
    finally:
        await server.stop(None)
