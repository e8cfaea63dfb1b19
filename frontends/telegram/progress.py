"""One live progress message per job, edited no faster than Telegram allows.

Job events arrive in bursts (a training step every few milliseconds on a fast GPU) while Telegram allows about
one edit a second per private chat and fewer in groups. So a LiveMessage never queues texts: it keeps only the
newest text it was asked to show and a task that, whenever the chat's next edit slot comes, shows that text if
it differs from what is on screen. A RetryAfter from Telegram pauses every edit of the bot until it passes
(flood control is per bot, not per message). The clock and sleep are injected so tests run in virtual time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import logging
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
# Telegram's longest message; a longer text is cut rather than refused.
MAX_TEXT = 4096
# Network failures in a row before a text is given up (a later show() tries again): about 20 s in a private
# chat, a minute in a group, long enough to ride out a short outage without spinning forever.
_NETWORK_ATTEMPTS = 20


def retry_after_seconds(error: RetryAfter) -> float:
    """Seconds to wait from a RetryAfter, whether PTB gives them as int or timedelta (PTB_TIMEDELTA)."""
    with warnings.catch_warnings():
        # PTB 22 warns that the int form will become a timedelta; both forms are handled here.
        warnings.simplefilter("ignore")
        value = error.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


def is_group(chat_id: int) -> bool:
    """Telegram gives groups, supergroups and channels negative ids and private chats positive ones."""
    return chat_id < 0


class Pacer:
    """Hands out edit slots per chat (private >= 1 s apart, groups >= 3 s) and pauses all on RetryAfter."""

    def __init__(
        self,
        private_interval: float = 1.0,
        group_interval: float = 3.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.private_interval = private_interval
        self.group_interval = group_interval
        self.clock = clock
        self.sleep = sleep
        self._next_slot: dict[int, float] = {}
        self._paused_until = 0.0

    def interval(self, chat_id: int) -> float:
        return self.group_interval if is_group(chat_id) else self.private_interval

    async def turn(self, chat_id: int) -> None:
        """Wait for this chat's next edit slot and take it."""
        now = self.clock()
        slot = max(now, self._next_slot.get(chat_id, 0.0), self._paused_until)
        self._next_slot[chat_id] = slot + self.interval(chat_id)
        if len(self._next_slot) > 4096:
            # Forget chats whose slots are in the past; they would get "now" anyway.
            self._next_slot = {chat: due for chat, due in self._next_slot.items() if due > now}
        if slot > now:
            await self.sleep(slot - now)
        # A RetryAfter may have come in for another message while this one slept.
        while (wait := self._paused_until - self.clock()) > 0:
            await self.sleep(wait)

    def note_sent(self, chat_id: int) -> None:
        """A message was just sent to this chat: it counts against the chat's pace like an edit."""
        now = self.clock()
        self._next_slot[chat_id] = max(self._next_slot.get(chat_id, 0.0), now + self.interval(chat_id))

    def pause(self, seconds: float) -> None:
        """Telegram said RetryAfter: no edit for anyone until it passes."""
        self._paused_until = max(self._paused_until, self.clock() + seconds)
        log.warning("Telegram flood control: pausing edits for %.1f s", seconds)

    async def call(self, chat_id: int, send: Callable[[], Awaitable[T]], attempts: int = 3) -> T:
        """Run one Bot API call, waiting out RetryAfter (a few times) instead of failing."""
        for attempt in range(attempts):
            try:
                return await send()
            except RetryAfter as error:
                if attempt == attempts - 1:
                    raise
                self.pause(retry_after_seconds(error))
                await self.turn(chat_id)
        raise AssertionError("unreachable")


# The one Bot API call a LiveMessage makes: (chat_id, message_id, text, with Cancel button). bot.py passes a
# wrapper around Bot.edit_message_text; tests pass a recorder.
Editor = Callable[[int, int, str, bool], Awaitable[None]]


@dataclass(frozen=True)
class Shown:
    """What a message displays: its text, whether the Cancel button is under it, and the event it reflects."""

    text: str
    keyboard: bool
    seq: int = 0

    def same_look(self, other: Shown | None) -> bool:
        return other is not None and self.text == other.text and self.keyboard == other.keyboard


class LiveMessage:
    """A message that shows the newest text it was given, edited at the chat's pace; see the module doc."""

    def __init__(
        self,
        chat_id: int,
        message_id: int,
        editor: Editor,
        pacer: Pacer,
        shown: Shown | None = None,
        on_shown: Callable[[Shown], Awaitable[None]] | None = None,
    ) -> None:
        self.chat_id = chat_id
        self.message_id = message_id
        self.lost = False  # the message is gone (deleted by the user): nothing left to edit
        self._editor = editor
        self._pacer = pacer
        self._shown = shown
        self._wanted = shown
        self._on_shown = on_shown
        self._changed = asyncio.Event()
        self._closing = False
        self._failures = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def shown(self) -> Shown | None:
        return self._shown

    def show(self, text: str, keyboard: bool, seq: int = 0) -> None:
        """Ask for this text; returns at once, and a newer call before the next slot replaces it."""
        self._wanted = Shown(text[:MAX_TEXT], keyboard, seq)
        self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"live-message-{self.chat_id}-{self.message_id}")

    async def finish(self, text: str, seq: int = 0) -> None:
        """Show a last text (without the button) and return once it is on screen or cannot be."""
        self.show(text, keyboard=False, seq=seq)
        self._closing = True
        self._changed.set()
        if self._task is not None:
            await self._task

    async def close(self) -> None:
        """Stop editing now (the bot is shutting down); whatever was not shown stays unshown."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            while not self.lost and self._wanted is not None and not self._wanted.same_look(self._shown):
                await self._pacer.turn(self.chat_id)
                wanted = self._wanted  # the newest text by the time the slot came
                if wanted.same_look(self._shown):
                    break
                await self._edit(wanted)
            if self._closing:
                return

    async def _edit(self, wanted: Shown) -> None:
        try:
            await self._editor(self.chat_id, self.message_id, wanted.text, wanted.keyboard)
        except RetryAfter as error:
            self._pacer.pause(retry_after_seconds(error))
            return  # the loop takes a new slot (after the pause) and shows the newest text then
        except BadRequest as error:
            message = error.message.lower()
            if "not found" in message or "can't be edited" in message:
                log.info("progress message %s in chat %s is gone: %s", self.message_id, self.chat_id, error)
                self.lost = True
                return
            if "not modified" not in message:
                # This text will not work (and "not modified" means it is already on screen): move on.
                log.warning("Telegram refused an edit in chat %s: %s", self.chat_id, error)
        except Forbidden as error:
            # Blocked by the user or removed from the group: no edit will ever work again.
            log.info("cannot edit in chat %s any more: %s", self.chat_id, error)
            self.lost = True
            return
        except NetworkError as error:  # includes TimedOut
            self._failures += 1
            log.info("edit in chat %s failed (%s), %d in a row", self.chat_id, error, self._failures)
            if self._failures < _NETWORK_ATTEMPTS:
                return  # not shown: the loop tries again at the next slot
        except TelegramError as error:
            log.warning("Telegram refused an edit in chat %s: %s", self.chat_id, error)
        self._failures = 0
        self._shown = wanted
        if self._on_shown is not None:
            await self._on_shown(wanted)
