"""/upscale over the real gRPC API with stand-in pipelines: what an upscale job runs with, whose pictures and
LoRAs it may use, and the sentence and status of every refusal. The pixels are tested on the demo models in
tests/pipeline/test_upscale.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from distillery.v1 import distillery_pb2 as pb

from daemon.pipeline.denoise import hires_size
from frontends.commands import parse_upscale
from tests.rpc.test_manage_rpc import DEFAULTS, distill, fake_jobs, refused, serve
from tests.rpc.test_service_rpc import ALICE, BOB, Api, collect, start_api


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    running, stop = await start_api(tmp_path, "--daily-images", "4", pipeline=fake_jobs, generation=DEFAULTS)
    yield running
    await stop()  # type: ignore[misc]


async def upscale(api: Api, who: pb.Requester, text: str) -> list[pb.JobEvent]:
    return await collect(api.client.generate(parse_upscale(text), who))


async def served(api: Api, who: pb.Requester, text: str) -> pb.Finished:
    events = await serve(api, who, text)
    assert events[-1].finished.job.state == pb.JOB_STATE_SUCCEEDED
    return events[-1].finished


async def test_an_upscale_runs_the_pictures_own_settings_once_and_counts_as_an_image(
    api: Api, portrait_png: bytes
) -> None:
    name = await distill(api, ALICE, portrait_png)
    made = await served(
        api, ALICE, f"on the moon --lora {name}:0.7 --n 2 --seed 7 --ar 2:1 --neg blurry --cfg 5 --sampler euler"
    )
    source, picture = made.job.generate, made.images[1].name

    events = await upscale(api, ALICE, f"{picture.upper()} --power=1.5 --upscalemethod lanczos")
    assert events[0].text == f"Upscaling {picture}; you are number 1 in the queue."
    finished = events[-1].finished
    assert finished.job.state == pb.JOB_STATE_SUCCEEDED and finished.job.kind == pb.JOB_KIND_GENERATE
    spec = finished.job.generate
    # The second picture's own seed, one picture, at its size; everything else as the picture was made.
    assert (spec.upscale_image, spec.seed, spec.count, spec.width, spec.height) == (picture, 8, 1, 88, 48)
    kept = ("prompt", "full_prompt", "negative_prompt", "cfg", "steps", "sampler", "model")
    assert [getattr(spec, field) for field in kept] == [getattr(source, field) for field in kept]
    assert [(use.name, use.weight) for use in spec.loras] == [(name, pytest.approx(0.7))]
    assert (spec.power, spec.power_scale, spec.upscale_method) == (True, 1.5, "lanczos")
    assert not spec.adapt_image and not spec.init_image

    [image] = finished.images
    info = await api.client.image_info(image.name, ALICE)
    assert (info.width, info.height) == hires_size(88, 48, 1.5, 8) and info.seed == 8
    stats = await api.client.user_stats(ALICE)
    assert (stats.images_today, stats.images_left_today) == (3, 1)

    # That picture again, 1.5 times more, would pass the largest size /serve makes; nothing is queued or counted.
    error = await refused(upscale(api, ALICE, f"{image.name} --power=1.5"))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(error) == (
        f"{image.name} is already upscaled (128x72): 1.5 times more would be 192x112, larger than the largest "
        "picture /serve makes (128x144)."
    )
    assert (await api.client.user_stats(ALICE)).images_today == 3


async def test_only_ones_own_pictures_made_by_serve_can_be_upscaled(api: Api, portrait_png: bytes) -> None:
    name = await distill(api, ALICE, portrait_png)
    picture = (await served(api, ALICE, "a cat")).images[0].name
    # Bob cannot see Alice's picture: it does not exist for him, as for GetImage.
    error = await refused(upscale(api, BOB, picture))
    assert error.code == grpc.StatusCode.NOT_FOUND and str(error) == f"There is no stored image {picture}."
    # A LoRA's source photo is not a picture /serve made: not Alice's own, nor one Bob may see.
    not_served = (
        f"{name}.png was not made by /serve: /upscale takes a picture /serve made, such as 3f2a9c1d-1.png."
    )
    error = await refused(upscale(api, ALICE, f"{name}.png"))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and str(error) == not_served
    await api.client.update_lora(name, ALICE, public=True, show_image=True)
    error = await refused(upscale(api, BOB, f"{name}.png"))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and str(error) == not_served
    # /upscale takes only its own options; a name of the wrong shape is refused at the edge.
    mixed = parse_upscale(picture)
    mixed.prompt, mixed.count = "a dog", 2
    error = await refused(collect(api.client.generate(mixed, ALICE)))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "/upscale takes a picture's name" in str(error)
    error = await refused(collect(api.client.generate(pb.GenerateSpec(upscale_image="../x.png"), ALICE)))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(error).startswith("That is not a valid picture to upscale")
    error = await refused(upscale(api, ALICE, f"{picture} --power=2.5"))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "--power upscales 1.5 to 2 times" in str(error)
    assert len(await api.client.list_jobs(ALICE)) == 2  # the distillation and the one /serve


async def test_each_lora_of_the_picture_must_still_be_usable(api: Api, portrait_png: bytes) -> None:
    mine = await distill(api, ALICE, portrait_png)
    shared = await distill(api, ALICE, portrait_png)
    await api.client.update_lora(shared, ALICE, public=True)
    bobs = (await served(api, BOB, f"a picnic --lora {shared}")).images[0].name
    alices = (await served(api, ALICE, f"a walk --lora {mine}")).images[0].name
    assert len(await upscale(api, BOB, bobs)) > 1  # still public: fine

    await api.client.update_lora(shared, ALICE, public=False)
    error = await refused(upscale(api, BOB, bobs))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert str(error) == f"{bobs} was made with the LoRA {shared}, which is gone or no longer shared with you."
    await api.client.delete_lora(mine, ALICE)
    error = await refused(upscale(api, ALICE, alices))
    assert error.code == grpc.StatusCode.NOT_FOUND and f"the LoRA {mine}, which is gone" in str(error)
