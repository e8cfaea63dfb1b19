"""Using and managing LoRAs over the real gRPC API: /serve requests, visibility, owner actions, deletion, stats.

The worker runs stand-in pipelines (the real generation on the demo models is tested in tests/pipeline and
end to end): what is checked here is the daemon's side - who may see, use, change and delete what, what a
generation request turns into, and the sentence and status of every refusal.
"""

from __future__ import annotations

import io
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from distillery.v1 import distillery_pb2 as pb
from PIL import Image

from daemon.jobs.contract import JobContext, Outcome, OutputImage
from daemon.jobs.model import JobKind, Stage
from daemon.pipeline.denoise import hires_size
from daemon.pipeline.serve_request import GenerationDefaults
from daemon.store.lmdb_store import Store
from frontends.client import DaemonError
from frontends.commands import parse_serve
from tests.rpc.test_service_rpc import ALICE, BOB, Api, collect, fake_distill, start_api

DEFAULTS = GenerationDefaults(resolution=64, size_multiple=8, steps=4)
CAROL_IN_ANOTHER_CHAT = pb.Requester(platform="telegram", user="111", chat="elsewhere")  # Alice, elsewhere


def fake_jobs(release: threading.Event | None) -> Callable[[JobContext], Outcome]:
    """Distill jobs as in test_service_rpc; generation jobs report steps and return flat-colour PNGs (at the hires
    pass's size when there is one, as the real pipeline makes them)."""
    distill = fake_distill(release)

    def run(ctx: JobContext) -> Outcome:
        params = ctx.job.generate
        if ctx.job.kind != JobKind.GENERATE or params is None:
            return distill(ctx)
        ctx.stage(Stage.GENERATE, "Generating.")
        for step in range(1, params.steps + 1):
            ctx.progress(step, params.steps, what="Denoising step")
        images = []
        size = (params.width, params.height)
        if params.hires_scale:
            size = hires_size(params.width, params.height, params.hires_scale, DEFAULTS.size_multiple)
        for n in range(1, params.count + 1):
            buffer = io.BytesIO()
            Image.new("RGB", size, (n * 40, 0, 0)).save(buffer, "PNG")
            info = {
                "seed": params.seed + n - 1,
                "width": size[0],
                "height": size[1],
                "parameters": f"{params.full_prompt}\nSteps: {params.steps}, Seed: {params.seed + n - 1}",
                "loras": [{"name": use.name, "weight": use.weight} for use in params.loras],
            }
            images.append(OutputImage(name=f"{ctx.job.id}-{n}.png", png=buffer.getvalue(), info=info))
        return Outcome(summary="Here are your images.", images=images)

    return run


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    running, stop = await start_api(tmp_path, pipeline=fake_jobs, generation=DEFAULTS)
    yield running
    await stop()  # type: ignore[misc]


async def distill(api: Api, who: pb.Requester, portrait: bytes) -> str:
    events = await collect(api.client.distill(api.client.spec(who, upload=True), portrait))
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED
    return events[-1].finished.lora.name


async def serve(api: Api, who: pb.Requester, text: str, key: str = "") -> list[pb.JobEvent]:
    return await collect(api.client.generate(parse_serve(text), who, key))


async def refused(call: object) -> DaemonError:
    with pytest.raises(DaemonError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_a_generation_from_request_to_images(api: Api, portrait_png: bytes) -> None:
    name = await distill(api, ALICE, portrait_png)
    events = await serve(api, ALICE, f"on the moon --lora {name} --n 2 --seed 7 --ar 2:1 --neg blurry")

    accepted = events[0]
    assert accepted.accepted.kind == pb.JOB_KIND_GENERATE and accepted.accepted.queue_position == 1
    steps = [e.progress.step for e in events if e.WhichOneof("detail") == "progress"]
    assert steps[-1] == 4 and all(e.stage == pb.STAGE_GENERATE for e in events if e.progress.total)
    finished = events[-1].finished
    job = finished.job
    assert job.state == pb.JOB_STATE_SUCCEEDED and job.kind == pb.JOB_KIND_GENERATE
    # The job says what ran: the activation word added, the seed, the size for 2:1 on the model's grid.
    spec = job.generate
    assert spec.full_prompt == f"{name} woman, on the moon" and spec.prompt == "on the moon"
    assert (spec.seed, spec.width, spec.height, spec.steps, spec.count) == (7, 88, 48, 4, 2)
    assert [(use.name, use.weight) for use in spec.loras] == [(name, 1.0)]
    assert spec.negative_prompt == "blurry" and spec.cfg == pytest.approx(7.0)

    assert [image.name for image in finished.images] == [f"{job.id}-1.png", f"{job.id}-2.png"]
    assert list(job.output_images) == [image.name for image in finished.images]
    assert [image.seed for image in finished.images] == [7, 8]
    second = Image.open(io.BytesIO(await api.client.get_image(finished.images[1].name, ALICE)))
    assert second.size == (88, 48) and second.getpixel((0, 0)) == (80, 0, 0)
    info = await api.client.image_info(finished.images[1].name, ALICE)
    assert info.generated and info.seed == 8 and (info.width, info.height) == (88, 48)
    assert info.parameters.endswith("Seed: 8") and [use.name for use in info.loras] == [name]
    # The same conversation from another chat is the same user; Bob sees nothing of it.
    assert (await api.client.image_info(finished.images[0].name, CAROL_IN_ANOTHER_CHAT)).seed == 7
    assert (await refused(api.client.get_image(finished.images[0].name, BOB))).code == grpc.StatusCode.NOT_FOUND
    assert (await refused(api.client.image_info(finished.images[0].name, BOB))).code == grpc.StatusCode.NOT_FOUND

    stats = await api.client.user_stats(ALICE)
    assert (stats.loras_owned, stats.distill_jobs, stats.generate_jobs, stats.images_generated) == (1, 1, 1, 2)
    assert (await api.client.user_stats(BOB)).generate_jobs == 0


async def test_weights_are_automatic_unless_given_and_the_seed_is_random_unless_given(
    api: Api, portrait_png: bytes
) -> None:
    names = [await distill(api, ALICE, portrait_png) for _ in range(3)]
    loras = " ".join(f"--lora {name}" for name in names)
    first = (await serve(api, ALICE, f"three friends {loras}"))[-1].finished.job.generate
    assert [use.weight for use in first.loras] == pytest.approx([0.7, 0.7, 0.7])
    explicit = (await serve(api, ALICE, f"a picnic --lora {names[0]}:0.4 --lora {names[1]}"))[-1].finished.job
    assert [use.weight for use in explicit.generate.loras] == pytest.approx([0.4, 0.85])
    second = (await serve(api, ALICE, f"three friends {loras}"))[-1].finished.job.generate
    assert first.seed != second.seed  # drawn per request (a 1 in 2^32 clash)
    # A prompt that already uses a name is left as written for that LoRA.
    kept = (await serve(api, ALICE, f"{names[0]} waving --lora {names[0]}"))[-1].finished.job.generate
    assert kept.full_prompt == f"{names[0]} waving"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("x --n 5", "1 to 4 images"),
        ("x --steps 101", "1 to 100 steps"),
        ("x --cfg 30", "CFG scale"),
        ("x --ar 5:1", "2:1"),
        ("x --seed 4294967296", "seed"),
        ("x --adapt someone.png", "no IP-Adapter"),
        ("x --adapt https://example.org/a.png", "no IP-Adapter"),
        ("x --lora nosuchlora", "There is no LoRA called nosuchlora"),
    ],
)
async def test_bad_generation_requests_are_refused_and_store_nothing(api: Api, text: str, words: str) -> None:
    error = await refused(serve(api, ALICE, text))
    assert error.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert words in error.message
    assert api.store.jobs() == []


async def test_too_many_or_repeated_loras_are_refused(api: Api, portrait_png: bytes) -> None:
    name = await distill(api, ALICE, portrait_png)
    six = pb.GenerateSpec(prompt="crowd", loras=[pb.LoraWeight(name=name)] * 6)
    assert "At most 5" in (await refused(collect(api.client.generate(six, ALICE)))).message
    twice = pb.GenerateSpec(prompt="x", loras=[pb.LoraWeight(name=name)] * 2)
    assert "once" in (await refused(collect(api.client.generate(twice, ALICE)))).message
    heavy = pb.GenerateSpec(prompt="x", loras=[pb.LoraWeight(name=name, weight=3.0)])
    assert "weight" in (await refused(collect(api.client.generate(heavy, ALICE)))).message


async def test_a_redelivered_serve_makes_one_job(api: Api, portrait_png: bytes) -> None:
    name = await distill(api, ALICE, portrait_png)
    first = await serve(api, ALICE, f"hello --lora {name}", key="tg:1:9")
    again = await serve(api, ALICE, f"hello --lora {name}", key="tg:1:9")
    assert first[0].job_id == again[0].job_id
    clash = await refused(serve(api, ALICE, f"goodbye --lora {name}", key="tg:1:9"))
    assert clash.code == grpc.StatusCode.FAILED_PRECONDITION
    assert len([job for job in api.store.jobs() if job.kind == JobKind.GENERATE]) == 1


async def test_visibility_and_ownership_for_every_operation(api: Api, portrait_png: bytes) -> None:
    name = await distill(api, ALICE, portrait_png)
    image = f"{name}.png"
    client = api.client
    not_found = grpc.StatusCode.NOT_FOUND

    # Private: for Bob the LoRA does not exist, whatever he tries.
    for call in (
        client.get_lora(name, BOB),
        client.download_lora(name, BOB),
        client.update_lora(name, BOB, public=True),
        client.delete_lora(name, BOB),
        client.get_image(image, BOB),
        client.image_info(image, BOB),
        serve(api, BOB, f"x --lora {name}"),
    ):
        error = await refused(call)
        assert error.code == not_found, error.message
    assert name not in [lora.name for lora in await client.list_loras(BOB)]

    # Public: Bob sees, lists, downloads and uses it, but cannot change or delete it or see the picture.
    lora = await client.update_lora(name, ALICE, public=True, description="  my first  ")
    assert lora.public and lora.description == "my first" and not lora.show_image
    assert (await client.get_lora(name, BOB)).description == "my first"
    assert name in [lora.name for lora in await client.list_loras(BOB)]
    assert name not in [lora.name for lora in await client.list_loras(BOB, include_public=False)]
    assert await client.download_lora(name, BOB) == b"safetensor"
    assert (await serve(api, BOB, f"x --lora {name}"))[-1].state == pb.JOB_STATE_SUCCEEDED
    for call in (client.update_lora(name, BOB, public=False), client.delete_lora(name, BOB)):
        assert (await refused(call)).code == grpc.StatusCode.PERMISSION_DENIED
    assert (await refused(client.get_image(image, BOB))).code == not_found

    # The owner shows the source picture: now Bob may see it (and only while the LoRA is public).
    await client.update_lora(name, ALICE, show_image=True)
    assert (await client.get_image(image, BOB)).startswith(b"\x89PNG")
    assert (await client.image_info(image, BOB)).lora_name == name
    await client.update_lora(name, ALICE, public=False)
    for call in (client.get_image(image, BOB), client.get_lora(name, BOB)):
        assert (await refused(call)).code == not_found


async def test_deleting_removes_the_lora_and_picture_and_retires_the_name(api: Api, portrait_png: bytes) -> None:
    name = await distill(api, ALICE, portrait_png)
    [job] = await api.client.list_jobs(ALICE)
    reply = await api.client.delete_lora(name, ALICE)
    assert reply.name == name and reply.image_deleted
    for call in (api.client.get_lora(name, ALICE), api.client.get_image(f"{name}.png", ALICE)):
        assert (await refused(call)).code == grpc.StatusCode.NOT_FOUND
    assert (await refused(api.client.delete_lora(name, ALICE))).code == grpc.StatusCode.NOT_FOUND
    assert api.store.name_taken(name)  # never minted again
    # The job's history still replays, without the LoRA it made.
    events = await collect(api.client.watch(job.id, ALICE))
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED and not events[-1].finished.HasField("lora")
    assert (await api.client.user_stats(ALICE)).loras_owned == 0


async def test_a_queued_generation_whose_lora_is_deleted_fails_with_a_sentence(
    tmp_path: Path, portrait_png: bytes
) -> None:
    stores: list[Store] = []

    def gated_generation(release: threading.Event) -> Callable[[JobContext], Outcome]:
        """Like fake_jobs, but a generation waits for ``release``, then reads its LoRAs as the real one does."""
        jobs = fake_jobs(None)

        def run(ctx: JobContext) -> Outcome:
            if ctx.job.generate is not None:
                while not release.wait(0.01):
                    ctx.check()
                for use in ctx.job.generate.loras:
                    stores[0].lora_file(use.name)
            return jobs(ctx)

        return run

    api, stop = await start_api(tmp_path, pipeline=gated_generation, generation=DEFAULTS)
    stores.append(api.store)
    try:
        name = await distill(api, ALICE, portrait_png)
        api.release.clear()
        events = api.client.generate(parse_serve(f"x --lora {name}"), ALICE)
        first = await anext(events)
        await api.client.delete_lora(name, ALICE)
        api.release.set()
        last = [event async for event in events][-1]
        assert first.accepted.kind == pb.JOB_KIND_GENERATE
        assert last.state == pb.JOB_STATE_FAILED and f"There is no LoRA called {name}" in last.finished.job.error
    finally:
        await stop()  # type: ignore[misc]


async def test_description_length_and_requester_are_checked(api: Api, portrait_png: bytes) -> None:
    name = await distill(api, ALICE, portrait_png)
    error = await refused(api.client.update_lora(name, ALICE, description="x" * 501))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "500" in error.message
    nobody = pb.Requester(platform="telegram")
    assert (await refused(api.client.user_stats(nobody))).code == grpc.StatusCode.INVALID_ARGUMENT
    assert (await refused(api.client.delete_lora(name, nobody))).code == grpc.StatusCode.INVALID_ARGUMENT


async def test_only_an_operator_may_import_regularization_photos(api: Api, portrait_png: bytes) -> None:
    chat_user = collect(api.client.import_regularization(ALICE, "woman", [portrait_png] * 10))
    assert (await refused(chat_user)).code == grpc.StatusCode.PERMISSION_DENIED
    operator = pb.Requester(platform="cli", user="root")
    no_class = collect(api.client.import_regularization(operator, "", [portrait_png] * 10))
    assert "man, woman or person" in (await refused(no_class)).message
    assert api.store.jobs() == []
