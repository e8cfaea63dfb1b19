"""Daily quotas over the real gRPC API, on a clock the test moves: refusals say when the day starts again,
/stats shows what is used and left, and the count starts again at UTC midnight."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from daemon.quota import DailyQuota, check, next_reset, usage
from daemon.settings import load_settings
from frontends.render import stats_text
from tests.rpc.test_manage_rpc import DEFAULTS, distill, fake_jobs, refused, serve
from tests.rpc.test_service_rpc import ALICE, BOB, Api, start_api

# 2026-03-10 22:30 UTC: an hour and a half before the day boundary.
EVENING = dt.datetime(2026, 3, 10, 22, 30, tzinfo=dt.UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Api, Clock]]:
    flags = ("--daily-images", "3", "--daily-distills", "1")
    running, stop = await start_api(tmp_path, *flags, pipeline=fake_jobs, generation=DEFAULTS)
    clock = Clock(EVENING)
    running.core.clock = clock
    yield running, clock
    await stop()  # type: ignore[misc]


async def test_quotas_refuse_with_the_reset_time_and_start_again_at_midnight(
    api: tuple[Api, Clock], portrait_png: bytes
) -> None:
    running, clock = api
    name = await distill(running, ALICE, portrait_png)
    error = await refused(running.client.submit(running.client.spec(ALICE, upload=True), portrait_png))
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (
        str(error)
        == "You have distilled your 1 LoRAs for today; the count starts again at 00:00 UTC, in 1 h 30 min."
    )

    await serve(running, ALICE, f"a cat --lora {name} --n 2")
    error = await refused(serve(running, ALICE, "a cat --n 2"))
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "more than your 3 images a day (1 left today)" in str(error) and "in 1 h 30 min" in str(error)
    await serve(running, ALICE, "a cat")  # exactly the one left
    stats = await running.client.user_stats(ALICE)
    assert (stats.images_today, stats.images_left_today, stats.distills_today, stats.distills_left_today) == (
        3,
        0,
        1,
        0,
    )
    assert stats.quota_resets_at == next_reset(EVENING)
    assert "Today: 3 (0 left) images, 1 (0 left) LoRAs distilled" in stats_text(stats)
    # Bob's day is his own.
    assert (await running.client.user_stats(BOB)).images_left_today == 3

    clock.now = next_reset(EVENING) - 1
    assert (await refused(serve(running, ALICE, "a cat"))).code == grpc.StatusCode.RESOURCE_EXHAUSTED
    clock.now = next_reset(EVENING)  # midnight: a new day
    await serve(running, ALICE, "a cat --n 3")
    await distill(running, ALICE, portrait_png)
    stats = await running.client.user_stats(ALICE)
    assert (stats.images_today, stats.images_left_today, stats.distills_left_today) == (3, 0, 0)


def test_no_quota_is_the_default_and_leaves_nothing_counted_against_anyone() -> None:
    settings = load_settings([], environ={})
    assert settings.quota == DailyQuota()
    use = usage([], settings.quota, EVENING)
    assert use.images_left is None and use.distills_left is None
    check(use, EVENING, images=1000, distills=1000)  # nothing to refuse
    assert load_settings(["--daily-images", "5"], environ={}).quota == DailyQuota(images=5)
    with pytest.raises(SystemExit, match="0 \\(no limit\\) or more"):
        load_settings(["--daily-distills", "-1"], environ={})
