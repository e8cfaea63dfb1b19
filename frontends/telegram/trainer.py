"""The seams between the bot and what it talks to besides Telegram: the daemon, and a source of preview images.

``frontends.client.DaemonClient`` satisfies ``Trainer`` as is; tests put a fake beside it. Keeping the bot to
this small surface is what lets every handler be tested without a daemon.
"""

from __future__ import annotations

from typing import Protocol

from distillery.v1 import distillery_pb2 as pb

from frontends.client import DaemonApi
from frontends.render import JobView

PLATFORM = "telegram"


class Trainer(DaemonApi, Protocol):
    """The daemon as the bot uses it: the shared client surface, and closing it when the bot stops."""

    async def close(self) -> None: ...


class PreviewSource(Protocol):
    """Where a finished job's preview picture comes from; None when there is none."""

    async def preview(self, view: JobView, owner: pb.Requester) -> bytes | None: ...


class DaemonPreview:
    """The first picture the daemon drew with a new LoRA: a finished distill job's output image, if it has one."""

    def __init__(self, trainer: DaemonApi) -> None:
        self.trainer = trainer

    async def preview(self, view: JobView, owner: pb.Requester) -> bytes | None:
        if view.generating or not view.images:
            return None
        return await self.trainer.get_image(view.images[0].name, owner)


def requester(user_id: int | str = "", chat_id: int | str = "") -> pb.Requester:
    """A Telegram requester; with no user it is the platform itself (allowed to re-attach to any bot job)."""
    return pb.Requester(platform=PLATFORM, workspace="", user=str(user_id), chat=str(chat_id))
