"""/serve: generate pictures with LoRAs, followed in one job message like a /distill; /upscale, the hires pass
over a picture made before, the same way.

The daemon's Generate call queues the job and streams its events; the first, ACCEPTED, names the job. The bot
reads only that one and closes the stream (closing does not cancel the job), then follows the job with the
same follower as a /distill: watch, paced edits, a note on the job for re-attaching after a restart. When the
job ends, the follower uploads the pictures into the message's thread (frontends.follow, platform.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from distillery.v1 import distillery_pb2 as pb

from frontends.client import DaemonApi, DaemonError
from frontends.commands import UPSCALE_USAGE, UsageError, parse_serve, parse_upscale
from frontends.follow import close_stream, generation_accepted
from frontends.render import JobView
from frontends.slack import blocks
from frontends.slack.library import NO_IMAGE_NAME, picture_of_message

if TYPE_CHECKING:
    from frontends.slack.app import SlackBot, SlashCommand

log = logging.getLogger(__name__)

STARTING = "Got it: starting your pictures. Their progress will appear in this channel."


async def start_generation(
    daemon: DaemonApi, spec: pb.GenerateSpec, requester: pb.Requester, idempotency_key: str
) -> tuple[pb.Job, int]:
    """Queue the generation; its job record (as the daemon filled it in) and queue position."""
    events = daemon.generate(spec, requester, idempotency_key)
    try:
        accepted, job = await generation_accepted(daemon, events, requester)
    finally:
        await close_stream(events)  # the follower watches the job; this stream is not needed
    return job, accepted.accepted.queue_position


async def on_serve(bot: SlackBot, ack: blocks.Ack, request: SlashCommand) -> None:
    """/serve <prompt> [options]: answered in the ack, within Slack's 3 s; the pictures follow in a thread."""
    await _generate(bot, ack, request, parse_serve, blocks.serve_usage_text())


async def on_upscale(bot: SlackBot, ack: blocks.Ack, request: SlashCommand) -> None:
    """/upscale <picture name> [options]: answered and followed as /serve."""
    await _generate(bot, ack, request, parse_upscale, UPSCALE_USAGE)


async def upscale_of_message(
    bot: SlackBot, requester: pb.Requester, message: Mapping[str, Any], trigger_id: str
) -> None:
    """The "Upscale" message shortcut: the picture the message holds, as /upscale with its name would; the
    job's message appears in the channel, a refusal only to the one who asked."""
    name = picture_of_message(message)
    if name is None:
        await bot.tell(requester, NO_IMAGE_NAME)
        return
    try:
        spec = parse_upscale("", replied_to=name)
    except UsageError as error:
        await bot.tell(requester, str(error))
        return
    key = f"slack-shortcut:{trigger_id}" if trigger_id else ""
    starting = asyncio.create_task(start_generation(bot.daemon, spec, requester, key))
    bot.track(starting)
    await _started_late(bot, starting, spec, requester)


async def _generate(
    bot: SlackBot, ack: blocks.Ack, request: SlashCommand, parse: Callable[[str], pb.GenerateSpec], usage: str
) -> None:
    word = request.text.split(maxsplit=1)[0].lower() if request.text else ""
    if word in ("", "help", "-h", "--help"):
        await ack(usage)
        return
    try:
        spec = parse(request.text)
    except UsageError as error:
        await ack(blocks.usage_error_text(str(error), usage))
        return
    requester = request.requester
    # Slack gives each invocation its own trigger id: a repeat of it is the same request.
    key = f"slack-command:{request.trigger_id}" if request.trigger_id else ""
    starting = asyncio.create_task(start_generation(bot.daemon, spec, requester, key))
    bot.track(starting)
    # An --adapt link is fetched before the daemon accepts; a slow host must not cost the 3 s ack.
    done, _ = await asyncio.wait({starting}, timeout=bot.settings.ack_wait)
    if not done:
        await ack(STARTING)
        bot.spawn(_started_late(bot, starting, spec, requester), requester)
        return
    try:
        job, position = starting.result()
    except DaemonError as error:
        await ack(error.message)
        return
    await ack(_accepted(bot, job, position, spec))


def _accepted(bot: SlackBot, job: pb.Job, position: int, spec: pb.GenerateSpec) -> str:
    """Follow the job unless a repeat of the request finds it shown already; the text of the ack."""
    duplicate = bot.followers.is_following(job.id) or bool(job.client_state)
    view = JobView()
    view.apply_job(job)
    if view.generate is None:
        view.generate = spec
    if not duplicate:
        bot.followers.start(job, position, generate=spec)
    return blocks.generation_accepted_text(view, position, duplicate)


async def _started_late(
    bot: SlackBot, starting: asyncio.Task[tuple[pb.Job, int]], spec: pb.GenerateSpec, requester: pb.Requester
) -> None:
    try:
        job, position = await starting
    except DaemonError as error:
        await bot.tell(requester, error.message)
        return
    _accepted(bot, job, position, spec)
