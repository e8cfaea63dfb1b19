"""Following a job through daemon restarts: the retry rules both bots share.

A job lives in the daemon, never in a stream. A frontend folds the job's events into a ``JobView`` and, when the
stream breaks (the daemon restarted, a socket hiccup), watches again from the last event it applied after a
pause that grows with each failure in a row. Codes that waiting cannot heal end the following at once. What the
user sees meanwhile (a note after a long outage, a "reconnecting" line) is each bot's own ``on_break``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from distillery.v1 import distillery_pb2 as pb

from frontends.client import DaemonError
from frontends.render import JobView

log = logging.getLogger(__name__)
T = TypeVar("T")

# Codes after which asking again cannot help: the job is gone, or this frontend may not see it.
PERMANENT = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)
# Seconds between attempts while the daemon is away, the last one repeating: a restart takes a few seconds,
# a reboot a minute.
BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)

Sleep = Callable[[float], Awaitable[None]]
# The job's events after a sequence number (a Watch call).
Watch = Callable[[int], AsyncIterator[pb.JobEvent]]
# Told of each break before the pause: the error, or None when the stream ended before the job did.
OnBreak = Callable[[DaemonError | None], None]


def pause(failures: int, backoff: Sequence[float] = BACKOFF) -> float:
    """The pause after this many failures in a row (0 for the first)."""
    return backoff[min(failures, len(backoff) - 1)]


async def follow_job(
    view: JobView,
    watch: Watch,
    *,
    on_event: Callable[[pb.JobEvent], None],
    on_break: OnBreak,
    sleep: Sleep,
    backoff: Sequence[float] = BACKOFF,
    first: AsyncIterator[pb.JobEvent] | None = None,
) -> str:
    """Apply the job's events to view until the final one; returns "" then, or why it cannot be followed.

    ``first`` is a stream the caller already has (Distill and Generate answer with their job's events); it is
    read before any Watch. A view that is already finished is still watched once from its last event, so a job
    that ended while nobody followed it delivers its remaining events, the final one with its results.
    """
    failures = 0
    while True:
        events, first = first, None
        try:
            async for event in events if events is not None else watch(view.last_seq):
                failures = 0
                view.apply(event)
                on_event(event)
                if event.WhichOneof("detail") == "finished":
                    return ""
            if view.finished:
                return ""
            log.info("job %s: the event stream ended before the job; watching again", view.job_id)
            on_break(None)
        except DaemonError as error:
            if error.code in PERMANENT:
                log.warning("job %s: cannot follow it any more: %s", view.job_id, error.message)
                return error.message or error.code.name
            log.info(
                "job %s: watch failed (%s); retrying in %.1f s",
                view.job_id,
                error.code.name,
                pause(failures, backoff),
            )
            on_break(error)
        await sleep(pause(failures, backoff))
        failures += 1


async def when_answered(call: Callable[[], Awaitable[T]], what: str, sleep: Sleep) -> T:
    """call's result, asked again with the backoff while the daemon is away; a permanent error is raised."""
    failures = 0
    while True:
        try:
            return await call()
        except DaemonError as error:
            if error.code in PERMANENT:
                raise
            log.warning("cannot %s yet (%s); retrying in %.1f s", what, error.code.name, pause(failures))
        await sleep(pause(failures))
        failures += 1
