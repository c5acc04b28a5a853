from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bot.config import Config, ConfigError, load_config, parse_config

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "ishowtts.yaml"


def error_lines(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, environ=environ or {})
    return info.value.lines


def test_shipped_file_is_exactly_the_defaults() -> None:
    # The YAML documents the defaults; if a key is added to the schema and not
    # to the file (or the values drift), this fails.
    assert yaml.safe_load(SHIPPED.read_text()) == Config().model_dump(mode="json")
    assert load_config(SHIPPED, environ={}) == Config()


def test_every_key_in_shipped_file_is_commented() -> None:
    lines = SHIPPED.read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        if re.match(r"^\s*[\w]+:", line) and not lines[i - 1].lstrip().startswith("#"):
            undocumented.append(line.strip())
    assert undocumented == []


def test_empty_file_gives_defaults() -> None:
    assert parse_config("", environ={}) == Config()


def test_bad_value_names_key_and_bound() -> None:
    assert error_lines("queue:\n  max_size: -3\n") == [
        "config error: queue.max_size: must be > 0, got -3"
    ]


def test_unknown_key_lists_allowed_and_suggests() -> None:
    (line,) = error_lines("queue:\n  max_sise: 10\n")
    assert line.startswith("config error: queue.max_sise: unknown key; allowed: max_size, ttl_s")
    assert "did you mean 'max_size'?" in line


def test_unknown_top_level_section() -> None:
    (line,) = error_lines("plattforms: {}\n")
    assert line.startswith("config error: plattforms: unknown key; allowed: platforms, policy")


def test_unknown_key_inside_list_item() -> None:
    (line,) = error_lines("policy:\n  replacements:\n    - {pattern: a, replace: b}\n")
    assert line.startswith("config error: policy.replacements.0.replace: unknown key; allowed:")
    assert "did you mean 'replacement'?" in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("queue:\n  max_size: lots\n", "queue.max_size: must be a whole number, got 'lots'"),
        ("queue:\n  ttl_s: soon\n", "queue.ttl_s: must be a number, got 'soon'"),
        ("web:\n  enabled: maybe\n", "web.enabled: must be true or false, got 'maybe'"),
        ("policy:\n  link_word: 5\n", "policy.link_word: must be text, got 5"),
        ("policy:\n  blocked_words: ugh\n", "policy.blocked_words: must be a list, got 'ugh'"),
        ("queue: 5\n", "queue: must be a mapping of keys, got 5"),
    ],
)
def test_wrong_types(text: str, expected: str) -> None:
    assert error_lines(text) == [f"config error: {expected}"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "policy:\n  read_mode: loud\n",
            "policy.read_mode: must be one of 'all', 'command', 'paid' or 'reward', got 'loud'",
        ),
        ("audio:\n  volume: 150\n", "audio.volume: must be <= 100, got 150"),
        ("web:\n  port: 0\n", "web.port: must be >= 1, got 0"),
        (
            "engine:\n  device: gpu\n",
            "engine.device: must be auto, cpu, mps, cuda or cuda:N, got 'gpu'",
        ),
        ("engine:\n  batch: {max_size: 0}\n", "engine.batch.max_size: must be >= 1, got 0"),
        (
            "engine:\n  default_voice: ../../etc/passwd\n",
            "engine.default_voice: must be a voice file name without extension, "
            "got '../../etc/passwd'",
        ),
        (
            "policy:\n  speak_events: [sub, dance]\n",
            "policy.speak_events.1: must be one of 'chat', 'sub', 'raid', 'gift' or 'guard', "
            "got 'dance'",
        ),
        ("policy:\n  min_paid: {bits: -1}\n", "policy.min_paid.bits: must be >= 0, got -1"),
        (
            "platforms:\n  twitch: {enabled: true}\n",
            "platforms.twitch.channels: enabled but no channel given",
        ),
        (
            "platforms:\n  twitch: {channels: ['#Bad Name']}\n",
            "platforms.twitch.channels: must be Twitch logins (letters, digits, _; up to 25), "
            "got 'bad name'",
        ),
        (
            "platforms:\n  twitch: {url: 'irc.chat.twitch.tv:6697'}\n",
            "platforms.twitch.url: must be a ws:// or wss:// address, "
            "got 'irc.chat.twitch.tv:6697'",
        ),
        (
            "platforms:\n  twitch: {emote_apis: {7tv: 'ftp://mirror'}}\n",
            "platforms.twitch.emote_apis: must be an http:// or https:// address, "
            "got 'ftp://mirror'",
        ),
        (
            "platforms:\n  twitch: {emote_apis: {seventv: 'https://mirror'}}\n",
            "platforms.twitch.emote_apis.seventv.[key]: must be one of '7tv', 'bttv' or 'ffz', "
            "got 'seventv'",
        ),
        (
            "policy:\n  third_party_emotes: [7tv, twitch]\n",
            "policy.third_party_emotes.1: must be one of '7tv', 'bttv' or 'ffz', got 'twitch'",
        ),
        (
            "platforms:\n  bilibili: {enabled: true}\n",
            "platforms.bilibili.room_id: enabled but no room id given",
        ),
        (
            "web:\n  host: 0.0.0.0\n",
            "web.token: binding to 0.0.0.0 (not loopback) needs a token "
            "(set web.token or ISHOWTTS_WEB_TOKEN)",
        ),
        (
            "serve:\n  host: 0.0.0.0\n",
            "serve.token: listening on 0.0.0.0 (not loopback) needs a token "
            "(set serve.token or ISHOWTTS_SERVE_TOKEN)",
        ),
        (
            "engine:\n  url: 'ftp://gpu-box:8766'\n",
            "engine.url: must be an engine server address like ws://gpu-box:8766, "
            "got 'ftp://gpu-box:8766'",
        ),
        (
            "engine:\n  url: 'ws://user:pw@gpu-box:8766'\n",
            "engine.url: must be an engine server address like ws://gpu-box:8766, "
            "got 'ws://user:pw@gpu-box:8766'",
        ),
        (
            "engine:\n  url: 'ws://gpu-box:99999'\n",
            "engine.url: must be an engine server address like ws://gpu-box:8766, "
            "got 'ws://gpu-box:99999'",
        ),
        (
            "engine:\n  wire_format: mp3\n",
            "engine.wire_format: must be one of 'float32' or 'int16', got 'mp3'",
        ),
        (
            "policy:\n  templates: {chat: '{user} {msg}'}\n",
            "policy.templates.en.chat: unknown placeholder {msg}; "
            "allowed: {amount}, {text}, {user}",
        ),
        (
            "commands:\n  permissions: {skipp: [everyone]}\n",
            "commands.permissions: unknown command 'skipp'; allowed: voice, voices, skip, clear, "
            "pause, resume, mute, unmute, volume, mode, nick, uservoice, status "
            "(did you mean 'skip'?)",
        ),
        (
            "commands:\n  permissions: {skip: [mods]}\n",
            "commands.permissions.skip.0: must be one of 'broadcaster', 'moderator', 'vip', "
            "'subscriber', 'guard' or 'everyone', got 'mods'",
        ),
    ],
)
def test_bad_values(text: str, expected: str) -> None:
    assert error_lines(text) == [f"config error: {expected}"]


def test_bad_regex_is_a_config_error_naming_the_item() -> None:
    (line,) = error_lines("policy:\n  replacements:\n    - {pattern: '(unclosed'}\n")
    assert line.startswith(
        "config error: policy.replacements.0.pattern: not a valid regular expression"
    )
    assert "'(unclosed'" in line


def test_several_errors_one_line_each() -> None:
    lines = error_lines("queue:\n  max_size: 0\n  ttl_s: -1\n")
    assert lines == [
        "config error: queue.max_size: must be > 0, got 0",
        "config error: queue.ttl_s: must be > 0, got -1",
    ]


def test_invalid_yaml_names_line() -> None:
    (line,) = error_lines("queue:\n  max_size: [1,\n")
    assert line.startswith("config error: <config>: line ")
    assert "not valid YAML" in line


def test_top_level_must_be_mapping() -> None:
    assert error_lines("- a\n- b\n") == [
        "config error: <config>: must be a mapping of sections at top level"
    ]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.lines == [
        f"config error: {tmp_path / 'nope.yaml'}: file not found "
        "(copy config/ishowtts.yaml and edit it)"
    ]


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"queue:\n  max_size: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.lines[0].startswith(f"config error: {path}: cannot read")


def test_secrets_from_environment_override_file() -> None:
    config = parse_config(
        "platforms:\n  twitch: {channels: [me], token: 'oauth:fromfile'}\n",
        environ={
            "ISHOWTTS_TWITCH_TOKEN": "oauth:fromenv",
            "ISHOWTTS_TWITCH_NICK": "mybot",
            "ISHOWTTS_BILIBILI_COOKIE": "SESSDATA=x",
            "ISHOWTTS_WEB_TOKEN": "hunter2",
        },
    )
    assert config.platforms.twitch.token.get_secret_value() == "oauth:fromenv"
    assert config.platforms.twitch.nick == "mybot"
    assert config.platforms.bilibili.cookie.get_secret_value() == "SESSDATA=x"
    assert config.web.token.get_secret_value() == "hunter2"


def test_engine_server_tokens_from_environment() -> None:
    config = parse_config(
        "serve: {host: 0.0.0.0}\nengine: {url: 'ws://gpu-box:8766'}\n",
        environ={"ISHOWTTS_SERVE_TOKEN": "srv-s3cret", "ISHOWTTS_ENGINE_TOKEN": "cli-s3cret"},
    )
    assert config.serve.token.get_secret_value() == "srv-s3cret"
    assert config.engine.token.get_secret_value() == "cli-s3cret"
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    ("given", "endpoint"),
    [
        ("ws://gpu-box:8766", "ws://gpu-box:8766/ws"),
        ("ws://gpu-box:8766/", "ws://gpu-box:8766/ws"),
        ("http://192.168.1.20:8766", "ws://192.168.1.20:8766/ws"),
        ("https://tts.example.com", "wss://tts.example.com/ws"),
        ("wss://tts.example.com/engine", "wss://tts.example.com/engine"),
        ("ws://[::1]:8766", "ws://[::1]:8766/ws"),
    ],
)
def test_engine_url_is_the_websocket_to_open(given: str, endpoint: str) -> None:
    config = parse_config(f"engine: {{url: '{given}'}}\n", environ={})
    assert config.engine.url == endpoint


def test_empty_environment_variable_is_ignored() -> None:
    config = parse_config("web: {token: fromfile}\n", environ={"ISHOWTTS_WEB_TOKEN": ""})
    assert config.web.token.get_secret_value() == "fromfile"


def test_web_token_from_env_allows_public_bind() -> None:
    config = parse_config("web: {host: 0.0.0.0}\n", environ={"ISHOWTTS_WEB_TOKEN": "s3cret"})
    assert config.web.host == "0.0.0.0"


def test_secrets_are_masked_when_dumped() -> None:
    config = parse_config("web: {token: hunter2}\n", environ={})
    dumped = config.model_dump(mode="json")
    assert dumped["web"]["token"] == "**********"
    assert "hunter2" not in repr(config)


def test_token_without_nick_is_refused() -> None:
    assert error_lines("platforms:\n  twitch: {token: 'oauth:x'}\n") == [
        "config error: platforms.twitch.nick: a token needs the bot account's login as nick"
    ]


def test_permissions_override_keeps_other_defaults() -> None:
    config = parse_config("commands:\n  permissions: {status: [everyone]}\n", environ={})
    assert config.commands.allowed_roles("status") is None
    assert config.commands.permissions["skip"] == ["broadcaster", "moderator"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'platforms:\n  twitch:\n    token: ["oauth:abc123secret"]\n',
            "platforms.twitch.token: must be text, got a list (value hidden: secret)",
        ),
        (
            "platforms:\n  bilibili:\n    cookie: {SESSDATA: abc123secret}\n",
            "platforms.bilibili.cookie: must be text, got a mapping (value hidden: secret)",
        ),
        (
            "web:\n  token: 1234567\n",
            "web.token: must be text, got a number (value hidden: secret)",
        ),
        # A section holding a secret, written as something else: its text is echoed whole.
        (
            "platforms:\n  twitch: token=oauth:abc123secret\n",
            "platforms.twitch: must be a mapping of keys, got text (value hidden: secret)",
        ),
    ],
)
def test_secrets_are_never_echoed_in_errors(text: str, expected: str) -> None:
    assert error_lines(text) == [f"config error: {expected}"]
    assert not any(s in expected for s in ("abc123secret", "1234567"))


def test_values_beside_secrets_are_still_shown() -> None:
    assert error_lines("web:\n  port: lots\n") == [
        "config error: web.port: must be a whole number, got 'lots'"
    ]
    assert error_lines("platforms:\n  twitch:\n    nick: [a]\n") == [
        "config error: platforms.twitch.nick: must be text, got ['a']"
    ]


def test_open_mode_names_each_missing_setting_and_its_variable() -> None:
    text = "platforms:\n  bilibili: {enabled: true, mode: open, app_id: 7}\n"
    assert error_lines(text) == [
        "config error: platforms.bilibili.mode: open needs identity_code (or "
        "ISHOWTTS_BILIBILI_CODE), access_key_id (or ISHOWTTS_BILIBILI_ACCESS_KEY_ID), "
        "access_key_secret (or ISHOWTTS_BILIBILI_ACCESS_KEY_SECRET)"
    ]


def test_open_mode_from_the_environment_needs_no_room_id() -> None:
    config = parse_config(
        "platforms:\n  bilibili: {enabled: true, mode: open}\n",
        environ={
            "ISHOWTTS_BILIBILI_CODE": "C8AB6X2LKZ4QP",
            "ISHOWTTS_BILIBILI_APP_ID": "1650000000001",
            "ISHOWTTS_BILIBILI_ACCESS_KEY_ID": "key-id",
            "ISHOWTTS_BILIBILI_ACCESS_KEY_SECRET": "key-secret",
        },
    )
    bilibili = config.platforms.bilibili
    assert (bilibili.mode, bilibili.room_id, bilibili.app_id) == ("open", 0, 1650000000001)
    assert bilibili.identity_code.get_secret_value() == "C8AB6X2LKZ4QP"
    dumped = repr(config) + str(config.model_dump(mode="json"))
    assert not any(s in dumped for s in ("C8AB6X2LKZ4QP", "key-id", "key-secret"))


@pytest.mark.parametrize("key", ["identity_code", "access_key_id", "access_key_secret"])
def test_open_platform_secrets_are_never_echoed(key: str) -> None:
    (line,) = error_lines(f"platforms:\n  bilibili:\n    {key}: [abc123secret]\n")
    assert line == (
        f"config error: platforms.bilibili.{key}: must be text, got a list (value hidden: secret)"
    )


def test_output_device_none_is_no_device_and_needs_the_panel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # No device to look for (the overlay's browser audio only): `run` and
    # `check-config` accept it, as long as the panel serves the overlay.
    import bot.audio.player
    from bot.cli import main
    from tests.runconfig import free_port

    def no_lookup(_: object) -> None:
        raise AssertionError("looked for an output device")

    monkeypatch.setattr(bot.audio.player, "find_output_device", no_lookup)
    assert parse_config("audio: {output_device: none}\n", environ={}).audio.output_device == "none"
    path = tmp_path / "c.yaml"
    path.write_text(
        "platforms: {twitch: {enabled: true, channels: [me]}}\n"
        f"audio: {{output_device: None}}\nweb: {{port: {free_port()}}}\n"
    )
    assert main(["check-config", str(path)]) == 0, capsys.readouterr().out
    path.write_text(
        "platforms: {twitch: {enabled: true, channels: [me]}}\n"
        "audio: {output_device: none}\nweb: {enabled: false}\n"
    )
    assert main(["check-config", str(path)]) == 1
    (warning,) = [line for line in capsys.readouterr().out.splitlines() if "warning:" in line]
    assert "audio.output_device is none but web.enabled is false" in warning
