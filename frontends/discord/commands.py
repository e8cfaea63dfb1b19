"""The application commands, registered per guild (instantly, unlike global commands, which take up to an hour).

``/distill`` takes the picture as an attachment option (or a link), the class as a choice and ``noflip`` as a
switch. ``/serve``, ``/upscale``, ``/lora``, ``/loras``, ``/info``, ``/stats``, ``/models`` and ``/help`` take
one ``prompt`` string with the same words and ``--options`` the other chats take after the command. Three
message menus act on a message already in the channel: "Distill this", "Image info" and "Upscale".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import hikari

from frontends.commands import CLASS_CHOICES

log = logging.getLogger(__name__)

DISTILL_THIS = "Distill this"
IMAGE_INFO = "Image info"
UPSCALE_THIS = "Upscale"
# name -> (description, whether the prompt is required)
PROMPT_COMMANDS = {
    "serve": ("Draw pictures: a prompt with --lora, --n, --seed ... as in the other chats", True),
    "upscale": ("Make a /serve picture larger: <picture name> [--power=1.5..2] [--upscalemethod M]", True),
    "lora": ("Show or change one of your LoRAs: <name> [--makepublic|--delete|--download ...]", True),
    "loras": ("Your LoRAs and the public ones", False),
    "info": ("How a picture was made: its name, e.g. 3f2a9c1d-1.png", True),
    "stats": ("What you have made", False),
    "models": ("The models /serve --model may name", False),
    "help": ("How to use the distillery", False),
}


def command_builders(rest: hikari.api.RESTClient) -> list[hikari.api.CommandBuilder]:
    """Every command and menu the bot answers."""
    string, attachment = hikari.OptionType.STRING, hikari.OptionType.ATTACHMENT
    distill = (
        rest.slash_command_builder("distill", "Make a LoRA of the person in a portrait")
        .add_option(hikari.CommandOption(type=attachment, name="image", description="The portrait"))
        .add_option(hikari.CommandOption(type=string, name="url", description="Or a link to the portrait"))
        .add_option(
            hikari.CommandOption(
                type=string,
                name="class",
                description="Who is in the picture, when the guess would be wrong",
                choices=[hikari.CommandChoice(name=choice, value=choice) for choice in CLASS_CHOICES],
            )
        )
        .add_option(
            hikari.CommandOption(
                type=hikari.OptionType.BOOLEAN, name="noflip", description="No mirror augmentation"
            )
        )
    )
    builders: list[hikari.api.CommandBuilder] = [distill]
    for name, (description, required) in PROMPT_COMMANDS.items():
        option = hikari.CommandOption(
            type=string, name="prompt", description="The words and --options", is_required=required
        )
        builders.append(rest.slash_command_builder(name, description).add_option(option))
    for menu in (DISTILL_THIS, IMAGE_INFO, UPSCALE_THIS):
        builders.append(rest.context_menu_command_builder(hikari.CommandType.MESSAGE, menu))
    return builders


async def register(rest: hikari.api.RESTClient, guilds: Iterable[int]) -> int:
    """Put the commands in each guild (replacing what was there); returns in how many guilds."""
    application = await rest.fetch_application()
    guild_ids = list(guilds) or [guild.id async for guild in rest.fetch_my_guilds()]
    for guild in guild_ids:
        await rest.set_application_commands(application.id, command_builders(rest), guild)
    log.info("registered %d commands in %d guild(s)", len(command_builders(rest)), len(guild_ids))
    return len(guild_ids)
