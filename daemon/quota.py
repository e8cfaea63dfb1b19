"""Daily quotas per user: how many images /serve may make and how many LoRAs /distill may train in a day.

Both are off (0) unless the operator sets them (``--daily-images``, ``--daily-distills``). A day is a UTC
calendar day; what counts is every job the user had accepted that day, except the ones that failed or were
cancelled (a failure is the distillery's fault, not the user's spending). The clock is passed in, so tests move
it across midnight instead of waiting for it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from daemon.errors import Exhausted
from daemon.jobs.model import Job, JobKind, JobState

_SPENT = (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED)


@dataclass(frozen=True)
class DailyQuota:
    """The operator's limits; 0 is no limit."""

    images: int = 0
    distills: int = 0


@dataclass(frozen=True)
class QuotaUse:
    """One user's day so far; ``*_left`` is None where there is no limit."""

    images_used: int
    images_left: int | None
    distills_used: int
    distills_left: int | None
    resets_at: float  # Unix time of the next UTC midnight


def next_reset(now: float) -> float:
    """The Unix time of the UTC midnight after ``now``."""
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    midnight = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC)
    return midnight.timestamp()


def usage(jobs: Iterable[Job], quota: DailyQuota, now: float) -> QuotaUse:
    """What ``jobs`` (one user's) spent today, and what is left of ``quota``."""
    resets_at = next_reset(now)
    since = resets_at - 86_400
    today = [job for job in jobs if since <= job.created_at < resets_at and job.state in _SPENT]
    images = sum(job.generate.count for job in today if job.kind == JobKind.GENERATE and job.generate)
    distills = sum(1 for job in today if job.kind == JobKind.DISTILL)

    def left(limit: int, used: int) -> int | None:
        return max(limit - used, 0) if limit else None

    return QuotaUse(images, left(quota.images, images), distills, left(quota.distills, distills), resets_at)


def _when(resets_at: float, now: float) -> str:
    minutes = max(int((resets_at - now) // 60), 1)
    hours, minutes = divmod(minutes, 60)
    wait = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return f"at 00:00 UTC, in {wait}"


def check(use: QuotaUse, now: float, images: int = 0, distills: int = 0) -> None:
    """Raise Exhausted, saying when the day starts again, if ``images`` or ``distills`` more would overrun."""
    if images and use.images_left is not None and images > use.images_left:
        limit = use.images_used + use.images_left
        raise Exhausted(
            f"That is more than your {limit} images a day ({use.images_left} left today); "
            f"the count starts again {_when(use.resets_at, now)}."
        )
    if distills and use.distills_left is not None and distills > use.distills_left:
        limit = use.distills_used + use.distills_left
        raise Exhausted(
            f"You have distilled your {limit} LoRAs for today; the count starts again {_when(use.resets_at, now)}."
        )
