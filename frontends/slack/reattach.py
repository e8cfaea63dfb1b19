"""After a bot restart: find every Slack job that still needs its message updated, and follow it again.

The daemon keeps the bot's note on each job (channel, message ts, last sequence shown), so the bot asks the
daemon, not its own disk. Active jobs are resumed from their note; a job accepted just before the bot died,
before its message was posted, gets a new message in its channel; a job that finished while the bot was down
gets its final message, and a generation the pictures not uploaded yet. The daemon may itself be down when
the bot starts, so this retries until it answers.
"""

from __future__ import annotations

import asyncio
import logging

from distillery.v1 import distillery_pb2 as pb

from frontends.follow import when_answered
from frontends.render import FINISHED_STATES
from frontends.slack.daemon import ClientState, Daemon, platform_requester
from frontends.slack.jobs import Followers
from frontends.slack.progress import Sleep

log = logging.getLogger(__name__)

# Finished jobs are looked at only among the most recent ones: older ones were shown long ago.
RECENT_JOBS = 100


async def reattach_once(daemon: Daemon, followers: Followers) -> int:
    """Resume every Slack job whose message is not final yet; returns how many are followed now."""
    platform = platform_requester()
    active = await daemon.list_jobs(platform, active_only=True, whole_platform=True)
    recent = await daemon.list_jobs(platform, active_only=False, whole_platform=True, limit=RECENT_JOBS)
    count = 0
    seen: set[str] = set()
    for job in [*active, *recent]:
        if job.id in seen or followers.is_following(job.id):
            continue
        seen.add(job.id)
        if _pick_up(job, followers):
            count += 1
    return count


def _pick_up(job: pb.Job, followers: Followers) -> bool:
    state = ClientState.decode(job.client_state)
    finished = job.state in FINISHED_STATES
    if state is None:
        # Accepted, but the bot stopped before posting its message: post one now, if anyone still cares.
        if finished or not job.owner.chat:
            return False
        log.info("job %s: posting the message a previous run did not get to", job.id)
        followers.start(job)
        return True
    if state.done:
        return False
    # A generation whose final message is shown may still owe pictures (the bot stopped while uploading).
    owes_images = job.kind == pb.JOB_KIND_GENERATE and job.state == pb.JOB_STATE_SUCCEEDED
    if finished and state.seq >= job.last_seq and not owes_images:
        return False
    log.info("job %s: re-attaching to %s/%s after event %d", job.id, state.channel, state.ts, state.seq)
    followers.resume(job, state)
    return True


async def reattach(daemon: Daemon, followers: Followers, sleep: Sleep = asyncio.sleep) -> int:
    """reattach_once, asked again with the shared backoff while the daemon cannot answer."""
    count = await when_answered(lambda: reattach_once(daemon, followers), "re-attach to running jobs", sleep)
    if count:
        log.info("re-attached to %d job(s)", count)
    return count
