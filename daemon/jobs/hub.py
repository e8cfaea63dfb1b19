"""Wakes the streams that follow a job when the worker thread records a new event.

Events are durable in the store before they are published here; the hub only says "look again", so a watcher
that misses a wake-up still reads everything from the store and never sees an event twice.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class EventHub:
    """Latest sequence number per job, and the watchers waiting for a newer one."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._latest: dict[str, int] = {}
        self._waiters: defaultdict[str, list[asyncio.Future[None]]] = defaultdict(list)

    def __len__(self) -> int:
        """Jobs the hub keeps anything for: unfinished ones that had events, and ones with watchers waiting."""
        return len(self._latest.keys() | self._waiters.keys())

    def publish(self, job_id: str, seq: int, final: bool = False) -> None:
        """Say that job_id has events up to seq (the last one when final); callable from any thread."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._wake, job_id, seq, final)

    def _wake(self, job_id: str, seq: int, final: bool) -> None:
        if final:
            # Watchers read the final event from the store; nothing about a finished job stays here.
            self._latest.pop(job_id, None)
        else:
            self._latest[job_id] = max(seq, self._latest.get(job_id, 0))
        for waiter in self._waiters.pop(job_id, []):
            if not waiter.done():
                waiter.set_result(None)

    async def wait_beyond(self, job_id: str, seq: int, timeout: float) -> None:
        """Return once the job has an event after seq, or after timeout seconds (then the caller re-reads)."""
        if self._latest.get(job_id, 0) > seq:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters[job_id].append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(job_id)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[job_id]
