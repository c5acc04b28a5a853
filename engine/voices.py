"""The voice library on disk: `voices/<name>.<wav|flac|ogg>` + `<name>.txt`
(+ optional `<name>.yaml` with speed, volume, nfe_steps).

A voice is checked and prepared the way F5-TTS wants its reference (mono,
24 kHz, quiet clips raised to the model's loudness, at most about 12 s) once,
then served from a cache keyed by the files' content hash.

Besides the user's voices, the library serves two built-ins, `builtin-en` and
`builtin-zh`: the example reference clips the f5-tts package ships, so that a
fresh install with an empty `voices/` still speaks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.audio import SAMPLE_RATE, resample
from engine.config import VOICE_NAME

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
#: F5-TTS raises quieter references to this RMS (and quietens its output back).
TARGET_RMS = 0.1
MIN_SECONDS = 1.0
MAX_SECONDS = 12.0
#: Where to look for a pause to cut an overlong clip.
TRIM_SEARCH_FROM_S = 6.0
SILENCE_RMS = 1e-4

#: engine.default_voice when the user has not set it.
IMPLICIT_DEFAULT = "default"
BUILTIN_EN = "builtin-en"
BUILTIN_ZH = "builtin-zh"


class VoiceError(Exception):
    """A voice that cannot be used; the message says which file and what to do."""


@dataclass(frozen=True, slots=True)
class VoiceFiles:
    name: str
    audio: Path
    transcript: Path
    #: Optional per-voice settings (speed, volume, NFE override).
    settings: Path | None
    #: The transcript itself, when it is not the whole of `transcript` (the
    #: built-ins, whose text is one entry of a file in the f5-tts package).
    text: str | None = None


class VoiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    speed: float = Field(1.0, ge=0.3, le=3.0)
    volume: float = Field(1.0, ge=0.0, le=2.0)
    nfe_steps: int | None = Field(None, ge=1, le=128)


@dataclass(frozen=True, slots=True)
class Voice:
    name: str
    #: Mono float32 at 24 kHz, raised to TARGET_RMS if it was quieter.
    audio: np.ndarray
    text: str
    #: The clip's own RMS before raising, to give the output the same loudness.
    rms: float
    settings: VoiceSettings
    #: Content hash of the voice's files: the key for anything derived from it.
    digest: str
    #: Set when the clip was cut to fit.
    trimmed_from_s: float | None = None

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


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


def builtin_voices(package: Path | None = None) -> list[VoiceFiles]:
    """The example references f5-tts ships (`package`: its directory), as voices.

    Their clips and transcripts are read from the installed package, so they
    always match each other; one the package no longer has is simply absent.
    """
    if package is None:
        package = _f5_tts_dir()
        if package is None:
            return []
    found = [_builtin_en(package), _builtin_zh(package)]
    return [voice for voice in found if voice is not None]


def _f5_tts_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("f5_tts")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _builtin_en(package: Path) -> VoiceFiles | None:
    """basic_ref_en.wav, with the ref_text of the example config that names it."""
    config = package / "infer" / "examples" / "basic" / "basic.toml"
    try:
        doc = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    audio, text = doc.get("ref_audio"), doc.get("ref_text")
    if not isinstance(audio, str) or not isinstance(text, str):
        return None
    return _builtin(BUILTIN_EN, package.joinpath(*PurePosixPath(audio).parts), config, text)


#: The package states the Chinese clip's transcript only in speech_edit.py's
#: commented-out example: `# audio_to_edit = ".../basic_ref_zh.wav"` followed by
#: `# origin_text = "..."`.
_ZH_TEXT = re.compile(r'basic_ref_zh\.wav"\s*#\s*origin_text\s*=\s*"([^"\n]*)"')


def _builtin_zh(package: Path) -> VoiceFiles | None:
    """basic_ref_zh.wav, with the origin_text the package's speech-editing example gives it."""
    source = package / "infer" / "speech_edit.py"
    try:
        match = _ZH_TEXT.search(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None
    if match is None:
        return None
    audio = package / "infer" / "examples" / "basic" / "basic_ref_zh.wav"
    return _builtin(BUILTIN_ZH, audio, source, match.group(1))


def _builtin(name: str, audio: Path, source: Path, text: str) -> VoiceFiles | None:
    if not audio.is_file() or not text.strip():
        return None
    return VoiceFiles(name=name, audio=audio, transcript=source, settings=None, text=text)


class VoiceLibrary:
    """Thread-safe access to prepared voices, re-read only when their files change.

    The user's voices in `directory` come first; the built-ins follow, unless a
    user voice has the same name (`builtins=False` leaves them out).
    """

    def __init__(self, directory: Path, *, builtins: bool = True) -> None:
        self.directory = directory
        self._builtins = builtin_voices() if builtins else []
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[object, ...], Voice]] = {}
        #: How often a prepared voice was served from the cache (for tests and logs).
        self.hits = 0

    def user_names(self) -> list[str]:
        """The voices in `directory` alone, without the built-ins."""
        return [v.name for v in discover_voices(self.directory)]

    def names(self) -> list[str]:
        return [v.name for v in self._all()]

    def _all(self) -> list[VoiceFiles]:
        user = discover_voices(self.directory)
        taken = {v.name for v in user}
        return user + [v for v in self._builtins if v.name not in taken]

    def files(self, name: str) -> VoiceFiles:
        if not VOICE_NAME.fullmatch(name):
            raise VoiceError(f"voice name {name!r} is not allowed (letters, digits, _ and - only)")
        for voice in self._all():
            if voice.name == name:
                return voice
        have = ", ".join(self.names()) or "none"
        raise VoiceError(f"voice {name!r} not found in {self.directory}/ (have: {have})")

    def get(self, name: str) -> Voice:
        files = self.files(name)
        stamp = files_stamp(files)
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and cached[0] == stamp:
                self.hits += 1
                return cached[1]
        digest = _digest(files)
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and cached[1].digest == digest:
                self._cache[name] = (stamp, cached[1])  # touched, not changed
                self.hits += 1
                return cached[1]
        voice = prepare_voice(files, digest)
        with self._lock:
            self._cache[name] = (stamp, voice)
        return voice


def choose_default_voice(
    library: VoiceLibrary, configured: str, language: str
) -> tuple[str, str | None]:
    """The voice to speak with when none is asked for, and why, if it is not `configured`.

    An unset engine.default_voice with no `voices/default.*` must still speak on a
    first run: the only user voice if there is exactly one, else the built-in for
    `language` ("zh": builtin-zh, anything else: builtin-en). A name the user set
    that does not exist is an error, not silently replaced. The chosen voice is
    loaded, so a broken one raises VoiceError here rather than being skipped.
    """
    if configured in library.names() or configured != IMPLICIT_DEFAULT:
        library.get(configured)  # VoiceError if missing or broken
        return configured, None
    where = f"{library.directory}/"
    user = library.user_names()
    if len(user) == 1:
        chosen = user[0]
        reason = f"no voice {configured!r} in {where}; using the only voice there, {chosen!r}"
    else:
        chosen = BUILTIN_ZH if language == "zh" else BUILTIN_EN
        if chosen not in library.names():
            library.files(configured)  # raises "not found", listing the voices there are
        found = f"no voice {configured!r} among the {len(user)} in" if user else "no voices in"
        reason = f"{found} {where}; using {chosen!r}, the f5-tts example voice"
    library.get(chosen)
    return chosen, f"{reason} (set engine.default_voice to choose)"


def files_stamp(files: VoiceFiles) -> tuple[object, ...]:
    """Sizes and modification times of a voice's files: changes when any of them does."""
    parts: list[object] = []
    for path in (files.audio, files.transcript, files.settings):
        if path is not None and path.exists():
            st = path.stat()
            parts += [st.st_mtime_ns, st.st_size]
        else:
            parts.append(None)
    return tuple(parts)


def _digest(files: VoiceFiles) -> str:
    h = hashlib.sha256()
    for path in (files.audio, files.transcript, files.settings):
        h.update(b"\0")
        if path is not None and path.is_file():
            h.update(path.read_bytes())
    if files.text is not None:
        h.update(b"\0" + files.text.encode("utf-8"))
    return h.hexdigest()


def prepare_voice(files: VoiceFiles, digest: str = "") -> Voice:
    """Read, check and normalise one voice; VoiceError says what is wrong."""
    import soundfile as sf

    if files.text is not None:
        text = " ".join(files.text.split())
    elif not files.transcript.is_file():
        raise VoiceError(
            f"voice {files.name!r}: missing transcript {files.transcript} "
            "(write exactly what the clip says into it)"
        )
    else:
        try:
            text = " ".join(files.transcript.read_text(encoding="utf-8").split())
        except (OSError, UnicodeDecodeError) as exc:
            raise VoiceError(
                f"voice {files.name!r}: cannot read {files.transcript} ({exc})"
            ) from None
    if not text:
        raise VoiceError(f"voice {files.name!r}: {files.transcript} is empty")
    settings = _read_settings(files)
    try:
        data, rate = sf.read(str(files.audio), dtype="float32", always_2d=True)
    except Exception as exc:
        raise VoiceError(f"voice {files.name!r}: unreadable audio {files.audio} ({exc})") from None
    audio = data.mean(axis=1).astype(np.float32)
    if rate != SAMPLE_RATE:
        audio = resample(audio, rate, SAMPLE_RATE)
    seconds = len(audio) / SAMPLE_RATE
    if seconds < MIN_SECONDS:
        raise VoiceError(
            f"voice {files.name!r}: clip {files.audio} is {seconds:.2f} s; it needs at least "
            f"{MIN_SECONDS:g} s (5-12 s of clear speech works best)"
        )
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if rms < SILENCE_RMS:
        raise VoiceError(f"voice {files.name!r}: clip {files.audio} is silent")
    trimmed_from = None
    if seconds > MAX_SECONDS:
        audio = audio[: trim_point(audio)]
        trimmed_from = seconds
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if rms < TARGET_RMS:
        audio = audio * (TARGET_RMS / rms)
    return Voice(
        name=files.name,
        audio=audio.astype(np.float32),
        text=text,
        rms=rms,
        settings=settings,
        digest=digest or _digest(files),
        trimmed_from_s=trimmed_from,
    )


def _read_settings(files: VoiceFiles) -> VoiceSettings:
    if files.settings is None:
        return VoiceSettings()
    try:
        raw = yaml.safe_load(files.settings.read_text(encoding="utf-8")) or {}
        return VoiceSettings.model_validate(raw)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValidationError) as exc:
        first = str(exc).splitlines()
        detail = " ".join(first[:3]) if first else type(exc).__name__
        raise VoiceError(
            f"voice {files.name!r}: bad settings in {files.settings}: {detail}"
        ) from None


def trim_point(audio: np.ndarray) -> int:
    """A sample index at most MAX_SECONDS in, at the quietest 20 ms after TRIM_SEARCH_FROM_S."""
    frame = SAMPLE_RATE // 50
    start = int(TRIM_SEARCH_FROM_S * SAMPLE_RATE) // frame
    stop = int(MAX_SECONDS * SAMPLE_RATE) // frame
    frames = audio[: stop * frame].reshape(-1, frame)[start:]
    energy = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    # Latest of the quietest frames (within 10 % of the minimum) keeps the most speech.
    quiet = np.flatnonzero(energy <= energy.min() * 1.1 + 1e-9)
    return int((start + quiet[-1]) * frame + frame // 2)
