"""Messages that follow a job: paced writes per chat, the newest text wins, rate limits honoured.

Chat platforms allow about one write a second per chat (Telegram fewer in groups) and answer a burst with a
rate limit. Training reports progress many times a second, so a ``LiveMessage`` never queues texts: it keeps
only the newest ``Look`` it was asked to show and a task that, whenever the chat's next slot comes, shows that
look if it differs from what is on screen. The ``Pacer`` hands out the slots, ``interval(chat)`` apart, and
holds a chat (or, for a bot-wide limit, every chat) until a ``RetryLater`` has passed. A message that is gone
(deleted by a user, the bot removed) stops being edited; network failures are retried at the next slot a few
times. Clock and sleep are injected so tests run minutes of pacing in virtual time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from frontends.platform import Look, MessageGone, Place, Platform, Refused, RetryLater, Unreachable

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
# Network failures in a row before a look is given up (a later show() tries again): long enough to ride out a
# short outage without spinning forever.
NETWORK_ATTEMPTS = 8
# Chats remembered before the ones whose slots are long past are forgotten.
_REMEMBERED = 4096


class Pacer:
    """Hands out write slots per chat, ``interval(chat)`` apart, and holds chats during a rate limit."""

    def __init__(
        self, interval: Callable[[str], float], clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self._next: dict[str, float] = {}
        self._held: dict[str, float] = {}
        self._held_everywhere = 0.0

    def _ready(self, chat: str) -> float:
        return max(self._next.get(chat, 0.0), self._held.get(chat, 0.0), self._held_everywhere)

    async def turn(self, chat: str) -> None:
        """Wait for this chat's next slot and take it."""
        while True:
            now = self.clock()
            ready = self._ready(chat)
            if ready <= now:
                self._next[chat] = now + self.interval(chat)
                self._forget_idle(now)
                return
            # Look again after waking: another writer may have taken the slot, or a rate limit moved it later.
            await self.sleep(ready - now)

    def note_sent(self, chat: str) -> None:
        """A message was just sent to this chat: it counts against the chat's pace like an edit."""
        self._next[chat] = max(self._next.get(chat, 0.0), self.clock() + self.interval(chat))

    def hold(self, chat: str, seconds: float, everywhere: bool = False) -> None:
        """The platform said to wait: no slot for this chat (or any chat) until ``seconds`` have passed."""
        until = self.clock() + seconds
        if everywhere:
            self._held_everywhere = max(self._held_everywhere, until)
        else:
            self._held[chat] = max(self._held.get(chat, 0.0), until)
        log.warning("rate limited in %s: waiting %.1f s", "every chat" if everywhere else chat, seconds)

    async def call(self, chat: str, send: Callable[[], Awaitable[T]], attempts: int = 3, paced: bool = False) -> T:
        """One platform call, waiting out rate limits (a few times) instead of failing; ``paced`` takes the
        chat's slot before the first attempt too (replies to a person go at once, progress writes wait)."""
        for attempt in range(attempts):
            if paced or attempt:
                await self.turn(chat)
            try:
                return await send()
            except RetryLater as error:
                if attempt == attempts - 1:
                    raise
                self.hold(chat, error.seconds, error.everywhere)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _forget_idle(self, now: float) -> None:
        if len(self._next) > _REMEMBERED:
            for table in (self._next, self._held):
                for chat in [key for key, until in table.items() if until < now]:
                    del table[chat]


class LiveMessage:
    """One posted message that shows the newest look it was given, at the chat's pace; see the module doc.

    ``on_shown(seq)`` runs after each look that reached the screen, with the ``seq`` given to ``show`` (the
    job's event number), so the caller can record what the message shows.
    """

    def __init__(
        self,
        platform: Platform,
        pacer: Pacer,
        place: Place,
        shown: Look | None = None,
        on_shown: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.platform = platform
        self.pacer = pacer
        self.place = place
        self.lost = False  # the message is gone: nothing left to edit
        self.edits = 0
        self._shown = shown
        self._wanted: tuple[Look, int] | None = None
        self._on_shown = on_shown
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._failures = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def shown(self) -> Look | None:
        return self._shown

    def show(self, look: Look, seq: int = 0) -> None:
        """Make ``look`` the message's next version; returns at once, and a newer call before the slot wins."""
        if self.lost or (look.same_look(self._shown) and self._idle.is_set()):
            return
        self._wanted = (look, seq)
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"live-{self.place.chat}-{self.place.message}")

    async def flush(self) -> None:
        """Until the newest look is on screen, given up, or the message is gone."""
        if self._task is not None and not self._task.done():
            await self._idle.wait()

    async def finish(self, look: Look, seq: int = 0) -> None:
        """Show a last look and return once it is on screen or cannot be; the message's task then ends."""
        self.show(look, seq)
        await self.flush()
        await self.close()

    async def close(self) -> None:
        """Stop editing now; whatever was not shown stays unshown."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while not self.lost and self._wanted is not None:
                    await self.pacer.turn(self.place.chat)
                    # Take the newest look only now: what arrived while waiting for the slot replaced it.
                    wanted, self._wanted = self._wanted, None
                    if wanted is None or wanted[0].same_look(self._shown):
                        continue
                    if not await self._write(*wanted) and self._wanted is None:
                        self._wanted = wanted  # again at the next slot, unless something newer came
                self._idle.set()
        finally:
            # Whatever ends this task (close, a bug), nobody may wait forever in flush().
            self._idle.set()

    async def _write(self, look: Look, seq: int) -> bool:
        """True when the look is done with (shown, refused or given up); False to try it again."""
        try:
            await self.platform.edit(self.place, look)
        except RetryLater as error:
            self.pacer.hold(self.place.chat, error.seconds, error.everywhere)
            return False
        except MessageGone as error:
            log.info("message %s in %s is gone: %s", self.place.message, self.place.chat, error)
            self.lost = True
            return True
        except Unreachable as error:
            self._failures += 1
            log.info("edit in %s failed (%s), %d in a row", self.place.chat, error, self._failures)
            if self._failures < NETWORK_ATTEMPTS:
                return False
            log.warning("giving up an edit of %s in %s after network errors", self.place.message, self.place.chat)
            self._failures = 0
            return True
        except Refused as error:
            # This look will not work; the next one may.
            log.warning("the platform refused an edit in %s: %s", self.place.chat, error)
        self._failures = 0
        self._shown = look
        self.edits += 1
        if self._on_shown is not None:
            try:
                await self._on_shown(seq)
            except Exception:
                # The edit itself succeeded; failing bookkeeping must not stop later edits.
                log.exception("recording edit %d of %s in %s failed", seq, self.place.message, self.place.chat)
        return True
