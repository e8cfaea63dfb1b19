"""What the generation tests share: a store with three LoRAs and an --adapt picture, the pipeline over the
session's demo models, a request builder and readers of the PNGs it makes.

Test modules pull these in with ``pytest_plugins = ["tests.fixtures_models", "tests.pipeline.generate_fixtures"]``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from daemon.jobs.contract import JobContext, Outcome
from daemon.jobs.executor import JournalContext
from daemon.jobs.hub import EventHub
from daemon.jobs.inputs import StoreBlobs, read_inputs
from daemon.jobs.journal import Journal
from daemon.jobs.model import Event, GenerateParams, JobKind, JobState, LoraUse, Stage, SubjectClass
from daemon.models.demo import build_tiny_ip_adapter
from daemon.models.resident import Resident, load_resident
from daemon.pipeline.adapters import AdapterCache
from daemon.pipeline.generate import GeneratePipeline
from daemon.store.lmdb_store import Store, StoreConfig
from tests.fixtures_models import demo_config
from tests.pipeline.test_adapters import random_lora_file
from tests.records import first_event, lora_record, make_job

NAMES = ("rifttami", "quornel", "brastik")
# AUTOMATIC1111's infotext grammar: "Key: value" pairs, a value quoted as JSON when it holds a comma or colon.
INFOTEXT_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, fields) the way A1111's "PNG Info" reads a ``parameters`` chunk."""
    *lines, last = text.strip().split("\n")
    prompt: list[str] = []
    negative: list[str] = []
    for line in lines:
        if line.startswith("Negative prompt:") or negative:
            negative.append(line.removeprefix("Negative prompt:").strip())
        else:
            prompt.append(line)
    fields = {k: json.loads(v) if v.startswith('"') else v for k, v in INFOTEXT_PAIR.findall(last)}
    return "\n".join(prompt), "\n".join(negative), fields


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, resident: Resident) -> Iterator[Store]:
    """A store holding three LoRAs (random weights, distinct by seed) and an --adapt picture."""
    store = Store(StoreConfig(path=tmp_path_factory.mktemp("generate") / "store"))
    for seed, name in enumerate(NAMES):
        job = make_job(f"distill-{name}", name)
        store.create_job(job, first_event(job), None, "")
        job.state = JobState.SUCCEEDED
        done = Event(job.id, 2, time.time(), job.state, Stage.DONE, "ready", "finished")
        store.finish_job(job, done, lora_record(name), random_lora_file(resident.unet, seed))
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    store.put_image("adapt.png", "telegram//111", buf.getvalue(), "0" * 64)
    yield store
    store.close()


@pytest.fixture(scope="module")
def journal(store: Store) -> Iterator[Journal]:
    loop = asyncio.new_event_loop()  # never run: the hub only queues wake-ups on it
    yield Journal(store, EventHub(loop))
    loop.close()


@pytest.fixture
def adapters(resident: Resident) -> Iterator[AdapterCache]:
    cache = AdapterCache(resident.pipeline, capacity=4)
    yield cache
    cache.clear()  # the session's resident goes back bare to the other test modules


@pytest.fixture
def generate(resident: Resident, store: Store, adapters: AdapterCache) -> GeneratePipeline:
    return GeneratePipeline(resident=resident, adapters=adapters)


_jobs = iter(range(1_000_000))


def params(*loras: str, **changes: Any) -> GenerateParams:
    weights = [LoraUse(name, 0.8) for name in loras]
    prompt = " and ".join(loras) or "a person"
    base = GenerateParams(
        prompt=prompt,
        full_prompt=f"a photo of {prompt}",
        loras=weights,
        negative_prompt="blurry, lowres",
        seed=1234,
        cfg=7.0,
        steps=3,
        width=64,
        height=64,
        count=1,
    )
    return dataclasses.replace(base, **changes)


def context(
    store: Store, journal: Journal, p: GenerateParams, should_stop: Callable[[], bool] = lambda: False
) -> JobContext:
    job = dataclasses.replace(
        make_job(f"gen{next(_jobs):04d}", ""), kind=JobKind.GENERATE, generate=p, image_name="", train_steps=0
    )
    store.create_job(job, first_event(job), None, "")
    # What the daemon reads before dispatch: the LoRA files and the stored pictures.
    return JournalContext(journal, job, should_stop, read_inputs(store, job, StoreBlobs(store), no_reg_sets))


def no_reg_sets(subject_class: SubjectClass) -> str:
    raise AssertionError("a generation job reads no regularization set")


def run(generate: GeneratePipeline, store: Store, journal: Journal, p: GenerateParams, **kwargs: Any) -> Outcome:
    return generate(context(store, journal, p, **kwargs))


def pixels(png: bytes) -> np.ndarray[Any, Any]:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def texts(png: bytes) -> dict[str, str]:
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        return dict(image.text)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def ip_resident(
    demo_models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory, resident: Resident
) -> Resident:
    """The demo models with tiny IP-Adapters, plain and plus face, saved to a temp folder in h94's layout and
    loaded through the real path."""
    folder = tmp_path_factory.mktemp("ip-adapter")
    build_tiny_ip_adapter(resident.unet, folder)
    config = dataclasses.replace(demo_config(demo_models), ip_adapter=str(folder), face_ip_adapter=True)
    return load_resident(config)


@pytest.fixture
def adapters_for_ip(ip_resident: Resident) -> Iterator[AdapterCache]:
    cache = AdapterCache(ip_resident.pipeline)
    yield cache
    cache.clear()
