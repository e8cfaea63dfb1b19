"""The Discord platform adapter over hikari's REST client and the fake API: what a message looks like, the DM
when the channel is closed to the bot, files over the channel's limit, and Discord's errors as the core's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import hikari
import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.discord.platform import DiscordPlatform, escape
from frontends.platform import Attachment, Button, Look, MessageGone, Place
from tests.frontends.discord.fake_discord import CHANNEL_ID, FakeDiscord, buttons
from tests.frontends.discord.harness import BOT_TOKEN

OWNER = "7001"


@pytest.fixture
async def platform(fake_discord: FakeDiscord) -> AsyncIterator[DiscordPlatform]:
    app = hikari.RESTApp(url=fake_discord.url)
    await app.start()
    async with app.acquire(BOT_TOKEN, hikari.TokenType.BOT) as rest:
        yield DiscordPlatform(rest)
    await app.close()


async def test_a_look_becomes_an_escaped_message_with_owner_only_buttons(
    platform: DiscordPlatform, fake_discord: FakeDiscord
) -> None:
    cancel_button = Button("Cancel", "cancel", "job1", owner=OWNER, danger=True)
    look = Look("Distilling **me** @here", (cancel_button,), owner=OWNER)
    place = await platform.send(CHANNEL_ID, look)
    shown = fake_discord.find(place.chat, place.message)
    assert shown["content"] == f"<@{OWNER}> " + escape("Distilling **me** @here")
    [cancel] = buttons(shown)
    assert (cancel["label"], cancel["custom_id"], cancel["style"]) == ("Cancel", f"cancel:{OWNER}:job1", 4)

    await platform.edit(place, Look("Done", owner=OWNER, note="passing note"))
    edited = fake_discord.find(place.chat, place.message)
    assert edited["content"] == f"<@{OWNER}> Done\n_passing note_" and buttons(edited) == []
    assert fake_discord.posted[-1].body["allowed_mentions"] == {"parse": []}  # an edit pings nobody


async def test_a_closed_channel_sends_the_message_to_the_owners_dm(
    platform: DiscordPlatform, fake_discord: FakeDiscord
) -> None:
    fake_discord.forbidden_channels.add(CHANNEL_ID)
    owner = pb.Requester(platform="discord", user=OWNER, chat=CHANNEL_ID)
    place = await platform.send(CHANNEL_ID, Look("hello"), owner=owner)
    assert place.chat == fake_discord.dm_channels[OWNER]
    with pytest.raises(MessageGone):
        await platform.send(CHANNEL_ID, Look("hello"))  # nobody to fall back to


async def test_files_over_the_channels_limit_become_a_sentence(
    platform: DiscordPlatform, fake_discord: FakeDiscord
) -> None:
    place = await platform.send(CHANNEL_ID, Look("rifttami is ready"))
    platform.upload_limits[CHANNEL_ID] = 1024  # what the interactions of this channel said
    small = Attachment("rifttami.png", b"x" * 100, "rifttami_a first picture", title="ignored")
    big = Attachment("rifttami.safetensors", b"x" * 2048, "the file", picture=False)
    await platform.upload(place, [small, big])
    picture, sentence = fake_discord.channel_messages(CHANNEL_ID)[1:]
    assert picture["content"] == escape("rifttami_a first picture")
    assert [item["filename"] for item in picture["attachments"]] == ["rifttami.png"]
    assert picture["message_reference"]["message_id"] == place.message
    assert sentence["attachments"] == [] and escape("distillery lora rifttami --download") in sentence["content"]


async def test_an_edit_of_a_deleted_message_is_message_gone(platform: DiscordPlatform) -> None:
    with pytest.raises(MessageGone):
        await platform.edit(Place(CHANNEL_ID, "123"), Look("x"))
