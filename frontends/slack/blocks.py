"""What the Slack bot says: Block Kit for the job message, and the sentences of its short replies.

The words of a job's progress and summary come from frontends.render (shared with the Telegram bot); this
module only wraps them in blocks, adds the Cancel button while the job can still be cancelled, and says who
asked. Render's text is plain, so it goes into ``plain_text`` objects and Slack's markup cannot mangle a
caption that happens to contain ``*`` or ``<``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distillery.v1 import distillery_pb2 as pb

from frontends.commands import DISTILL_USAGE, LORA_USAGE, SERVE_USAGE
from frontends.render import JobView, generation_title, message_text

CANCEL_ACTION = "distill_cancel"
DELETE_ACTION = "lora_delete"
KEEP_ACTION = "lora_keep"
INFO_SHORTCUT = "image_info"
# Slack refuses a section whose text is longer than 3000 characters.
_SECTION_LIMIT = 3000

Block = dict[str, Any]

NOT_ALLOWED = "This distillery is not open to you here. Ask its operator to add you (or this channel)."
NOT_OWNER = "Only the person who started this job can cancel it."
FETCHING = "Got it: fetching your picture. The job's progress will appear in this channel."
INTERNAL = "Something went wrong on my side; the operator can find the details in the bot's log."
NO_IMAGE = "That upload has no image in it; attach a JPEG, PNG or WebP photo."

_SLACK_USAGE = (
    "Or upload a photo with /distill (and any options) in the message text; start the message with a word, "
    "e.g. `me /distill --class woman`, so that Slack does not take it for a command.\n"
    "`/distill jobs` lists your jobs; `/distill help` shows this.\n"
    "`/serve <prompt> --lora <name>` makes pictures with LoRAs; `/loras` lists them, `/lora <name>` shows "
    "one, `/info <image name>` tells how a picture was made, `/stats` counts what you made."
)
# Telegram users reply /info to a picture; Slack has no replies to files, so the summary says what works here.
_SLACK_INFO = (
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


@dataclass(frozen=True)
class Content:
    """One version of a job message: the notification/fallback text and the blocks Slack shows."""

    text: str
    blocks: list[Block] = field(default_factory=list)


def _plain_section(text: str) -> Block:
    if len(text) > _SECTION_LIMIT:
        text = text[: _SECTION_LIMIT - 1] + "…"
    return {"type": "section", "text": {"type": "plain_text", "text": text, "emoji": False}}


def _context(markdown: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": markdown}]}


def cancel_button(job_id: str, generating: bool = False) -> Block:
    """The owner's Cancel button; the confirmation keeps a stray click from killing minutes of training."""
    outcome = "Generation stops and no picture is kept." if generating else "Training stops and nothing is saved."
    return {
        "type": "actions",
        "block_id": "distill_actions",
        "elements": [
            {
                "type": "button",
                "action_id": CANCEL_ACTION,
                "value": job_id,
                "style": "danger",
                "text": {"type": "plain_text", "text": "Cancel"},
                "confirm": {
                    "title": {"type": "plain_text", "text": "Cancel this job?"},
                    "text": {"type": "plain_text", "text": outcome},
                    "confirm": {"type": "plain_text", "text": "Cancel it"},
                    "deny": {"type": "plain_text", "text": "Keep going"},
                },
            }
        ],
    }


def job_content(view: JobView, owner: str, note: str = "") -> Content:
    """The job message for the view's state: live progress with Cancel, or the final summary without it.

    ``note`` is a passing remark such as "reconnecting to the trainer"; it is shown under the progress.
    """
    text = message_text(view, _SLACK_INFO)
    blocks = [_plain_section(text), _context(f"Requested by <@{owner}>")] if owner else [_plain_section(text)]
    if not view.finished:
        if note:
            blocks.append(_context(note))
        if view.job_id:
            blocks.append(cancel_button(view.job_id, view.generating))
    return Content(text=text, blocks=blocks)


def delete_confirmation(name: str, owner: str) -> list[Block]:
    """The ephemeral question before /lora <name> --delete; the buttons carry the name and who asked."""
    value = f"{owner}:{name}"
    text = (
        f"Delete {name}? The LoRA and its source picture are removed for good, "
        "and the name is never given out again."
    )
    return [
        _plain_section(text),
        {
            "type": "actions",
            "block_id": "lora_delete_actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": DELETE_ACTION,
                    "value": value,
                    "style": "danger",
                    "text": {"type": "plain_text", "text": "Delete"},
                },
                {
                    "type": "button",
                    "action_id": KEEP_ACTION,
                    "value": value,
                    "text": {"type": "plain_text", "text": "Keep"},
                },
            ],
        },
    ]
