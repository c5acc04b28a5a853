"""The voice library on disk: `voices/<name>.<wav|flac|ogg>` + `<name>.txt`.

Discovery only (which voices exist, by file); reading and validating the clips
belongs to the synthesis engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.config import VOICE_NAME

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclass(frozen=True, slots=True)
class VoiceFiles:
    name: str
    audio: Path
    transcript: Path
    #: Optional per-voice settings (speed, volume, NFE override).
    settings: Path | None


def discover_voices(directory: Path) -> list[VoiceFiles]:
    """Voices with an audio clip in `directory`, sorted by name; a missing dir is empty."""
    if not directory.is_dir():
        return []
    found: dict[str, VoiceFiles] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file():
            continue
        name = path.stem
        if name in found or not VOICE_NAME.fullmatch(name):
            continue
        settings = path.with_suffix(".yaml")
        found[name] = VoiceFiles(
            name=name,
            audio=path,
            transcript=path.with_suffix(".txt"),
            settings=settings if settings.is_file() else None,
        )
    return list(found.values())
