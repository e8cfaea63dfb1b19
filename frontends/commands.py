"""The chat commands' grammar, shared by both bots and the CLI.

``/distill <image url> [--class man|woman|person] [--noflip]``
``/serve <prompt> [--lora <name>[:weight] ...] [--neg <text>] [--seed N] [--cfg X] [--steps N] [--ar W:H]
[--n 1..4] [--sampler NAME] [--power[=X]] [--upscalemethod M] [--image <picture>] [--imagedenoise 0..1]
[--adapt[1..4] <picture> ...] [--adaptweight[1..4] 0..1] [--adaptface <picture>] [--adaptfaceweight 0..1]``
``/upscale <picture name> [--power=1.5..2] [--upscalemethod latent|lanczos]``
``/lora <name> [--makepublic | --makeprivate | --description "..." | --showimage | --hideimage | --delete |
--download]``
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from dataclasses import dataclass

from distillery.v1 import distillery_pb2 as pb

CLASS_CHOICES = ("man", "woman", "person")
MAX_ADAPTS = 4  # --adapt pictures in one /serve

DISTILL_USAGE = (
    "Usage: /distill <image url> [--class man|woman|person] [--noflip]\n"
    "Or send a photo with the caption /distill (same options), or reply /distill to a photo.\n"
    "--class says who is in the picture when the guess would be wrong; "
    "--noflip turns off mirror augmentation (for off-centre or asymmetric subjects)."
)


class UsageError(Exception):
    """The command's words are off; ``str(error)`` says what, and the bot adds the usage text."""


# The longest command text (after the command's name) any bot reads: prompts and descriptions included.
MAX_COMMAND = 2000
# The longest description (the daemon's own limit).
MAX_DESCRIPTION = 500
# Words of the user quoted back in a usage error are cut to this many characters.
_QUOTED = 40
# Whitespace the chat clients send (newlines in a prompt are fine); every other control character is not.
_ALLOWED_CONTROLS = frozenset("\t\n\r")


def cut(word: str) -> str:
    """A user's word as a usage error repeats it: cut when long."""
    return word if len(word) <= _QUOTED else word[: _QUOTED - 1] + "…"


def quoted(word: str) -> str:
    """A user's word in quotes, as a usage error quotes a value."""
    return repr(cut(word))


def checked(text: str) -> str:
    """The command's text, when it is of a length and of characters a command can have."""
    if len(text) > MAX_COMMAND:
        raise UsageError(f"That is too long for a command ({len(text)} characters; at most {MAX_COMMAND}).")
    if any(unicodedata.category(char) == "Cc" and char not in _ALLOWED_CONTROLS for char in text):
        raise UsageError("The command has control characters in it; write it as plain text.")
    return text


@dataclass(frozen=True)
class DistillArgs:
    url: str = ""
    subject_class: str = ""
    no_flip: bool = False


def parse_distill(text: str, need_url: bool) -> DistillArgs:
    """Parse the words after /distill; ``need_url`` is False when the image came with the message."""
    words = _words(text)
    url = ""
    subject_class = ""
    no_flip = False
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--noflip":
            no_flip = True
        elif word == "--class" or word.startswith("--class="):
            if "=" in word:
                value = word.split("=", 1)[1]
            else:
                index += 1
                value = words[index] if index < len(words) else ""
            if value.lower() not in CLASS_CHOICES:
                wrong = quoted(value) if value else "nothing"
                raise UsageError(f"--class takes man, woman or person, not {wrong}.")
            subject_class = value.lower()
        elif word.startswith("--"):
            raise UsageError(f"Unknown option {cut(word)}.")
        elif url:
            raise UsageError("Send one image link at a time.")
        else:
            url = word
        index += 1
    if url and not url.lower().startswith(("http://", "https://")):
        raise UsageError("The image link must start with http:// or https://.")
    if need_url and not url:
        raise UsageError("Send an image link, or a photo with the caption /distill.")
    if not need_url and url:
        raise UsageError("Send either a photo or a link, not both.")
    return DistillArgs(url=url, subject_class=subject_class, no_flip=no_flip)


SERVE_USAGE = (
    "Usage: /serve <prompt> [--lora <name>[:weight]] (up to 5) [--neg <text>] [--seed N] [--cfg X] "
    "[--steps N] [--ar W:H] [--n 1..4] [--sampler NAME] [--power[=1.5..2]] [--upscalemethod latent|lanczos] "
    "[--image <name>.png or <url>] [--imagedenoise 0..1] [--adapt <name>.png or <url>] (up to 4, or "
    "--adapt1..4) [--adaptweight 0..1] (or --adaptweight1..4) [--adaptface <name>.png or <url>] "
    "[--adaptfaceweight 0..1] [--model NAME]\n"
    'Example: /serve "a portrait as an (astronaut:1.2)" --lora rifttami --n 2 --power\n'
    "A LoRA's name is its activation word: it is added to the prompt when you did not write it. "
    "With several LoRAs each is weakened automatically unless you give a weight (name:0.8). "
    "(word:1.3), (word) and [word] weight parts of the prompt as in AUTOMATIC1111. "
    "Samplers: DPM++ 2M (default), DPM++ 2M Karras, Euler a, Euler, DDIM, UniPC."
)

UPSCALE_USAGE = (
    "Usage: /upscale <picture name> [--power=1.5..2] [--upscalemethod latent|lanczos]\n"
    "Example: /upscale 3f2a9c1d-1.png --power=1.5\n"
    "Makes a picture from /serve larger (2 times unless --power says) and draws its details again, as /serve "
    "--power does, with the picture's own prompt, LoRAs and seed. latent (the default) upscales the picture's "
    "latents; lanczos upscales the picture itself with the Lanczos filter."
)

LORA_USAGE = (
    "Usage: /lora <name> shows a LoRA; /loras lists yours and the public ones.\n"
    'Owners can add one of: --makepublic, --makeprivate, --description "...", --showimage, --hideimage '
    "(whether others see the source picture of a public LoRA), --delete, or --download for the .safetensors "
    "file (works in AUTOMATIC1111 and ComfyUI)."
)

# The options of /serve; every one takes a value ("--n 2" or "--n=2")...
_SERVE_OPTIONS = frozenset(
    (
        "--lora",
        "--neg",
        "--seed",
        "--cfg",
        "--steps",
        "--ar",
        "--adapt",
        "--adaptweight",
        "--n",
        "--sampler",
        "--upscalemethod",
        "--image",
        "--imagedenoise",
        "--adaptface",
        "--adaptfaceweight",
        "--model",
        *(f"--adapt{n}" for n in range(1, MAX_ADAPTS + 1)),
        *(f"--adaptweight{n}" for n in range(1, MAX_ADAPTS + 1)),
    )
)
# ...but these switches, which take one only written inline ("--power" or "--power=1.5").
_SERVE_SWITCHES = frozenset(("--power",))
LORA_ACTIONS = (
    "--makepublic",
    "--makeprivate",
    "--description",
    "--showimage",
    "--hideimage",
    "--delete",
    "--download",
)
_NAME = re.compile(r"[a-z0-9]{2,40}")
# The widest values of the GenerateSpec fields the options fill (uint64 seed, uint32 steps and count).
UINT64_MAX = 2**64 - 1
UINT32_MAX = 2**32 - 1


def _words(text: str) -> list[str]:
    try:
        return shlex.split(checked(text))
    except ValueError as error:
        raise UsageError(f"I could not read that command ({error}).") from None


def _number(option: str, value: str, kind: type[int] | type[float]) -> float:
    try:
        return kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise UsageError(f"{option} takes {what}, not {quoted(value)}.") from None


def _whole(option: str, value: str, lowest: int, highest: int, wording: str) -> int:
    """A whole-number option within what its protobuf field holds; the daemon checks its own limits after."""
    number = int(_number(option, value, int))
    if not lowest <= number <= highest:
        raise UsageError(f"{option} takes {wording}, not {value}.")
    return number


def lora_name(word: str) -> str:
    """A LoRA name as users write it (any case, with or without .safetensors/.png)."""
    name = word.strip().lower().removesuffix(".safetensors").removesuffix(".png")
    if not _NAME.fullmatch(name):
        raise UsageError(f"{quoted(word)} is not a LoRA name (2 to 40 letters a-z and digits).")
    return name


def _is_link(value: str) -> bool:
    return value.lower().startswith(("http://", "https://"))


def _picture(option: str, value: str) -> str:
    """A picture option's value: an image link as written, or a stored picture's name."""
    if _is_link(value):
        return value
    if not value.lower().endswith(".png"):
        raise UsageError(f"{option} takes a stored picture such as rifttami.png, or an image link.")
    return value.lower()


def _fill_adapts(spec: pb.GenerateSpec, pictures: dict[int, str], weights: dict[int, float]) -> None:
    """The --adapt pictures in slot order: the first in ``adapt``, the others in ``more_adapts``."""
    for slot in weights:
        if slot not in pictures:
            raise UsageError(f"--adaptweight{'' if slot == 1 else slot} has no --adapt{slot} picture to weigh.")
    for index, slot in enumerate(sorted(pictures)):
        value, weight = pictures[slot], weights.get(slot)
        if index == 0:
            if _is_link(value):
                spec.adapt_url = value
            else:
                spec.adapt_image = value
            if weight is not None:
                spec.adapt_weight = weight
            continue
        more = spec.more_adapts.add(**{"url" if _is_link(value) else "image": value})
        if weight is not None:
            more.weight = weight


def parse_serve(text: str) -> pb.GenerateSpec:
    """Parse the words after /serve into the request. The prompt is every word that is not an option or its
    value; options left out stay unset (seed, CFG, weights) or 0, for the daemon's defaults."""
    words = _words(text)
    prompt: list[str] = []
    spec = pb.GenerateSpec()
    pictures: dict[int, str] = {}  # --adapt slot (1-4) -> a stored picture or a link
    weights: dict[int, float] = {}
    index = 0
    while index < len(words):
        word = words[index]
        option, _, inline = word.partition("=") if word.startswith("--") else (word, "", "")
        if not word.startswith("--") or word == "--":
            prompt.append(word)
            index += 1
            continue
        if option not in _SERVE_OPTIONS | _SERVE_SWITCHES:
            raise UsageError(f"Unknown option {cut(option)}.")
        if inline or option in _SERVE_SWITCHES:
            value = inline
        else:
            index += 1
            if index >= len(words):
                raise UsageError(f"{option} needs a value.")
            value = words[index]
        index += 1
        if option == "--lora":
            name, _, weight = value.partition(":")
            use = spec.loras.add(name=lora_name(name))
            if weight:
                use.weight = _number("--lora weight", weight, float)
        elif option == "--neg":
            spec.negative_prompt = value
        elif option == "--seed":
            spec.seed = _whole(option, value, 0, UINT64_MAX, "a whole number from 0")
        elif option == "--cfg":
            spec.cfg = _number(option, value, float)
        elif option == "--steps":
            spec.steps = _whole(option, value, 1, UINT32_MAX, "a positive number")
        elif option == "--ar":
            if not re.fullmatch(r"\d+:\d+", value):
                raise UsageError(f"--ar takes a ratio such as 2:3, not {quoted(value)}.")
            spec.aspect_ratio = value
        elif option.startswith("--adaptweight"):
            weights[int(option.removeprefix("--adaptweight") or 1)] = _number(option, value, float)
        elif option == "--adaptface":
            spec.adapt_face = _picture(option, value)
        elif option == "--adaptfaceweight":
            spec.adapt_face_weight = _number(option, value, float)
        elif option.startswith("--adapt"):
            slot = int(option.removeprefix("--adapt") or next(n for n in range(1, 99) if n not in pictures))
            if slot > MAX_ADAPTS:
                raise UsageError(f"Use at most {MAX_ADAPTS} --adapt pictures.")
            pictures[slot] = _picture(option, value)
        elif option == "--image":
            if _is_link(value):
                spec.init_url = value
            else:
                spec.init_image = _picture(option, value)
        elif option == "--imagedenoise":
            spec.init_denoise = _number(option, value, float)
        elif option == "--n":
            spec.count = _whole(option, value, 1, UINT32_MAX, "1 to 4")
        elif option == "--power":
            spec.power = True
            if value:
                spec.power_scale = _number(option, value, float)
        elif option == "--upscalemethod":
            spec.upscale_method = value
        elif option == "--model":
            spec.model = value.lower()
        elif option == "--sampler":
            spec.sampler = value  # the daemon knows its samplers and names them when this is not one
    _fill_adapts(spec, pictures, weights)
    spec.prompt = " ".join(prompt)
    if not spec.prompt and not spec.loras:
        raise UsageError("Write what to generate.")
    return spec


@dataclass(frozen=True)
class LoraArgs:
    """A parsed /lora: the name, and at most one action (the option without its dashes), or "" to show it."""

    name: str
    action: str = ""
    description: str = ""


def parse_lora(text: str) -> LoraArgs:
    """Parse the words after /lora."""
    words = _words(text)
    if not words:
        raise UsageError("Name the LoRA.")
    if words[0].startswith("--"):
        raise UsageError("Name the LoRA first, then the option.")
    name, rest = lora_name(words[0]), words[1:]
    if not rest:
        return LoraArgs(name=name)
    option = rest[0]
    if option not in LORA_ACTIONS:
        raise UsageError(
            f"Unknown option {cut(option)}."
            if option.startswith("--")
            else f"I did not understand {quoted(option)}."
        )
    if option == "--description":
        # Everything after it is the description ("" clears it), quoted or not.
        description = " ".join(rest[1:])
        if len(description) > MAX_DESCRIPTION:
            raise UsageError(f"A description is limited to {MAX_DESCRIPTION} characters.")
        return LoraArgs(name=name, action="description", description=description)
    if len(rest) > 1:
        raise UsageError("One option at a time.")
    return LoraArgs(name=name, action=option.removeprefix("--"))


_IMAGE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}\.png")


def image_name(word: str) -> str:
    """A picture's name as users write it: ``<name>.png`` as each picture's caption starts, any case, the
    ``.png`` optional."""
    name = word.lower()
    name = name if name.endswith(".png") else f"{name}.png"
    if not _IMAGE_NAME.fullmatch(name):
        raise UsageError(f"{quoted(word)} is not the name of a picture, such as 3f2a9c1d-1.png.")
    return name


def parse_image_name(text: str) -> str:
    """The picture /info asks about; a LoRA's name alone means its source picture."""
    words = _words(text)
    if not words:
        raise UsageError("Which picture?")
    if len(words) > 1:
        raise UsageError("Ask about one picture at a time.")
    return image_name(words[0])


def parse_upscale(text: str, replied_to: str = "") -> pb.GenerateSpec:
    """Parse the words after /upscale: the picture's name, ``--power[=X]`` and ``--upscalemethod M`` in any
    order. The daemon checks the factor's range and the method's name, as it does for /serve --power.

    ``replied_to`` is the name of the picture the command answers (a chat where a command can reply to one of
    the bot's pictures): it stands in for a name the words do not give."""
    words = _words(text)
    spec = pb.GenerateSpec(power=True)
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        option, _, value = word.partition("=")
        if not word.startswith("--"):
            if re.fullmatch(r"\d+(\.\d*)?", word):
                raise UsageError(f"Write the factor after --power with an equals sign: --power={word}.")
            if spec.upscale_image:
                raise UsageError("Upscale one picture at a time.")
            spec.upscale_image = image_name(word)
        elif option == "--power":
            if value:
                spec.power_scale = _number(option, value, float)
        elif option == "--upscalemethod":
            if not value:
                if index >= len(words):
                    raise UsageError(f"{option} needs a value.")
                value = words[index]
                index += 1
            spec.upscale_method = value
        else:
            raise UsageError(f"Unknown option {cut(option)}.")
    if not spec.upscale_image and replied_to:
        spec.upscale_image = image_name(replied_to)
    if not spec.upscale_image:
        raise UsageError("Which picture? Give its name, such as 3f2a9c1d-1.png.")
    return spec
