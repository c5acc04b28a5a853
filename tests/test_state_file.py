"""The state file: a damaged one is kept aside, never overwritten; it stays
bounded; a command flood does not write it once per command."""

from __future__ import annotations

import json
from pathlib import Path

from structlog.testing import capture_logs

from bot.chat import mod_changes as state
from bot.chat.queue import SpeechQueue
from bot.config import Config
from bot.control import Control
from tests.factories import chat


def make_control(state_file: Path) -> Control:
    config = Config.model_validate({"commands": {"state_file": str(state_file)}})
    return Control(config, SpeechQueue(config.queue), lambda: ["alice"])


def test_a_damaged_file_is_moved_aside_and_never_overwritten(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    damaged = '{"muted": ["troll"], "nicknames": {"bob": "Rob'  # cut short by a crash
    state_file.write_text(damaged, encoding="utf-8")
    with capture_logs() as logs:
        control = make_control(state_file)
    (event,) = [e for e in logs if e["event"] == "state.corrupt"]
    assert event["log_level"] == "error"
    assert event["path"] == str(state_file)
    aside = Path(event["moved_to"])
    assert aside.parent == tmp_path and aside.name.startswith("state.json.corrupt-")
    assert aside.read_text(encoding="utf-8") == damaged
    # A change writes a fresh file; the damaged one stays for the user to recover.
    control.policy_state.saw(chat("hi", user_name="Troll", user_id="1"))
    assert control.mute("troll").ok
    control.flush()
    assert json.loads(state_file.read_text(encoding="utf-8"))["muted"] == {"twitch:1": "Troll"}
    assert aside.read_text(encoding="utf-8") == damaged


def test_a_file_that_is_not_an_object_is_moved_aside(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_text("[1, 2, 3]", encoding="utf-8")
    with capture_logs() as logs:
        make_control(state_file)
    assert [e["event"] for e in logs] == ["state.corrupt"]
    assert not state_file.exists()


async def test_entries_are_capped_oldest_first(tmp_path: Path) -> None:
    control = make_control(tmp_path / "state.json")
    extra = 5
    with capture_logs() as logs:
        for n in range(state.MAX_ENTRIES + extra):
            control.policy_state.saw(chat("hi", user_name=f"user{n}", user_id=str(n)))
            assert control.set_nick(f"user{n}", f"nick {n}").ok
    nicknames = control.policy_state.nicknames
    assert len(nicknames) == state.MAX_ENTRIES
    assert min(int(key[1]) for key in nicknames) == extra
    capped = [e for e in logs if e["event"] == "state.capped"]
    assert len(capped) == extra
    assert capped[0]["map"] == "nicknames"
    await control.close()
    saved = json.loads((tmp_path / "state.json").read_text(encoding="utf-8"))
    assert len(saved["nicknames"]) == state.MAX_ENTRIES
    assert len(saved["names"]) == state.MAX_ENTRIES


async def test_a_command_flood_is_written_once_off_the_loop_and_flushed_at_close(
    tmp_path: Path,
) -> None:
    state_file = tmp_path / "state.json"
    control = make_control(state_file)
    control.policy_state.saw(chat("hi", user_name="Bob", user_id="7"))
    for n in range(200):
        assert control.set_nick("bob", f"Bob the {n}th").ok
    # Nothing was written on the event loop while the commands ran.
    assert not state_file.exists()
    await control.close()
    saved = json.loads(state_file.read_text(encoding="utf-8"))
    assert saved["nicknames"] == {"twitch:7": "Bob the 199th"}
