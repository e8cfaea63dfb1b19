"""/serve's richer options over the real gRPC API, with stand-in pipelines: what a request turns into, which
pictures it may use, and the sentence and status of every refusal."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from distillery.v1 import distillery_pb2 as pb
from PIL import Image

from daemon.errors import BadInput
from daemon.pipeline.serve_request import ServeRequest, resolve
from daemon.settings import load_settings
from frontends.commands import parse_serve
from frontends.render import models_text
from tests.rpc.test_manage_rpc import DEFAULTS, distill, fake_jobs, refused, serve
from tests.rpc.test_service_rpc import ALICE, BOB, Api, start_api


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    running, stop = await start_api(tmp_path, "--allow-private-urls", pipeline=fake_jobs, generation=DEFAULTS)
    yield running
    await stop()  # type: ignore[misc]


def wide_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (600, 300), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


async def test_image_to_image_from_a_stored_picture_or_a_link_takes_its_aspect_ratio(
    api: Api, portrait_png: bytes
) -> None:
    name = await distill(api, ALICE, portrait_png)
    stored = (await serve(api, ALICE, f"a painting --image {name}.png --imagedenoise 0.4"))[-1].finished.job
    assert stored.state == pb.JOB_STATE_SUCCEEDED
    spec = stored.generate
    assert spec.init_image == f"{name}.png" and spec.init_denoise == pytest.approx(0.4)
    assert (spec.width, spec.height) == (64, 64)  # the square portrait

    async def serve_wide(request: web.Request) -> web.Response:
        return web.Response(body=wide_png(), content_type="image/png")

    app = web.Application()
    app.router.add_get("/wide.png", serve_wide)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        events = await serve(api, ALICE, f"a painting --image http://127.0.0.1:{port}/wide.png")
    finally:
        await runner.cleanup()
    job = events[-1].finished.job
    # The fetched picture is stored with the job, its owner's like any source image; 2:1 on the model's grid.
    assert job.generate.init_image == f"{job.id}-image.png" and job.generate.init_denoise == pytest.approx(0.75)
    assert (job.generate.width, job.generate.height) == (88, 48)
    kept = Image.open(io.BytesIO(await api.client.get_image(f"{job.id}-image.png", ALICE)))
    assert kept.size == (600, 300)
    # A picture made by /serve can start the next one.
    made = events[-1].finished.images[0].name
    again = (await serve(api, ALICE, f"more --image {made} --imagedenoise 1"))[-1].finished.job
    assert again.generate.init_image == made and (again.generate.width, again.generate.height) == (88, 48)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("x --image nothere.png", "There is no stored image nothere.png"),
        ("x --image a.png --ar 2:3", "leave out --ar"),
        ("x --image a.png --imagedenoise 1.5", "between 0 (keep the picture) and 1"),
        ("x --imagedenoise 0.3", "--imagedenoise goes with --image"),
        ("x --image a.png --imagedenoise 0.1 --steps 4", "redraw nothing: use more steps"),
        ("x --sampler plms", "There is no sampler 'plms'"),
        ("x --power=3", "upscales 1.5 to 2 times"),
        ("x --image http://127.0.0.1:9/a.png", "did not answer"),
    ],
)
async def test_bad_option_values_are_refused_with_a_sentence(api: Api, text: str, words: str) -> None:
    error = await refused(serve(api, ALICE, text))
    expected = grpc.StatusCode.NOT_FOUND if "no stored image" in words else grpc.StatusCode.INVALID_ARGUMENT
    assert error.code == expected and words in str(error)


async def test_another_users_private_picture_cannot_start_an_image(api: Api, portrait_png: bytes) -> None:
    name = await distill(api, ALICE, portrait_png)
    error = await refused(serve(api, BOB, f"x --image {name}.png"))
    assert error.code == grpc.StatusCode.NOT_FOUND


def test_serve_models_come_from_flags_or_the_config_file(tmp_path: Path) -> None:
    settings = load_settings(["--serve-model", "realistic=/m/rv.safetensors", "--serve-model", "anime=/m/a"], {})
    assert settings.models.serve_models == (("realistic", "/m/rv.safetensors"), ("anime", "/m/a"))
    config = tmp_path / "d.toml"
    config.write_text('[serve_models]\nrealistic = "/m/rv.safetensors"\n')
    assert load_settings(["--config", str(config)], {}).models.serve_models == (
        ("realistic", "/m/rv.safetensors"),
    )
    assert load_settings([], {}).models.serve_models == ()
    with pytest.raises(SystemExit, match="NAME=SOURCE"):
        load_settings(["--serve-model", "Bad Name=/m"], {})


def test_model_names_are_checked_and_listed(tmp_path: Path) -> None:
    defaults = dataclasses.replace(DEFAULTS, models=("realistic",))
    assert resolve(ServeRequest(prompt="x", model="Realistic"), [], defaults).model == "realistic"
    with pytest.raises(BadInput, match="There is no model called anime; choose one of realistic"):
        resolve(ServeRequest(prompt="x", model="anime"), [], defaults)
    with pytest.raises(BadInput, match="there is only the base"):
        resolve(ServeRequest(prompt="x", model="anime"), [], DEFAULTS)
    assert parse_serve("x --model Realistic").model == "realistic"
    status = pb.Status(base_model="sd15", models=["realistic"])
    assert (
        models_text(status)
        == "base: sd15 (the default, and what training uses)\nrealistic: /serve ... --model realistic"
    )
