"""The daemon as the Slack bot sees it: the shared client surface (frontends.client.DaemonApi), which the real
DaemonClient and the tests' fake both fit.

It also holds the few conventions every part of the bot shares when it speaks to the daemon: who the bot is
when it acts for the whole platform, how a Slack user becomes a Requester, and the re-attach note kept on
each job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from distillery.v1 import distillery_pb2 as pb

from frontends.client import DaemonApi

PLATFORM = "slack"


def platform_requester() -> pb.Requester:
    """The bot itself (no user): may watch, list and annotate every Slack job, as a re-attaching frontend must."""
    return pb.Requester(platform=PLATFORM)


def slack_requester(team: str, user: str, channel: str) -> pb.Requester:
    """A Slack user asking from a channel; (platform, workspace, user) owns the job."""
    return pb.Requester(platform=PLATFORM, workspace=team, user=user, chat=channel)


# What the bot calls; every failure is a frontends.client.DaemonError with a sentence for the user.
Daemon = DaemonApi


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
