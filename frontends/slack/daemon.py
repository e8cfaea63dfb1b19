"""The slice of the daemon client the Slack bot uses, as a Protocol: the real DaemonClient fits it, and so
does the fake the tests put behind it.

It also holds the few conventions every part of the bot shares when it speaks to the daemon: who the bot is
when it acts for the whole platform, how a Slack user becomes a Requester, and the re-attach note kept on
each job.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from distillery.v1 import distillery_pb2 as pb

PLATFORM = "slack"


def platform_requester() -> pb.Requester:
    """The bot itself (no user): may watch, list and annotate every Slack job, as a re-attaching frontend must."""
    return pb.Requester(platform=PLATFORM)


def slack_requester(team: str, user: str, channel: str) -> pb.Requester:
    """A Slack user asking from a channel; (platform, workspace, user) owns the job."""
    return pb.Requester(platform=PLATFORM, workspace=team, user=user, chat=channel)


class Daemon(Protocol):
    """What the bot calls; every failure is a frontends.client.DaemonError with a sentence for the user."""

    async def submit(self, spec: pb.DistillSpec, image: bytes | None = None) -> pb.SubmitReply: ...

    def watch(self, job_id: str, requester: pb.Requester, after_seq: int = 0) -> AsyncIterator[pb.JobEvent]: ...

    async def get_job(self, job_id: str, requester: pb.Requester) -> pb.Job: ...

    async def list_jobs(
        self, requester: pb.Requester, active_only: bool = False, whole_platform: bool = False, limit: int = 0
    ) -> list[pb.Job]: ...

    async def cancel(self, job_id: str, requester: pb.Requester) -> pb.Job: ...

    async def set_client_state(self, job_id: str, requester: pb.Requester, state: bytes) -> pb.Job: ...

    async def get_image(self, name: str, requester: pb.Requester) -> bytes: ...

    def generate(
        self, spec: pb.GenerateSpec, requester: pb.Requester, idempotency_key: str = ""
    ) -> AsyncIterator[pb.JobEvent]: ...

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


@dataclass(frozen=True)
class ClientState:
    """The bot's note on a job: where its progress message is and the last event it shows.

    Kept in the daemon (Job.client_state) so a restarted bot finds every message it must keep updating
    without any state of its own. ``done`` marks a job whose final message is already shown; ``images``
    counts a generation's pictures already uploaded, so a restart in the middle uploads none twice.
    """

    channel: str
    ts: str
    seq: int = 0
    done: bool = False
    images: int = 0

    def encode(self) -> bytes:
        """Compact JSON, far below the daemon's 4 KiB limit."""
        note: dict[str, object] = {"channel": self.channel, "ts": self.ts, "seq": self.seq}
        if self.done:
            note["done"] = True
        if self.images:
            note["images"] = self.images
        return json.dumps(note, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> ClientState | None:
        """The note on a job, or None when there is none or it is not ours (another version, garbage)."""
        if not data:
            return None
        try:
            note = json.loads(data)
            channel, ts = note["channel"], note["ts"]
            seq, done = int(note.get("seq", 0)), bool(note.get("done", False))
            images = int(note.get("images", 0))
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(channel, str) or not isinstance(ts, str) or not channel or not ts:
            return None
        return cls(channel=channel, ts=ts, seq=max(seq, 0), done=done, images=max(images, 0))
