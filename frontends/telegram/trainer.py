"""The seams between the bot and what it talks to besides Telegram: the daemon, and a source of preview images.

``frontends.client.DaemonClient`` satisfies ``Trainer`` as is; tests put a fake beside it. Keeping the bot to
this small surface is what lets every handler be tested without a daemon.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from distillery.v1 import distillery_pb2 as pb

from frontends.render import JobView

PLATFORM = "telegram"


class Trainer(Protocol):
    """The part of the daemon API the bot uses (see frontends/client.py for what each call does)."""

    async def submit(self, spec: pb.DistillSpec, image: bytes | None = None) -> pb.SubmitReply: ...

    def watch(self, job_id: str, requester: pb.Requester, after_seq: int = 0) -> AsyncIterator[pb.JobEvent]: ...

    async def list_jobs(
        self, requester: pb.Requester, active_only: bool = False, whole_platform: bool = False, limit: int = 0
    ) -> list[pb.Job]: ...

    async def cancel(self, job_id: str, requester: pb.Requester) -> pb.Job: ...

    async def set_client_state(self, job_id: str, requester: pb.Requester, state: bytes) -> pb.Job: ...

    def generate(
        self, spec: pb.GenerateSpec, requester: pb.Requester, idempotency_key: str = ""
    ) -> AsyncIterator[pb.JobEvent]: ...

    async def get_job(self, job_id: str, requester: pb.Requester) -> pb.Job: ...

    async def get_image(self, name: str, requester: pb.Requester) -> bytes: ...

    async def image_info(self, name: str, requester: pb.Requester) -> pb.ImageInfo: ...

    async def get_lora(self, name: str, requester: pb.Requester) -> pb.Lora: ...

    async def list_loras(self, requester: pb.Requester, include_public: bool = True) -> list[pb.Lora]: ...

    async def update_lora(
        self,
        name: str,
        requester: pb.Requester,
        *,
        public: bool | None = None,
        description: str | None = None,
        show_image: bool | None = None,
    ) -> pb.Lora: ...

    async def delete_lora(self, name: str, requester: pb.Requester) -> pb.DeleteLoraReply: ...

    async def download_lora(self, name: str, requester: pb.Requester) -> bytes: ...

    async def user_stats(self, requester: pb.Requester) -> pb.UserStats: ...

    async def close(self) -> None: ...


class PreviewSource(Protocol):
    """Where a finished job's preview picture comes from; None when there is none."""

    async def preview(self, view: JobView, owner: pb.Requester) -> bytes | None: ...


class NoPreview:
    """The daemon renders no previews yet; when it does, a PreviewSource that asks it for one goes here."""

    async def preview(self, view: JobView, owner: pb.Requester) -> bytes | None:
        return None


def requester(user_id: int | str = "", chat_id: int | str = "") -> pb.Requester:
    """A Telegram requester; with no user it is the platform itself (allowed to re-attach to any bot job)."""
    return pb.Requester(platform=PLATFORM, workspace="", user=str(user_id), chat=str(chat_id))
