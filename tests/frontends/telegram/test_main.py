"""``python -m frontends.telegram`` as a process: it starts from a token file, answers while the daemon is down,
stops cleanly on SIGTERM, and its log never contains the token."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from frontends.client import OFFLINE
from frontends.telegram.bot import HELP_TEXT
from tests.frontends.telegram.conftest import reply_to
from tests.frontends.telegram.fake_bot_api import TOKEN, FakeBotApi, private_chat, user

ROOT = Path(__file__).resolve().parents[3]


async def test_the_console_script_runs_and_stops_cleanly(bot_api: FakeBotApi, tmp_path: Path) -> None:
    token_file = tmp_path / "telegram-token"
    token_file.write_text(TOKEN)
    env = {key: value for key, value in os.environ.items() if not key.startswith("DISTILLERY_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "frontends.telegram",
        "--token-file",
        str(token_file),
        "--api-url",
        bot_api.base_url,
        "--api-file-url",
        bot_api.base_file_url,
        "--daemon",
        f"unix:{tmp_path / 'no-daemon.sock'}",
        "--log-level",
        "DEBUG",  # the most talkative level must still not leak the token
        cwd=ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        help_message = bot_api.text(user(11), private_chat(11), "/help")
        bot_api.send(help_message)
        assert (await reply_to(bot_api, help_message, timeout=60)).text == HELP_TEXT
        distill = bot_api.text(user(11), private_chat(11), "/distill https://example.org/a.jpg")
        bot_api.send(distill)
        assert (await reply_to(bot_api, distill)).text == OFFLINE
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    log = stderr.decode()
    assert process.returncode == 0, log
    assert TOKEN not in log and TOKEN.split(":")[1] not in log
    assert "bot @distillery_test_bot is up (polling)" in log and "stopping" in log
