"""/lora <name> [action] for every chat platform: one daemon call, and an answer of text, buttons or a file.

A bot parses the words (``frontends.commands.parse_lora``), calls ``lora_action`` and renders the ``Answer``
its own way: the text as a reply, the buttons under it, the file (fetched only when the bot is ready to send
it) where files go on its platform. Deleting asks first: the question's Delete and Keep buttons carry the
LoRA's name and the asker, and ``answer_delete`` gives the sentence that replaces the question.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from distillery.v1 import distillery_pb2 as pb

from frontends.client import DaemonApi, DaemonError
from frontends.commands import LoraArgs
from frontends.platform import Attachment, Button
from frontends.render import lora_text, same_person

DELETE_ACTION = "lora-delete"
KEEP_ACTION = "lora-keep"
_MB = 1024 * 1024


@dataclass(frozen=True)
class Answer:
    """What a /lora command answers: a sentence, buttons under it, and a file to fetch and send."""

    text: str = ""
    buttons: tuple[Button, ...] = ()
    file: Callable[[], Awaitable[Attachment]] | None = None
    file_size: int = 0


def not_owner(name: str) -> str:
    return f"Only the owner of {name} can delete it."


def delete_question(name: str) -> str:
    return (
        f"Delete {name} and its source picture for good? Pictures made with it stay, "
        "and the name is not given out again."
    )


def too_big_text(lora: pb.Lora, limit: int) -> str:
    """Why a LoRA file does not come through the chat, and how to get it instead."""
    return (
        f"{lora.name}.safetensors is {lora.size_bytes / _MB:.0f} MB; the bot can send files of at most "
        f"{limit // _MB} MB here. Get it with the command line instead: distillery lora {lora.name} --download"
    )


async def lora_action(daemon: DaemonApi, args: LoraArgs, who: pb.Requester, upload_limit: int) -> Answer:
    """Show the LoRA, change it, ask before deleting it, or hand out its file (under ``upload_limit`` bytes)."""
    name = args.name
    if args.action == "":
        return Answer(lora_text(await daemon.get_lora(name, who), who))
    if args.action == "delete":
        lora = await daemon.get_lora(name, who)
        if not same_person(lora.owner, who):
            return Answer(not_owner(name))
        buttons = (
            Button("Delete", DELETE_ACTION, name, owner=who.user, danger=True),
            Button("Keep", KEEP_ACTION, name, owner=who.user),
        )
        return Answer(delete_question(name), buttons)
    if args.action == "download":
        lora = await daemon.get_lora(name, who)
        if lora.size_bytes > upload_limit:
            return Answer(too_big_text(lora, upload_limit))

        async def fetch() -> Attachment:
            data = await daemon.download_lora(name, who)
            if len(data) > upload_limit:
                raise DaemonError(grpc.StatusCode.RESOURCE_EXHAUSTED, too_big_text(lora, upload_limit))
            caption = f"{name}.safetensors: load it in AUTOMATIC1111 or ComfyUI and write {name} in the prompt."
            return Attachment(f"{name}.safetensors", data, caption, picture=False)

        return Answer(file=fetch, file_size=lora.size_bytes)
    return Answer(await _change(daemon, args, who))


async def _change(daemon: DaemonApi, args: LoraArgs, who: pb.Requester) -> str:
    name = args.name
    if args.action in ("makepublic", "makeprivate"):
        await daemon.update_lora(name, who, public=args.action == "makepublic")
        if args.action == "makepublic":
            return f"{name} is public now: everyone here can use it with --lora {name}."
        return f"{name} is private now: only you can use it."
    if args.action in ("showimage", "hideimage"):
        lora = await daemon.update_lora(name, who, show_image=args.action == "showimage")
        if args.action == "hideimage":
            return f"Only you can see the source picture of {name} now."
        later = "" if lora.public else " once you make it public"
        return f"Others can see the source picture of {name}{later}."
    if args.action == "description":
        await daemon.update_lora(name, who, description=args.description)
        if args.description:
            return f"The description of {name} is now: {args.description}"
        return f"{name} has no description now."
    # parse_lora knows no other action; a new one must be handled above before it reaches users.
    raise AssertionError(f"unhandled /lora action {args.action!r}")


async def answer_delete(daemon: DaemonApi, action: str, name: str, who: pb.Requester) -> str:
    """The sentence that replaces the delete question once its asker pressed Delete or Keep."""
    if action != DELETE_ACTION:
        return f"Kept {name}."
    deleted = await daemon.delete_lora(name, who)
    return f"Deleted {name}" + (" and its source picture." if deleted.image_deleted else ".")
