"""The admission benchmark keeps working: a real daemon on a small seeded store answers every measured call."""

from __future__ import annotations

import json
from pathlib import Path

from bench.admission import BENCH_USER, Row, main, percentile, render, seed
from daemon.store.lmdb_store import Store, StoreConfig


def row(jobs: int, p99: float) -> Row:
    return Row(jobs, 1.0, 2.0, p99 / 2, p99, 1.0, 2.0, 1.0, 2.0, 0.5)


def test_percentiles_are_nearest_rank_and_the_ratio_line_comes_last() -> None:
    samples = [float(n) for n in range(1, 201)]
    assert (percentile(samples, 50), percentile(samples, 99), percentile([7.0], 99)) == (100.0, 198.0, 7.0)
    text = render([row(1000, 20.0), row(100_000, 25.0)])
    assert text.splitlines()[-1] == "admission p99 100k/1k ratio: 1.25"
    assert "| 100,000 |" in text


def test_a_tiny_run_seeds_the_store_and_measures_a_real_daemon(
    demo_models: tuple[Path, Path], tmp_path: Path
) -> None:
    printed: list[str] = []
    report = tmp_path / "rows.json"
    argv = [
        "--sizes",
        "50",
        "--submissions",
        "10",
        "--warmup",
        "1",
        "--reads",
        "5",
        "--models-dir",
        str(demo_models[0].parent),
    ]
    [measured] = main([*argv, "--json", str(report)], out=printed.append)
    assert measured.jobs == 50 and measured.seed_s > 0 and measured.start_s > 0
    assert 0 < measured.submit_p50 <= measured.submit_p99
    assert 0 < measured.list_p50 <= measured.list_p99 and 0 < measured.stats_p50 <= measured.stats_p99
    assert json.loads(report.read_text())[0]["jobs"] == 50
    assert printed[-1].splitlines()[-1] == "admission p99 50/50 ratio: 1.00"


def test_seeding_goes_through_the_store_and_its_indexes(tmp_path: Path) -> None:
    seed(tmp_path / "store", 250)
    store = Store(StoreConfig(path=tmp_path / "store"))
    try:
        assert len(store.jobs()) == 250
        counts = store.owner_counts(BENCH_USER.owner_key)
        assert counts.distill_jobs + counts.generate_jobs == 3 and counts.active == 0  # jobs 0, 100 and 200
        assert [job.owner for job in store.list_jobs(BENCH_USER.owner_key, None, False, 10)] == [BENCH_USER] * 3
    finally:
        store.close()
