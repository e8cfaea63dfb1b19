"""What a chat platform must offer the frontend core: send, edit and upload, and how it escapes user text.

The core (``frontends.live``, ``frontends.follow``, ``frontends.actions``) owns a message's life: what it says
and when it may say it, following a job, re-attaching after a restart, delivering results exactly once. A
platform adapter (Telegram, Slack, Discord) implements ``Platform`` and nothing more: how a ``Look`` becomes a
message with buttons on its platform, how files are uploaded next to a message, and which of its errors mean
"wait", "gone", "try again later" or "refused". Everything here is in the platform's own ids, as strings.

Errors: an adapter raises only these four from ``send``, ``edit`` and ``upload`` (its library's other errors
are mapped onto them), so the core's retry rules are the same everywhere::

    PlatformError
    ├── RetryLater    the platform's rate limit: wait ``seconds`` (``everywhere``: every chat of the bot waits)
    ├── MessageGone   the message or the chat can no longer be written to (deleted, bot removed, blocked)
    ├── Unreachable   a network failure: the same call may work in a moment
    └── Refused       the platform will not take this request (bad content); another may work

An adapter treats "nothing changed" answers (Telegram's "message is not modified") as success.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from distillery.v1 import distillery_pb2 as pb


class PlatformError(Exception):
    """A call to the chat platform failed; the subclass says what the core should do about it."""


class RetryLater(PlatformError):
    """Rate limited: nothing for ``seconds``; ``everywhere`` when the limit is the bot's, not one chat's."""

    def __init__(self, seconds: float, everywhere: bool = False) -> None:
        super().__init__(f"rate limited for {seconds:.1f} s")
        self.seconds = max(float(seconds), 0.0)
        self.everywhere = everywhere


class MessageGone(PlatformError):
    """The message (or the whole chat) cannot be written to any more."""


class Unreachable(PlatformError):
    """The platform did not answer (network, timeout, its 5xx); the call may be tried again."""


class Refused(PlatformError):
    """The platform refused this request for its content; retrying it as is cannot help."""


@dataclass(frozen=True)
class Place:
    """Where a message is: the chat (channel) and the message's id there (Telegram message id, Slack ts)."""

    chat: str
    message: str


@dataclass(frozen=True)
class Button:
    """A button under a message. ``action`` names the handler and ``value`` is its argument (a job id, a LoRA
    name); ``owner`` is the platform user id of the only person whose click counts (the adapter checks it, or
    leaves it to its handler); ``confirm`` is an "are you sure?" sentence where the platform has such a dialog.
    """

    label: str
    action: str
    value: str
    owner: str = ""
    confirm: str = ""
    danger: bool = False


@dataclass(frozen=True)
class Look:
    """One version of a message: its text (already plain, or escaped for the platform's markup by whoever built
    it), a passing ``note`` shown under it ("reconnecting..."), the buttons under it, and the platform user id
    of who asked for it (``owner``, shown where the platform mentions people)."""

    text: str
    buttons: tuple[Button, ...] = ()
    note: str = ""
    owner: str = ""

    def same_look(self, other: Look | None) -> bool:
        return other is not None and self == other


@dataclass(frozen=True)
class Attachment:
    """A file for the chat: a picture (``picture`` True: shown inline where the platform can) or a document.
    ``caption`` is a comment under it; ``title`` names it where the platform shows titles (else it captions)."""

    name: str
    data: bytes = field(repr=False)
    caption: str = ""
    picture: bool = True
    title: str = ""


class Platform(Protocol):
    """A chat platform as the frontend core uses it; see the module docstring for the errors it raises.

    ``send`` posts a new message in ``chat`` (as a reply to message ``reply_to`` where the platform has
    replies) and returns where it went: an adapter may fall back to the user's DM when the bot cannot post in
    the chat (Slack, Discord), which is why the Place comes back. ``edit`` replaces a message's look, buttons
    included (no buttons removes them). ``upload`` puts files next to a message: as replies to it (Telegram),
    in its thread (Slack), or as a follow-up in its channel (Discord); at most ``album`` of them per call.
    ``escape`` makes user text (captions, descriptions, prompts, file names) literal in the markup the adapter
    renders ``Look.text`` with; an adapter sending plain text returns it unchanged. ``interval`` is the least
    time between two writes to a chat.
    """

    @property
    def album(self) -> int: ...

    def interval(self, chat: str) -> float: ...

    def escape(self, text: str) -> str: ...

    async def send(
        self, chat: str, look: Look, reply_to: str = "", owner: pb.Requester | None = None
    ) -> Place: ...

    async def edit(self, place: Place, look: Look) -> None: ...

    async def upload(self, place: Place, files: Sequence[Attachment]) -> None: ...
