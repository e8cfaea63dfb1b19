"""Who the Slack bot is when it speaks to the daemon: how a Slack user becomes a Requester."""

from __future__ import annotations

from distillery.v1 import distillery_pb2 as pb

PLATFORM = "slack"


def slack_requester(team: str, user: str, channel: str) -> pb.Requester:
    """A Slack user asking from a channel; (platform, workspace, user) owns the job."""
    return pb.Requester(platform=PLATFORM, workspace=team, user=user, chat=channel)
