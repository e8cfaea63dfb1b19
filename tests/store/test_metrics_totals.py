"""/metrics shows the store's totals: the same figures a walk over every job record gives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemon.jobs.model import JobState
from daemon.metrics import MetricsSource, render
from daemon.store.lmdb_store import Store, StoreConfig
from tests.store import brute
from tests.store.scenario import Scenario


def value(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match, f"{sample} missing from:\n{text}"
    return float(match.group(1))


def test_job_figures_in_the_exposition_equal_a_full_scan(tmp_path: Path) -> None:
    store = Store(StoreConfig(path=tmp_path / "store", map_size=1 << 24))
    Scenario(store).mixed()
    source = MetricsSource(store, lambda: 2, lambda: True, lambda: "cpu", lambda: "train")

    text = render(source)

    expected = brute.totals(store.jobs())
    for state in JobState:
        assert value(text, f'distillery_jobs{{state="{state.value}"}}') == expected.get(f"state/{state.value}", 0)
    for reason in ("internal", "out_of_memory", "pipeline"):
        assert value(text, f'distillery_job_failures{{reason="{reason}"}}') == expected[f"failure/{reason}"]
    for stage in ("train", "save"):
        count = value(text, f'distillery_job_stage_seconds_count{{stage="{stage}"}}')
        assert count == expected[f"stage_count/{stage}"] > 0
        seconds = value(text, f'distillery_job_stage_seconds_sum{{stage="{stage}"}}')
        assert seconds == pytest.approx(expected[f"stage_sum/{stage}"])
    assert value(text, 'distillery_job_seconds_count{state="succeeded"}') == expected["job_count/succeeded"]
    assert value(text, "distillery_queue_length") == 2
