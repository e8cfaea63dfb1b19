"""The /serve pipeline on the demo models: seeded, exact images with 0-3 LoRAs, their recipe in the PNG, progress
and cancel every step, --adapt through a tiny IP-Adapter, and training still fine afterwards."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daemon.errors import BadInput, JobCancelled, NotFound
from daemon.jobs.contract import JobContext, Outcome
from daemon.jobs.hub import EventHub
from daemon.jobs.inputs import StoreBlobs, read_inputs
from daemon.jobs.journal import Journal
from daemon.jobs.model import Event, JobKind, JobState, LoraUse, Stage
from daemon.jobs.queue import JobQueue
from daemon.jobs.worker import Worker
from daemon.models.resident import Resident
from daemon.pipeline.adapters import AdapterCache
from daemon.pipeline.generate import GeneratePipeline, lora_short_hash, summary
from daemon.pipeline.runner import JobRunner
from daemon.store.lmdb_store import Store, StoreConfig
from tests.pipeline.generate_fixtures import (
    NAMES,
    context,
    no_reg_sets,
    params,
    parse_infotext,
    pixels,
    run,
    texts,
)
from tests.pipeline.test_adapters import assert_bare, assert_trains_bare, random_lora_file, snapshot
from tests.records import first_event, lora_record, make_job

pytest_plugins = ["tests.fixtures_models", "tests.pipeline.generate_fixtures"]


@pytest.mark.parametrize("loras", [(), NAMES[:1], NAMES], ids=["no-lora", "one-lora", "three-loras"])
def test_a_seed_gives_the_same_pixels_and_a_lora_changes_them(
    generate: GeneratePipeline, store: Store, journal: Journal, loras: tuple[str, ...]
) -> None:
    first = run(generate, store, journal, params(*loras))
    again = run(generate, store, journal, params(*loras))
    bare = run(generate, store, journal, params(*loras, loras=[]))
    image = pixels(first.images[0].png)
    assert image.shape == (64, 64, 3)
    assert np.array_equal(image, pixels(again.images[0].png))
    if loras:
        assert np.abs(image.astype(int) - pixels(bare.images[0].png)).max() > 10
    else:
        assert np.array_equal(image, pixels(bare.images[0].png))
    other_seed = run(generate, store, journal, params(*loras, seed=99))
    assert not np.array_equal(image, pixels(other_seed.images[0].png))


def test_every_png_carries_its_recipe(
    generate: GeneratePipeline, store: Store, journal: Journal, resident: Resident
) -> None:
    p = params(*NAMES[:2], count=2, width=64, height=48)
    ctx = context(store, journal, p)
    outcome = generate(ctx)

    assert outcome.summary == "Here are your 2 images of rifttami and quornel."
    assert outcome.lora is None and outcome.lora_file is None
    assert [image.name for image in outcome.images] == [f"{ctx.job.id}-1.png", f"{ctx.job.id}-2.png"]
    for index, image in enumerate(outcome.images):
        seed = 1234 + index
        assert pixels(image.png).shape == (48, 64, 3)
        chunks = texts(image.png)
        prompt, negative, fields = parse_infotext(chunks["parameters"])
        assert prompt == "a photo of rifttami and quornel <lora:rifttami:0.8> <lora:quornel:0.8>"
        assert negative == "blurry, lowres"
        assert fields["Steps"] == "3" and fields["Seed"] == str(seed) and fields["Size"] == "64x48"
        assert fields["CFG scale"] == "7" and fields["Sampler"] == "DPM++ 2M"
        assert fields["Model hash"] == resident.base_model_hash[:10] and fields["Model"] == "sd15-tiny"
        lora_hashes = {name: lora_short_hash(store.lora_file(name)) for name in NAMES[:2]}
        assert fields["Lora hashes"] == ", ".join(f"{name}: {h}" for name, h in lora_hashes.items())

        facts = json.loads(chunks["distillery"])
        assert facts["seed"] == seed and facts["steps"] == 3 and facts["cfg"] == 7.0
        assert (facts["width"], facts["height"]) == (64, 48) and facts["index"] == index + 1
        assert facts["prompt"] == "rifttami and quornel" and facts["base_model"] == resident.base_model
        assert [lora["name"] for lora in facts["loras"]] == ["rifttami", "quornel"]
        assert facts["adapt"] is None
        assert image.info == {
            "seed": seed,
            "width": 64,
            "height": 48,
            "parameters": chunks["parameters"],
            "loras": [{"name": "rifttami", "weight": 0.8}, {"name": "quornel", "weight": 0.8}],
        }


def test_no_negative_prompt_means_no_negative_line(
    generate: GeneratePipeline, store: Store, journal: Journal
) -> None:
    outcome = run(generate, store, journal, params(negative_prompt=""))
    text = texts(outcome.images[0].png)["parameters"]
    assert "Negative prompt" not in text and "Lora hashes" not in text
    assert parse_infotext(text)[0] == "a photo of a person"
    assert outcome.summary == "Here is your image."


def test_image_i_of_a_batch_is_made_again_alone_with_seed_plus_i(
    generate: GeneratePipeline, store: Store, journal: Journal
) -> None:
    batch = run(generate, store, journal, params(NAMES[0], count=3))
    alone = run(generate, store, journal, params(NAMES[0], seed=1236))
    third = pixels(batch.images[2].png).astype(int)
    # Same noise, same weights; the batched UNet may round a last bit differently than batch size 1.
    assert np.abs(third - pixels(alone.images[0].png)).max() <= 1
    assert np.abs(third - pixels(batch.images[0].png).astype(int)).max() > 10


def test_zero_loras_with_adapters_cached_is_the_bare_base_model(
    generate: GeneratePipeline, store: Store, journal: Journal, adapters: AdapterCache
) -> None:
    adapters.clear()
    bare = pixels(run(generate, store, journal, params()).images[0].png)
    run(generate, store, journal, params(*NAMES))
    assert adapters.loaded == list(NAMES)
    assert np.array_equal(pixels(run(generate, store, journal, params()).images[0].png), bare)


def test_progress_every_denoising_step(generate: GeneratePipeline, store: Store, journal: Journal) -> None:
    ctx = context(store, journal, params(NAMES[0], steps=4))
    generate(ctx)
    events = store.events_after(ctx.job.id, 0)
    stage = [e for e in events if e.stage == Stage.GENERATE and not e.kind]
    assert stage and stage[0].text == "Generating an image of rifttami."
    progress = [e for e in events if e.kind == "progress"]
    assert progress and all(e.total == 4 and e.text.startswith("Denoising step") for e in progress)
    assert progress[-1].step == 4


def test_cancel_mid_denoise_stops_and_leaves_the_pipeline_usable(
    generate: GeneratePipeline, store: Store, journal: Journal
) -> None:
    reference = pixels(run(generate, store, journal, params(NAMES[0], steps=4)).images[0].png)
    polls = 0

    def stop_on_second_step() -> bool:
        nonlocal polls
        polls += 1
        return polls > 2  # once when the stage begins, then once per finished step

    ctx = context(store, journal, params(NAMES[0], steps=4), should_stop=stop_on_second_step)
    with pytest.raises(JobCancelled):
        generate(ctx)
    assert [e.step for e in store.events_after(ctx.job.id, 0) if e.kind == "progress"] == [1]
    again = pixels(run(generate, store, journal, params(NAMES[0], steps=4)).images[0].png)
    assert np.array_equal(again, reference)


def test_a_lora_deleted_since_the_request_fails_the_job_clearly(
    generate: GeneratePipeline, store: Store, journal: Journal
) -> None:
    with pytest.raises(NotFound, match="There is no LoRA called vanished"):
        run(generate, store, journal, params("vanished"))


def test_adapt_without_an_ip_adapter_is_refused(
    generate: GeneratePipeline, store: Store, journal: Journal
) -> None:
    with pytest.raises(BadInput, match="IP-Adapter"):
        run(generate, store, journal, params(adapt_image="adapt.png", adapt_weight=0.6))


def test_training_still_runs_after_generation(
    generate: GeneratePipeline,
    store: Store,
    journal: Journal,
    adapters: AdapterCache,
    resident: Resident,
    portrait: Image.Image,
) -> None:
    adapters.clear()
    before = snapshot(resident.unet)
    run(generate, store, journal, params(*NAMES[:2]))
    adapters.clear()  # what DistillPipeline does first
    assert_trains_bare(resident, portrait, before)


def test_summaries() -> None:
    one = [LoraUse("rifttami", 1.0)]
    three = [LoraUse(name, 0.7) for name in NAMES]
    assert summary(1, one) == "Here is your image of rifttami."
    assert summary(4, three) == "Here are your 4 images of rifttami, quornel and brastik."
    assert summary(2, []) == "Here are your 2 images."


# -- the dispatcher and the worker ----------------------------------------------------------------------------


def test_the_runner_routes_each_job_by_kind() -> None:
    seen: list[str] = []

    def pipeline(kind: str) -> Callable[[JobContext], Outcome]:
        def run(ctx: JobContext) -> Outcome:
            seen.append(kind)
            return Outcome(summary=kind)

        return run

    runner = JobRunner(distill=pipeline("distill"), generate=pipeline("generate"))

    class Ctx:
        def __init__(self, kind: JobKind) -> None:
            self.job = dataclasses.replace(make_job("j", "name"), kind=kind)

    assert runner(Ctx(JobKind.GENERATE)).summary == "generate"  # type: ignore[arg-type]
    assert runner(Ctx(JobKind.DISTILL)).summary == "distill"  # type: ignore[arg-type]
    assert seen == ["generate", "distill"]


async def test_the_worker_stores_the_images_of_a_generation_job(
    tmp_path: Path, resident: Resident, adapters: AdapterCache
) -> None:
    store = Store(StoreConfig(path=tmp_path / "store"))
    try:
        job = make_job("lora-job", NAMES[0])
        store.create_job(job, first_event(job), None, "")
        job.state = JobState.SUCCEEDED
        done = Event(job.id, 2, time.time(), job.state, Stage.DONE, "ready", "finished")
        store.finish_job(job, done, lora_record(NAMES[0]), random_lora_file(resident.unet, 0))
        journal = Journal(store, EventHub(asyncio.get_running_loop()))
        queue = JobQueue()
        distilled = threading.Event()

        def distill(ctx: JobContext) -> Outcome:
            distilled.set()
            return Outcome(summary="no")

        generate = GeneratePipeline(resident=resident, adapters=adapters)
        blobs = StoreBlobs(store)
        worker = Worker(
            queue,
            journal,
            JobRunner(distill=distill, generate=generate),
            read_inputs=lambda job: read_inputs(store, job, blobs, no_reg_sets),
        )
        gen = dataclasses.replace(
            make_job("gen-job", ""), kind=JobKind.GENERATE, generate=params(NAMES[0], count=2), image_name=""
        )
        store.create_job(gen, first_event(gen), None, "")
        queue.push(gen.id)
        worker.start()
        deadline = time.monotonic() + 60
        while store.get_job(gen.id).state != JobState.SUCCEEDED:
            assert store.get_job(gen.id).state != JobState.FAILED, store.get_job(gen.id).error
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        worker.stop(5)
        finished = store.get_job(gen.id)
        assert finished.outputs == ["gen-job-1.png", "gen-job-2.png"] and not distilled.is_set()
        assert store.events_after(gen.id, 0)[-1].text.startswith("Here are your 2 images of rifttami.")
        _, _, fields = parse_infotext(texts(store.get_image("gen-job-2.png"))["parameters"])
        assert fields["Seed"] == "1235"
    finally:
        store.close()


# -- --adapt through a tiny IP-Adapter ------------------------------------------------------------------------


def test_adapt_goes_through_the_ip_adapter_and_only_for_that_request(
    ip_resident: Resident, store: Store, journal: Journal, portrait: Image.Image
) -> None:
    assert ip_resident.ip_adapter is not None
    before = snapshot(ip_resident.unet)
    adapters = AdapterCache(ip_resident.pipeline)
    generate = GeneratePipeline(resident=ip_resident, adapters=adapters)
    try:
        plain = pixels(run(generate, store, journal, params(NAMES[0])).images[0].png)
        adapted = run(
            generate, store, journal, params(NAMES[0], adapt_image="adapt.png", adapt_weight=0.8, count=2)
        )
        adapted_pixels = pixels(adapted.images[0].png)
        assert np.abs(adapted_pixels.astype(int) - plain).max() > 10
        again = run(generate, store, journal, params(NAMES[0], adapt_image="adapt.png", adapt_weight=0.8))
        assert np.abs(pixels(again.images[0].png).astype(int) - adapted_pixels).max() <= 1
        # The request's weight is the IP-Adapter's scale: at 0 the picture has no say at all.
        weightless = run(generate, store, journal, params(NAMES[0], adapt_image="adapt.png", adapt_weight=0.0))
        assert np.array_equal(pixels(weightless.images[0].png), plain)
        _, _, fields = parse_infotext(texts(adapted.images[0].png)["parameters"])
        assert fields["IP-Adapter weight"] == "0.8" and "IP-Adapter" in fields
        assert json.loads(texts(adapted.images[0].png)["distillery"])["adapt"] == {
            "image": "adapt.png",
            "weight": 0.8,
        }

        # Off again for the next request: the same pixels as before, the UNet's own modules and no projection.
        assert np.array_equal(pixels(run(generate, store, journal, params(NAMES[0])).images[0].png), plain)
        assert ip_resident.unet.encoder_hid_proj is None
        adapters.clear()
        assert_bare(ip_resident, before)

        # A cancelled adapt generation takes the IP-Adapter off too, and training runs on the plain UNet.
        polls = 0

        def stop_on_second_step() -> bool:
            nonlocal polls
            polls += 1
            return polls > 2

        cancelled = context(store, journal, params(adapt_image="adapt.png"), should_stop=stop_on_second_step)
        with pytest.raises(JobCancelled):
            generate(cancelled)
        assert ip_resident.unet.encoder_hid_proj is None
        assert_trains_bare(ip_resident, portrait, before)
    finally:
        adapters.clear()
