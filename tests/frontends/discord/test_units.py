"""The Discord adapter's pure parts: escaping, button ids, settings, the CDN check, error mapping."""

from __future__ import annotations

from pathlib import Path

import hikari
import pytest

from frontends.discord.__main__ import main
from frontends.discord.fetch import ImageRefused, download, on_cdn
from frontends.discord.platform import MAX_CONTENT, clip, custom_id, escape, parse_custom_id
from frontends.discord.settings import CDN_HOSTS, load_settings
from frontends.sources import SettingsError

TOKEN = "MTIz.secret.discord-token"
KEY = "ab" * 32


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("**bold** _it_ ~~x~~ `code` ||spoiler||", r"\*\*bold\*\* \_it\_ \~\~x\~\~ \`code\` \|\|spoiler\|\|"),
        ("[click](https://evil.example)", r"\[click\]\(https\://evil.example\)"),
        ("@everyone and @Here", "@\u200beveryone and @\u200bHere"),
        ("<@123> <#456> <@&789> <t:1:R>", r"\<@123\> \<\#456\> \<@&789\> \<t\:1\:R\>"),
        ("> quote\n# title\n- item", "\\> quote\n\\# title\n\\- item"),
        ("plain words, 42.", "plain words, 42."),
    ],
)
def test_escape_leaves_no_markup_and_no_mention(text: str, shown: str) -> None:
    assert escape(text) == shown


def test_clip_keeps_discords_length_limit_without_a_dangling_escape() -> None:
    clipped = clip(escape("*" * 3000))
    assert len(clipped) <= MAX_CONTENT and clipped.endswith("\u2026") and not clipped[:-1].endswith("\\")
    # An even run of backslashes before the cut: each escape pair is whole.
    assert (len(clipped[:-1]) - len(clipped[:-1].rstrip("\\"))) % 2 == 0


def test_button_ids_round_trip_and_stay_within_100_characters() -> None:
    assert parse_custom_id(custom_id("cancel", "4001", "job:1")) == ("cancel", "4001", "job:1")
    assert len(custom_id("lora-delete", "1" * 20, "x" * 200)) == 100


def test_gateway_mode_from_the_environment() -> None:
    settings = load_settings([], {"DISCORD_BOT_TOKEN": TOKEN, "DISTILLERY_DISCORD_GUILDS": "1, 2,,"})
    assert settings.mode == "gateway" and settings.bot_token == TOKEN
    assert settings.guilds == frozenset({1, 2}) and settings.cdn_hosts == CDN_HOSTS
    assert TOKEN not in repr(settings)


def test_http_mode_with_a_token_file_and_flags(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    argv = ["--mode", "http", "--bot-token-file", str(token_file), "--public-key", KEY, "--allow-users", "7,8"]
    settings = load_settings(argv, {"DISCORD_BOT_TOKEN": "other", "DISTILLERY_DISCORD_PORT": "9000"})
    assert (settings.mode, settings.bot_token, settings.public_key, settings.port) == ("http", TOKEN, KEY, 9000)
    assert settings.allowed_users == frozenset({7, 8})


def test_a_systemd_credential_is_read(tmp_path: Path) -> None:
    (tmp_path / "discord-bot-token").write_text(TOKEN)
    assert load_settings([], {"CREDENTIALS_DIRECTORY": str(tmp_path)}).bot_token == TOKEN


@pytest.mark.parametrize(
    ("argv", "environ", "says"),
    [
        ([], {}, "no bot token"),
        (["--mode", "http"], {"DISCORD_BOT_TOKEN": TOKEN}, "public key"),
        (["--mode", "http", "--public-key", "xyz"], {"DISCORD_BOT_TOKEN": TOKEN}, "64 hex digits"),
        (["--guilds", "general"], {"DISCORD_BOT_TOKEN": TOKEN}, "numeric ids"),
        ([], {"DISCORD_BOT_TOKEN": TOKEN, "DISTILLERY_DISCORD_MODE": "socket"}, "gateway, http, not 'socket'"),
        ([], {"DISCORD_BOT_TOKEN": TOKEN, "DISTILLERY_DISCORD_PORT": "eighty"}, "--port must be a number"),
    ],
)
def test_what_cannot_work_is_refused_with_a_sentence(argv: list[str], environ: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError, match=says) as caught:
        load_settings(argv, environ)
    assert TOKEN not in str(caught.value)


def test_the_script_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISCORD_BOT_TOKEN", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    assert capsys.readouterr().err.startswith("distillery-discord: no bot token")


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://cdn.discordapp.com/attachments/1/2/a.png?ex=1", True),
        ("https://media.discordapp.net/attachments/1/2/a.png", True),
        ("http://cdn.discordapp.com/attachments/1/2/a.png", False),
        ("https://cdn.discordapp.com.evil.example/a.png", False),
        ("https://user@cdn.discordapp.com/a.png", False),
        ("https://127.0.0.1/a.png", False),
    ],
)
def test_only_the_cdn_hosts_are_contacted(url: str, ok: bool) -> None:
    settings = load_settings([], {"DISCORD_BOT_TOKEN": TOKEN})
    assert on_cdn(url, settings) is ok


async def test_a_refused_attachment_is_never_fetched() -> None:
    settings = load_settings([], {"DISCORD_BOT_TOKEN": TOKEN})

    def item(url: str, size: int, name: str = "a.png", media: str | None = "image/png") -> hikari.Attachment:
        return hikari.Attachment(
            id=hikari.Snowflake(1),
            url=url,
            filename=name,
            title=None,
            description=None,
            media_type=media,
            size=size,
            proxy_url=url,
            height=64,
            width=64,
            is_ephemeral=False,
            duration=None,
            waveform=None,
        )

    class NoSession:  # any request would fail the test
        def get(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("no request may be made")

    cases = {
        "elsewhere": item("https://evil.example/a.png", 10),
        "big": item("https://cdn.discordapp.com/a.png", settings.max_image_bytes + 1),
        "text": item("https://cdn.discordapp.com/a.txt", 10, "a.txt", "text/plain"),
    }
    messages = {}
    for name, attachment in cases.items():
        with pytest.raises(ImageRefused) as caught:
            await download(NoSession(), attachment, settings)  # type: ignore[arg-type]
        messages[name] = str(caught.value)
    assert messages["elsewhere"].startswith("I could not download that picture")
    assert "the limit is 20 MB" in messages["big"]
    assert "not a picture" in messages["text"]
