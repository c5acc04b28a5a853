"""A complete config for `ishowtts run` in tests: tiny engine, two voices, scratch state."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import yaml

from engine.checkpoints import ModelFiles
from tests.engine.tiny import TINY_ARCH, write_voice


def write_run_config(tmp: Path, files: ModelFiles, **sections: Any) -> Path:
    voices = tmp / "voices"
    write_voice(voices, "default", "This is the default reference voice.")
    write_voice(voices, "mei", "这是参考音频。", seconds=2.5, amplitude=0.2)
    doc: dict[str, Any] = {
        "engine": {
            "model_path": str(files.model),
            "vocoder_path": str(files.vocoder_config.parent),
            "voices_dir": str(voices),
            "arch": TINY_ARCH.model_dump(),
            "nfe_steps": 4,
        },
        "commands": {"state_file": str(tmp / "state.json")},
        "web": {"enabled": False},
        # Bots in tests never ask the real emote services (a test that wants
        # them sets its own list and platforms.twitch.emote_apis).
        "policy": {"third_party_emotes": []},
        "logging": {"level": "info", "format": "json"},
    }
    for key, value in sections.items():
        doc[key] = {**doc.get(key, {}), **value}
    path = tmp / "ishowtts.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (for the web panel)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
