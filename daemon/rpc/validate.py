"""Every request field checked at the edge, before the service sees it: one table, driven by the proto.

The walk goes over a request message with its descriptor, so a field added to the proto later is checked too:

* strings: a length cap, no control characters (prompts and descriptions may hold line breaks and tabs), and
  for identifiers a shape (job ids, LoRA names, ``<name>.png`` image names, platforms). An identifier the
  request needs (the job id of ``GetJob``, the image name of a ``DistillSpec`` whose source is a stored image)
  may not be empty. A string the table does not name gets the default: one line, at most 256 characters.
* bytes: a cap where the field has one (a frontend's client state).
* enums: a value the proto defines (proto3 keeps unknown numbers; they are refused here, not read as "unset").
* floats: finite (no NaN or infinity).
* repeated fields: at most ``MAX_REPEATED`` entries.

A refusal is ``BadInput`` (INVALID_ARGUMENT) with a sentence that names the field the way a chat user knows it
and never repeats the rejected value, which may be huge or hold markup. Ranges that depend on the daemon's
configuration (steps, seed, sizes, how many LoRAs) stay in the service, which checks them next.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from daemon.errors import BadInput
from daemon.pipeline.serve_request import MAX_PROMPT
from daemon.service import MAX_CLIENT_STATE, MAX_DESCRIPTION

PACKAGE = "distillery.v1"
MAX_REPEATED = 64
DEFAULT_MAX_CHARS = 256
# C0 controls and DEL, and the C1 block; a line break and a tab are allowed only in multi-line text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Text:
    """How one string field may look."""

    label: str  # the field as a person calls it: "job id", "LoRA name"
    max_chars: int = DEFAULT_MAX_CHARS
    shape: re.Pattern[str] | None = None
    shape_hint: str = ""  # what a valid value looks like, a clause after "That is not a valid <label>: "
    required: bool = False  # may not be empty when the field is sent (or, in a oneof, when its branch is)
    multiline: bool = False


JOB_ID = Text(
    "job id",
    max_chars=64,
    shape=re.compile(r"[A-Za-z0-9_-]+"),
    shape_hint="job ids are letters and digits, as the bot or the CLI showed them",
    required=True,
)
LORA_NAME = Text(
    "LoRA name",
    max_chars=64,
    shape=re.compile(r"[A-Za-z0-9_-]+"),
    shape_hint="LoRA names are one word, such as rifttami",
    required=True,
)
IMAGE_NAME = Text(
    "image name",
    max_chars=100,
    shape=re.compile(r"[A-Za-z0-9_-]+\.png"),
    shape_hint="use a stored picture's file name, such as rifttami.png",
    required=True,
)
LINK = Text(
    "link",
    max_chars=2048,
    shape=re.compile(r"\S+"),
    shape_hint="send one web address, with no spaces",
    required=True,
)
PLATFORM = Text(
    "platform", max_chars=32, shape=re.compile(r"[a-z][a-z0-9_-]*"), shape_hint="platforms are one lowercase word"
)
ACCOUNT = Text("user, workspace or chat id", max_chars=128)
PROMPT = Text("prompt", max_chars=MAX_PROMPT, multiline=True)
NEGATIVE_PROMPT = Text("negative prompt", max_chars=MAX_PROMPT, multiline=True)

_M = f"{PACKAGE}."
TEXT_RULES: dict[str, Text] = {
    f"{_M}Requester.platform": PLATFORM,
    f"{_M}Requester.workspace": ACCOUNT,
    f"{_M}Requester.user": ACCOUNT,
    f"{_M}Requester.chat": ACCOUNT,
    f"{_M}DistillSpec.url": LINK,
    f"{_M}DistillSpec.image_name": IMAGE_NAME,
    f"{_M}DistillSpec.idempotency_key": Text("idempotency key", max_chars=200),
    f"{_M}GenerateRequest.idempotency_key": Text("idempotency key", max_chars=200),
    f"{_M}WatchRequest.job_id": JOB_ID,
    f"{_M}GetJobRequest.job_id": JOB_ID,
    f"{_M}CancelJobRequest.job_id": JOB_ID,
    f"{_M}SetClientStateRequest.job_id": JOB_ID,
    f"{_M}GetLoraRequest.name": LORA_NAME,
    f"{_M}UpdateLoraRequest.name": LORA_NAME,
    f"{_M}DeleteLoraRequest.name": LORA_NAME,
    f"{_M}LoraWeight.name": LORA_NAME,
    f"{_M}GetImageRequest.name": IMAGE_NAME,
    f"{_M}UpdateLoraRequest.description": Text("description", max_chars=MAX_DESCRIPTION, multiline=True),
    f"{_M}GenerateSpec.prompt": PROMPT,
    f"{_M}GenerateSpec.negative_prompt": NEGATIVE_PROMPT,
    f"{_M}GenerateSpec.full_prompt": Text("full prompt", max_chars=4000, multiline=True),
    f"{_M}GenerateSpec.aspect_ratio": Text("aspect ratio", max_chars=16),
    f"{_M}GenerateSpec.adapt_image": IMAGE_NAME,
    f"{_M}GenerateSpec.adapt_url": LINK,
    f"{_M}GenerateSpec.init_image": IMAGE_NAME,
    f"{_M}GenerateSpec.init_url": LINK,
    # A stored name or a link: the service tells which; here only the longer of the two caps applies.
    f"{_M}GenerateSpec.adapt_face": Text(
        "face picture",
        max_chars=2048,
        shape=re.compile(r"\S+"),
        shape_hint="send one stored picture name or web address",
    ),
    f"{_M}AdaptPicture.image": IMAGE_NAME,
    f"{_M}AdaptPicture.url": LINK,
    f"{_M}GenerateSpec.sampler": Text("sampler", max_chars=64),
    f"{_M}GenerateSpec.upscale_method": Text("upscale method", max_chars=32),
    f"{_M}GenerateSpec.model": Text("model name", max_chars=128),
    # Empty on every /serve request: only /upscale names a picture here.
    f"{_M}GenerateSpec.upscale_image": dataclasses.replace(IMAGE_NAME, label="picture to upscale", required=False),
}
# Byte fields with a cap of their own; image chunks and photos are capped by the servicer, in total.
BYTES_CAPS: dict[str, int] = {f"{_M}SetClientStateRequest.client_state": MAX_CLIENT_STATE}
FLOAT_TYPES = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)


def check_request(message: Message) -> None:
    """Raise BadInput with a sentence for the first field of ``message`` (or a message in it) that is wrong."""
    for field in message.DESCRIPTOR.fields:
        if field.is_repeated:
            values = getattr(message, field.name)
            if len(values) > MAX_REPEATED:
                raise BadInput(f"A request may hold at most {MAX_REPEATED} {_plain(field)} entries.")
            for value in values:
                _check_value(field, value, sent=True)
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if message.HasField(field.name):
                check_request(getattr(message, field.name))
            continue
        _check_value(field, getattr(message, field.name), sent=_sent(message, field))


def _sent(message: Message, field: FieldDescriptor) -> bool:
    """Whether the caller chose this field: a oneof branch or an optional field counts only when it is set."""
    if field.containing_oneof is not None:
        return bool(message.HasField(field.name))
    return True


def _check_value(field: FieldDescriptor, value: object, sent: bool) -> None:
    if isinstance(value, Message):
        check_request(value)
    elif field.type == FieldDescriptor.TYPE_STRING:
        assert isinstance(value, str)
        _check_text(TEXT_RULES.get(field.full_name) or Text(_plain(field)), value, sent)
    elif field.type == FieldDescriptor.TYPE_BYTES:
        assert isinstance(value, bytes)
        cap = BYTES_CAPS.get(field.full_name)
        if cap is not None and len(value) > cap:
            raise BadInput(f"The {_plain(field)} is limited to {cap} bytes.")
    elif field.type == FieldDescriptor.TYPE_ENUM:
        assert isinstance(value, int)
        if value not in field.enum_type.values_by_number:
            raise BadInput(f"{_plain(field).capitalize()} {value} is not one this daemon knows.")
    elif field.type in FLOAT_TYPES:
        assert isinstance(value, float)
        if not math.isfinite(value):
            raise BadInput(f"The {_plain(field)} must be a number (not NaN or infinity).")


def _check_text(rule: Text, value: str, sent: bool) -> None:
    if not value:
        if sent and rule.required:
            raise BadInput(f"The {rule.label} is missing.")
        return
    if len(value) > rule.max_chars:
        raise BadInput(f"The {rule.label} is longer than {rule.max_chars} characters.")
    control = _CONTROL_MULTILINE if rule.multiline else _CONTROL
    if control.search(value):
        raise BadInput(f"The {rule.label} holds control characters; send plain text.")
    if rule.shape is not None and not rule.shape.fullmatch(value):
        raise BadInput(f"That is not a valid {rule.label}: {rule.shape_hint}.")


def _plain(field: FieldDescriptor) -> str:
    """A field's name as words: "subject_class" -> "subject class"."""
    return str(field.name).replace("_", " ")
