"""/serve --model: a second SD 1.5 checkpoint switched in on the same modules, LoRAs still working on it, and
the training base back before any distillation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from daemon.errors import BadInput
from daemon.jobs.contract import JobContext, Outcome
from daemon.jobs.executor import JournalContext
from daemon.jobs.journal import Journal
from daemon.jobs.model import Stage
from daemon.models.resident import Resident, load_pipeline, load_resident
from daemon.models.switch import ModelSwitcher
from daemon.pipeline.adapters import AdapterCache
from daemon.pipeline.generate import GeneratePipeline
from daemon.pipeline.runner import JobRunner
from daemon.store.lmdb_store import Store
from tests.fixtures_models import demo_config
from tests.pipeline.generate_fixtures import NAMES, context, params, parse_infotext, pixels, texts
from tests.records import first_event, make_job

pytest_plugins = ["tests.fixtures_models", "tests.pipeline.generate_fixtures"]


@pytest.fixture(scope="module")
def other_model(demo_models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo base with different UNet weights, saved as its own diffusers folder."""
    pipe, _ = load_pipeline(demo_config(demo_models), torch.float32)
    torch.manual_seed(5)
    with torch.no_grad():
        for parameter in pipe.unet.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    folder = tmp_path_factory.mktemp("models") / "sd15-other"
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def own_resident(demo_models: tuple[Path, Path]) -> Resident:
    """A resident of its own: switching changes its weights, which the session's resident must not see."""
    return load_resident(demo_config(demo_models))


def test_a_second_model_is_switched_in_and_out_with_loras_working_on_both(
    own_resident: Resident, other_model: Path, demo_models: tuple[Path, Path], store: Store, journal: Journal
) -> None:
    resident = own_resident
    base_source, base_hash = resident.base_model, resident.base_model_hash
    adapters = AdapterCache(resident.pipeline)
    config = dataclasses.replace(demo_config(demo_models), serve_models=(("other", str(other_model)),))
    switcher = ModelSwitcher(resident, config, adapters)
    generate = GeneratePipeline(resident=resident, adapters=adapters, models=switcher)

    def made(**changes: Any) -> Any:
        ctx = context(store, journal, params(NAMES[0], **changes))
        return ctx, generate(ctx).images[0]

    _, base = made()
    ctx, other = made(model="other")
    assert np.abs(pixels(other.png).astype(int) - pixels(base.png)).max() > 10
    stages = [e.text for e in store.events_after(ctx.job.id, 0) if e.stage == Stage.GENERATE and not e.kind]
    assert "Loading the model other." in stages
    _, _, fields = parse_infotext(texts(other.png)["parameters"])
    assert fields["Model"] == "sd15-other" and fields["Model hash"] != base_hash[:10]
    # The LoRA cache was emptied for the switch and the LoRA loads again onto the other weights.
    assert adapters.loaded == [NAMES[0]]
    _, bare_other = made(model="other", loras=[])
    assert np.abs(pixels(bare_other.png).astype(int) - pixels(other.png)).max() > 10
    assert np.array_equal(pixels(made(model="other")[1].png), pixels(other.png))

    # Training always gets the configured base back, exactly as loaded.
    seen: list[str] = []

    def distill(ctx: JobContext) -> Outcome:
        seen.append(resident.base_model_hash)
        return Outcome(summary="trained")

    runner = JobRunner(distill=distill, generate=generate, models=switcher)
    job = make_job("distill-after-switch", "zentrolk")
    store.create_job(job, first_event(job), None, "")
    runner(JournalContext(journal, job, lambda: False))
    assert seen == [base_hash] and resident.base_model == base_source and switcher.current == ""
    assert np.array_equal(pixels(made()[1].png), pixels(base.png))

    with pytest.raises(BadInput, match="no model called nothere"):
        switcher.ensure("nothere")
    adapters.clear()
