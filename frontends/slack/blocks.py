"""What the Slack bot says: the sentences of its short replies and the blocks of its delete question.

The job message's blocks are the platform adapter's (platform.py); the words of a job's progress and summary
come from frontends.render, shared by every bot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from distillery.v1 import distillery_pb2 as pb

from frontends.actions import DELETE_ACTION as CORE_DELETE
from frontends.commands import DISTILL_USAGE, LORA_USAGE, SERVE_USAGE
from frontends.escape import slack_mrkdwn
from frontends.platform import Button
from frontends.render import JobView, generation_title
from frontends.slack.platform import CANCEL_ACTION, SECTION_LIMIT, Block, plain_section

__all__ = ["CANCEL_ACTION"]
# Slack shows at most 50 blocks in a message.
_MOST_BLOCKS = 50

DELETE_ACTION = "lora_delete"
KEEP_ACTION = "lora_keep"
INFO_SHORTCUT = "image_info"
UPSCALE_SHORTCUT = "upscale"
NOT_ALLOWED = "This distillery is not open to you here. Ask its operator to add you (or this channel)."
NOT_OWNER = "Only the person who started this job can cancel it."
FETCHING = "Got it: fetching your picture. The job's progress will appear in this channel."
INTERNAL = "Something went wrong on my side; the operator can find the details in the bot's log."
NO_IMAGE = "That upload has no image in it; attach a JPEG, PNG or WebP photo."

_SLACK_USAGE = (
    "Or upload a photo with /distill (and any options) in the message text; start the message with a word, "
    "e.g. `me /distill --class woman`, so that Slack does not take it for a command.\n"
    "`/distill jobs` lists your jobs; `/distill help` shows this.\n"
    "`/serve <prompt> --lora <name>` makes pictures with LoRAs and `/upscale <picture name>` makes one of them "
    "larger; `/loras` lists them, `/lora <name>` shows "
    "one, `/info <image name>` tells how a picture was made, `/stats` counts what you made, `/models` lists the "
    "models `/serve --model` may name."
)
# Telegram users reply /info to a picture; Slack has no replies to files, so the summary says what works here.
INFO_HINT = (
    "/info <image name> (the name starts each picture's comment) or the picture's ... menu > Image info "
    "shows all its parameters."
)


def usage_text() -> str:
    """The shared usage, minus its Telegram-only ways of sending a photo, plus how Slack users send one."""
    # DISTILL_USAGE describes photo captions and replies, which Slack does not have: Slack's way takes the
    # place of that line (or comes last, should the shared text change).
    lines = DISTILL_USAGE.splitlines()
    telegram = [index for index, line in enumerate(lines) if line.startswith("Or send a photo")]
    if telegram:
        lines[telegram[0]] = _SLACK_USAGE
    else:
        lines.append(_SLACK_USAGE)
    return "\n".join(lines)


def usage_error_text(problem: str, usage: str = "") -> str:
    """A command the bot could not read: what was wrong, then how to say it (/distill's usage by default)."""
    return f"{problem}\n\n{usage or usage_text()}"


def serve_usage_text() -> str:
    """/serve's usage; the shared text fits Slack as it is."""
    return SERVE_USAGE


def lora_usage_text() -> str:
    """/lora's usage; the shared text fits Slack as it is."""
    return LORA_USAGE


def generation_accepted_text(view: JobView, queue_position: int, duplicate: bool) -> str:
    """The ack of a /serve: what will be made and where the job stands in the queue."""
    title = generation_title(view)
    if duplicate:
        return f"That request is already running: {title[0].lower()}{title[1:]}."
    where = "It is next in the queue." if queue_position <= 1 else f"It is number {queue_position} in the queue."
    return f"{title}. {where} Progress will appear in this channel."


def accepted_text(reply: pb.SubmitReply) -> str:
    """The ack of a /distill: the LoRA's name and where the job stands in the queue."""
    name = reply.job.lora_name
    if reply.duplicate:
        return f"That request is already being distilled as {name}."
    if reply.queue_position <= 1:
        where = "It is next in the queue."
    else:
        where = f"It is number {reply.queue_position} in the queue."
    return f"Your LoRA will be called {name}. {where} Progress will appear in this channel."


def reply(text: str) -> dict[str, Any]:
    """A short reply as Slack gets it: ``plain_text`` sections (nothing in them formats, links or pings: user
    text such as a LoRA's description shows as written) and, for notifications, the text escaped for mrkdwn."""
    sections: list[str] = []
    for line in text.splitlines() or [""]:
        if sections and len(sections[-1]) + 1 + len(line) <= SECTION_LIMIT:
            sections[-1] += "\n" + line
        else:
            sections.append(line)
    blocks = [plain_section(section) for section in sections[:_MOST_BLOCKS] if section]
    return {"text": slack_mrkdwn(text), "blocks": blocks}


class Ack(Protocol):
    """Bolt's ack as the commands use it."""

    async def __call__(self, text: str = "", blocks: Sequence[Block] | None = None) -> Any: ...


class PlainAck:
    """An ack whose bare texts go out as ``reply`` does it; one with its own blocks goes as it is."""

    def __init__(self, ack: Ack) -> None:
        self._ack = ack

    async def __call__(self, text: str = "", blocks: Sequence[Block] | None = None) -> Any:
        if blocks is None and text:
            return await self._ack(**reply(text))
        return await self._ack(text=text, blocks=blocks)


def delete_confirmation(question: str, buttons: Sequence[Button]) -> list[Block]:
    """The ephemeral question before /lora <name> --delete; the buttons carry who asked and the name."""
    elements: list[Block] = []
    for button in buttons:
        element: Block = {
            "type": "button",
            "action_id": DELETE_ACTION if button.action == CORE_DELETE else KEEP_ACTION,
            "value": f"{button.owner}:{button.value}",
            "text": {"type": "plain_text", "text": button.label},
        }
        if button.danger:
            element["style"] = "danger"
        elements.append(element)
    return [plain_section(question), {"type": "actions", "block_id": "lora_delete_actions", "elements": elements}]
