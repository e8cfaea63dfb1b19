"""Keeping a job message up to date within Slack's rate limits.

Slack allows about one message write per second per channel and answers 429 with ``Retry-After`` beyond that.
Training emits a progress event per step, far faster, so a message is never written once per event: a
LiveMessage remembers only the newest content and writes it when the channel's turn comes, skipping versions
that were overtaken and content that did not change. The ChannelPacer hands out those turns, at least
``interval`` apart per channel and never before a 429's ``Retry-After`` has passed. Clock and sleep are
injected so tests can run minutes of pacing in milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from frontends.slack.blocks import Content

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Network failures (not 429s) are retried this many times in a row before an update is given up.
MAX_NETWORK_RETRIES = 5
MAX_BACKOFF_S = 30.0


def retry_after(error: SlackApiError) -> float | None:
    """Seconds to wait when Slack rate-limited the call (HTTP 429), else None."""
    response = error.response
    if response is None or getattr(response, "status_code", None) != 429:
        return None
    headers: Mapping[str, Any] = getattr(response, "headers", None) or {}
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            try:
                return max(float(value), 0.0)
            except (TypeError, ValueError):
                break
    return 1.0


class ChannelPacer:
    """Turns to write to a channel: ``interval`` apart, and not before a rate limit's Retry-After ends."""

    def __init__(self, interval: float, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self._next: dict[str, float] = {}
        self._held: dict[str, float] = {}

    async def turn(self, channel: str) -> None:
        """Wait for this channel's next free moment and take it."""
        while True:
            now = self.clock()
            ready = max(self._next.get(channel, 0.0), self._held.get(channel, 0.0))
            if ready <= now:
                self._next[channel] = now + self.interval
                self._forget_idle(now)
                return
            # Re-check after waking: another writer may have taken the slot, or a 429 moved it later.
            await self.sleep(ready - now)

    def hold(self, channel: str, seconds: float) -> None:
        """Slack said to wait (Retry-After): no turn for this channel until then."""
        self._held[channel] = max(self._held.get(channel, 0.0), self.clock() + seconds)

    def _forget_idle(self, now: float) -> None:
        # Many channels over a long uptime: drop the ones whose slots are long past so the maps stay small.
        if len(self._next) > 1000:
            for table in (self._next, self._held):
                for channel in [key for key, until in table.items() if until < now]:
                    del table[channel]


async def paced_call(
    pacer: ChannelPacer, channel: str, call: Callable[[], Awaitable[AsyncSlackResponse]], attempts: int = 5
) -> AsyncSlackResponse:
    """Make one channel write in the channel's turn, waiting out 429s (up to ``attempts`` tries)."""
    for attempt in range(attempts):
        await pacer.turn(channel)
        try:
            return await call()
        except SlackApiError as error:
            wait = retry_after(error)
            if wait is None or attempt == attempts - 1:
                raise
            log.info("rate limited on %s; waiting %.1f s", channel, wait)
            pacer.hold(channel, wait)
    raise AssertionError("unreachable: the last attempt returns or raises")


class LiveMessage:
    """One posted message that follows a job: ``show`` never blocks, the newest content wins.

    ``on_shown(mark)`` runs after each successful edit with the mark given to ``show`` (the job's event
    sequence number), so the caller can record what the message shows.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        pacer: ChannelPacer,
        channel: str,
        ts: str,
        shown: Content | None = None,
        on_shown: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.client = client
        self.pacer = pacer
        self.channel = channel
        self.ts = ts
        self.shown = shown
        self.updates = 0
        self._on_shown = on_shown
        self._wanted: tuple[Content, int] | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._network_failures = 0

    def show(self, content: Content, mark: int = 0) -> None:
        """Make ``content`` the message's next version; written in the channel's turn unless overtaken."""
        if content == self.shown and self._idle.is_set():
            return
        self._wanted = (content, mark)
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"live-message-{self.channel}-{self.ts}")

    async def flush(self) -> None:
        """Wait until the newest content is written (or given up after repeated failures)."""
        if self._task is not None and not self._task.done():
            await self._idle.wait()

    async def close(self) -> None:
        """Stop writing; what was not written yet is dropped."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._wanted is not None:
                    await self.pacer.turn(self.channel)
                    # Take the newest version only now: what arrived while waiting for the turn replaces it.
                    wanted, self._wanted = self._wanted, None
                    if wanted is None or wanted[0] == self.shown:
                        continue
                    if not await self._write(*wanted) and self._wanted is None:
                        self._wanted = wanted  # retry it unless something newer arrived meanwhile
                self._idle.set()
        finally:
            # Whatever ends this task (close, a bug), nobody may wait forever in flush().
            self._idle.set()

    async def _write(self, content: Content, mark: int) -> bool:
        """True when the write is done with (written or given up); False to retry it."""
        try:
            await self.client.chat_update(
                channel=self.channel, ts=self.ts, text=content.text, blocks=content.blocks
            )
        except SlackApiError as error:
            wait = retry_after(error)
            if wait is not None:
                log.info("rate limited updating %s/%s; waiting %.1f s", self.channel, self.ts, wait)
                self.pacer.hold(self.channel, wait)
                return False
            # message_not_found, channel_not_found...: this version cannot be written; a later one may.
            log.warning("chat.update %s/%s failed: %s", self.channel, self.ts, error.response.get("error"))
            return True
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            self._network_failures += 1
            if self._network_failures >= MAX_NETWORK_RETRIES:
                log.warning("giving up an update of %s/%s after network errors: %s", self.channel, self.ts, error)
                self._network_failures = 0
                return True
            self.pacer.hold(self.channel, min(2.0**self._network_failures, MAX_BACKOFF_S))
            return False
        self._network_failures = 0
        self.shown = content
        self.updates += 1
        if self._on_shown is not None:
            try:
                await self._on_shown(mark)
            except Exception:
                # The edit itself succeeded; a failing bookkeeping callback must not stop later edits.
                log.exception("recording update %d of %s/%s failed", mark, self.channel, self.ts)
        return True
