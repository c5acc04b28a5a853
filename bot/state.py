"""What moderators change from chat that must survive a restart: per-user voices,
nicknames, mutes. A small JSON file, written whole on each change."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger()


@dataclass
class SavedState:
    user_voices: dict[str, str] = field(default_factory=dict)
    nicknames: dict[str, str] = field(default_factory=dict)
    muted: list[str] = field(default_factory=list)


def load_state(path: Path) -> SavedState:
    """The saved state, or an empty one; a damaged file is logged, never fatal."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return SavedState()
    except (OSError, ValueError) as exc:
        log.warning("state.unreadable", path=str(path), error=str(exc))
        return SavedState()
    if not isinstance(raw, dict):
        log.warning("state.unreadable", path=str(path), error="not a JSON object")
        return SavedState()

    def strings(key: str) -> dict[str, str]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            return {}
        return {str(k): str(v) for k, v in value.items()}

    muted = raw.get("muted", [])
    return SavedState(
        user_voices=strings("user_voices"),
        nicknames=strings("nicknames"),
        muted=[str(m) for m in muted] if isinstance(muted, list) else [],
    )


def save_state(path: Path, state: SavedState) -> None:
    """Write atomically (temp file + rename), so a crash never leaves half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "user_voices": state.user_voices,
                    "nicknames": state.nicknames,
                    "muted": sorted(state.muted),
                },
                ensure_ascii=False,
                indent=1,
            ),
            encoding="utf-8",
        )
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("state.save_failed", path=str(path), error=str(exc))
