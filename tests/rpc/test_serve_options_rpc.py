"""/serve's richer options over the real gRPC API, with stand-in pipelines: what a request turns into, which
pictures it may use, and the sentence and status of every refusal."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from distillery.v1 import distillery_pb2 as pb
from PIL import Image

from daemon.errors import BadInput
from daemon.pipeline.serve_request import ServeRequest, resolve
from daemon.settings import load_settings
from frontends.commands import parse_serve, parse_upscale
from frontends.render import models_text
from tests.image_server import serving
from tests.rpc.test_manage_rpc import DEFAULTS, distill, fake_jobs, refused, serve
from tests.rpc.test_service_rpc import ALICE, BOB, Api, collect, start_api

# A distillery with both IP-Adapters loaded.
FACE_DEFAULTS = dataclasses.replace(DEFAULTS, adapt_available=True, face_adapt_available=True)


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

    async with serving({"wide.png": (wide_png(), "image/png")}) as site:
        events = await serve(api, ALICE, f"a painting --image {site}/wide.png")
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
        ("x --adaptface someone.png", "no face IP-Adapter configured"),
        ("x --adaptface https://example.org/me.png", "no face IP-Adapter configured"),
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


def test_the_face_ip_adapter_is_switched_on_by_flag_environment_or_config_file(tmp_path: Path) -> None:
    off = load_settings(["--preset", "sd15", "--ip-adapter", "h94/IP-Adapter"], {}).models
    assert (off.ip_adapter, off.face_ip_adapter) == ("h94/IP-Adapter", False)
    assert off.face_ip_adapter_weight == "models/ip-adapter-plus-face_sd15.safetensors"
    flag = load_settings(["--preset", "sd15", "--ip-adapter", "/m/ip", "--face-ip-adapter"], {}).models
    assert flag.face_ip_adapter
    env = {"DISTILLERY_IP_ADAPTER": "/m/ip", "DISTILLERY_FACE_IP_ADAPTER": "true"}
    assert load_settings(["--preset", "sd15"], env).models.face_ip_adapter
    env["DISTILLERY_FACE_IP_ADAPTER"] = "0"
    assert not load_settings(["--preset", "sd15"], env).models.face_ip_adapter
    config = tmp_path / "d.toml"
    config.write_text(
        'preset = "sd15"\nip_adapter = "/m/ip"\nface_ip_adapter = true\n'
        'face_ip_adapter_weight = "models/ip-adapter-plus-face_sd15.bin"\n'
    )
    chosen = load_settings(["--config", str(config)], {}).models
    assert chosen.face_ip_adapter
    assert chosen.face_ip_adapter_weight == "models/ip-adapter-plus-face_sd15.bin"
    with pytest.raises(SystemExit, match="--face-ip-adapter needs --ip-adapter"):
        load_settings(["--preset", "sd15", "--face-ip-adapter"], {})
    with pytest.raises(SystemExit, match="on or off"):
        load_settings(["--preset", "sd15"], {"DISTILLERY_IP_ADAPTER": "/m", "DISTILLERY_FACE_IP_ADAPTER": "maybe"})


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


@pytest.fixture
async def face_api(tmp_path: Path) -> AsyncIterator[Api]:
    running, stop = await start_api(tmp_path, "--allow-private-urls", pipeline=fake_jobs, generation=FACE_DEFAULTS)
    yield running
    await stop()  # type: ignore[misc]


async def test_adaptface_takes_a_stored_picture_or_a_link_beside_four_adapt_pictures(
    face_api: Api, portrait_png: bytes
) -> None:
    name = await distill(face_api, ALICE, portrait_png)
    four = " ".join(f"--adapt {name}.png" for _ in range(4))
    job = (await serve(face_api, ALICE, f"x {four} --adaptface {name}.png --adaptfaceweight 0.3"))[-1].finished.job
    assert job.state == pb.JOB_STATE_SUCCEEDED
    assert job.generate.adapt_face == f"{name}.png" and len(job.generate.more_adapts) == 3
    assert job.generate.adapt_face_weight == pytest.approx(0.3)

    async with serving({"me.png": (portrait_png, "image/png")}) as site:
        linked = (await serve(face_api, ALICE, f"x --adaptface {site}/me.png"))[-1].finished.job
    # The fetched picture is stored with the job, its owner's like any source image, and no one else's.
    assert linked.state == pb.JOB_STATE_SUCCEEDED and not linked.generate.adapt_image
    assert linked.generate.adapt_face == f"{linked.id}-adaptface.png"
    kept = Image.open(io.BytesIO(await face_api.client.get_image(f"{linked.id}-adaptface.png", ALICE)))
    assert kept.size == Image.open(io.BytesIO(portrait_png)).size
    assert (
        await refused(face_api.client.get_image(linked.generate.adapt_face, BOB))
    ).code == grpc.StatusCode.NOT_FOUND

    # Another user's private picture does not exist for Bob, as a face picture either.
    error = await refused(serve(face_api, BOB, f"x --adaptface {name}.png"))
    assert error.code == grpc.StatusCode.NOT_FOUND
    # A picture without a face is refused when asked, not after a wait in the queue, and nothing is kept:
    # a link's picture as well as a stored one (the flat picture an --image link left with its job).
    before = (await face_api.client.user_stats(ALICE)).generate_jobs
    async with serving({"flat.png": (wide_png(), "image/png")}) as site:
        linked_flat = await refused(serve(face_api, ALICE, f"x --adaptface {site}/flat.png"))
        flat = (await serve(face_api, ALICE, f"x --image {site}/flat.png"))[-1].finished.job.generate.init_image
    stored_flat = await refused(serve(face_api, ALICE, f"x --adaptface {flat}"))
    for error in (linked_flat, stored_flat):
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "no face in the --adaptface picture" in str(error)
    assert (await face_api.client.user_stats(ALICE)).generate_jobs == before + 1  # the --image job only
    # Four --adapt pictures and the face: a fifth --adapt picture is still refused (the chats stop at four
    # themselves, so this one comes straight over the API).
    spec = parse_serve(f"x {four} --adaptface {name}.png")
    spec.more_adapts.add(image=f"{name}.png")
    error = await refused(collect(face_api.client.generate(spec, ALICE)))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "at most 4 --adapt pictures" in str(error)


async def test_an_upscale_draws_with_the_pictures_adapt_pictures_while_they_are_still_shared(
    face_api: Api, portrait_png: bytes
) -> None:
    name = await distill(face_api, ALICE, portrait_png)
    await face_api.client.update_lora(name, ALICE, public=True, show_image=True)
    made = (await serve(face_api, BOB, f"x --adapt {name}.png --adaptweight 0.4 --adaptface {name}.png"))[-1]
    picture = made.finished.images[0].name
    job = (await collect(face_api.client.generate(parse_upscale(picture), BOB)))[-1].finished.job
    assert job.state == pb.JOB_STATE_SUCCEEDED and job.generate.upscale_image == picture
    spec = job.generate
    assert (spec.adapt_image, spec.adapt_face) == (f"{name}.png", f"{name}.png")
    assert spec.adapt_weight == pytest.approx(0.4) and spec.adapt_face_weight == pytest.approx(0.6)
    # Once Alice hides her photo, Bob's picture made with it cannot be upscaled: it is not his to use now.
    await face_api.client.update_lora(name, ALICE, show_image=False)
    error = await refused(collect(face_api.client.generate(parse_upscale(picture), BOB)))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert str(error) == (
        f"{picture} was made with the picture {name}.png, which is gone or no longer shared with you."
    )
