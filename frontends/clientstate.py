"""The note a frontend keeps on each job it follows (``Job.client_state``), the same for every platform.

It is all a restarted bot needs to pick a job up again, so bots keep no state of their own: which bot instance
posted the job's message (``bot``: a Telegram bot id; "" where one app serves the platform), where the message
is (``chat`` and ``message`` in the platform's ids), the last event it shows (``seq``), how many results
(pictures, files) were already delivered (``delivered``, so a restart never sends one twice), and whether the
job is completely done with (``done``). Compact JSON, far below the daemon's 4 KiB cap.

Notes written before this record existed are read too: Telegram's ``bot``/``chat``/``message`` as numbers and
Slack's ``channel``/``ts``/``images``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ClientState:
    """Where a job's message is, what it shows and what was delivered; see the module doc."""

    chat: str
    message: str
    seq: int = 0
    done: bool = False
    delivered: int = 0
    bot: str = ""

    def encode(self) -> bytes:
        note: dict[str, object] = {"chat": self.chat, "message": self.message, "seq": self.seq}
        if self.bot:
            note["bot"] = self.bot
        if self.done:
            note["done"] = True
        if self.delivered:
            note["delivered"] = self.delivered
        return json.dumps(note, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> ClientState | None:
        """The note, or None when there is none or it is not a frontend's note (garbage, another format)."""
        if not data:
            return None
        try:
            note = json.loads(data)
            chat = _id(note.get("chat", note.get("channel")))
            message = _id(note.get("message", note.get("ts")))
            bot = _id(note.get("bot", "")) if note.get("bot") else ""
            seq = int(note.get("seq", 0))
            delivered = int(note.get("delivered", note.get("images", 0)))
            done = bool(note.get("done", False))
        except (ValueError, TypeError, AttributeError):
            return None
        if not chat or not message:
            return None
        return cls(chat=chat, message=message, seq=max(seq, 0), done=done, delivered=max(delivered, 0), bot=bot)

    def shown(self, seq: int) -> ClientState:
        """The note once the message shows event ``seq``."""
        return replace(self, seq=max(seq, self.seq))

    def delivering(self, count: int) -> ClientState:
        """The note once ``count`` results are delivered."""
        return replace(self, delivered=max(count, self.delivered))

    def finished(self, seq: int) -> ClientState:
        """The note of a job whose message and results are all done."""
        return replace(self, seq=max(seq, self.seq), done=True)


def _id(value: Any) -> str:
    """A platform id as a string: ids are strings (Slack) or integers (Telegram), never anything else."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"not an id: {value!r}")
    return str(value)
