"""Hostile text in Telegram: odd command arguments get usage text; user text never formats.

The bot sends plain text (no ``parse_mode``), so HTML entities and tags a user wrote in a description, a
caption or a prompt arrive in the chat exactly as written.
"""

from __future__ import annotations

import pytest
from distillery.v1 import distillery_pb2 as pb

from frontends.commands import DISTILL_USAGE, LORA_USAGE, SERVE_USAGE, UPSCALE_USAGE
from frontends.telegram.library import INFO_USAGE
from tests.frontends.fakes import FakeDaemon
from tests.frontends.telegram.conftest import StartBot, final_edit, reply_to
from tests.frontends.telegram.fake_bot_api import FakeBotApi, private_chat, user

ANN = 531
MARKUP = '<b>x</b> &amp; <a href="tg://user?id=1">me</a> *y* _z_'
USAGES = {
    "/distill": DISTILL_USAGE,
    "/serve": SERVE_USAGE,
    "/upscale": UPSCALE_USAGE,
    "/lora": LORA_USAGE,
    "/info": INFO_USAGE,
}
ODD = {
    "empty": "",
    "5,000 characters": "a" * 5000,
    "control characters": "ab\x00c\x1b",
    "other scripts": "名前 имя",
}


@pytest.fixture
def daemon() -> FakeDaemon:
    daemon = FakeDaemon("telegram", "")
    daemon.add_lora("annlora", ANN).description = MARKUP
    return daemon


@pytest.mark.parametrize("words", ODD.values(), ids=ODD.keys())
async def test_odd_arguments_get_the_commands_usage(
    bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon, words: str
) -> None:
    await start_bot(daemon)
    for command, usage in USAGES.items():
        if command == "/serve" and words == ODD["other scripts"]:
            continue  # a prompt in any script is a fine prompt
        message = bot_api.text(user(ANN), private_chat(ANN), f"{command} {words}".strip())
        bot_api.send(message)
        reply = await reply_to(bot_api, message)
        assert reply.text.endswith(usage), (command, reply.text[:200])
        assert len(reply.text) < len(usage) + 200 and "\x00" not in reply.text
    assert [name for name in daemon.methods() if name != "list_jobs"] == []  # nothing reached the daemon


async def test_user_markup_arrives_literally(bot_api: FakeBotApi, start_bot: StartBot, daemon: FakeDaemon) -> None:
    await start_bot(daemon, private_edit_interval=0.05)
    for text in ("/lora annlora", "/loras"):
        message = bot_api.text(user(ANN), private_chat(ANN), text)
        bot_api.send(message)
        assert MARKUP in (await reply_to(bot_api, message)).text

    prompt = MARKUP.replace('"', "")  # the command's quotes are its own
    message = bot_api.text(user(ANN), private_chat(ANN), f"/serve {prompt}")
    bot_api.send(message)
    progress = await reply_to(bot_api, message)
    job_id = next(iter(daemon.jobs))
    await daemon.emit(job_id, state=pb.JOB_STATE_RUNNING, captioned=pb.Captioned(caption=MARKUP))
    await bot_api.wait_for(lambda call: MARKUP in call.text)
    await daemon.finish(job_id)
    summary = await final_edit(bot_api, ANN, progress.result["message_id"])
    assert "<b>x</b> &amp; <a href=tg://user?id=1>me</a>" in summary.text  # the prompt, as written
    sent = [call for call in bot_api.calls if call.method in ("sendMessage", "editMessageText", "sendPhoto")]
    assert sent and all("parse_mode" not in call.params for call in sent)
