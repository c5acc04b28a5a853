from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.voices import MAX_SECONDS, SAMPLE_RATE, TARGET_RMS, VoiceError, VoiceLibrary
from tests.engine.tiny import write_voice


def test_prepared_voice(tmp_path: Path) -> None:
    write_voice(tmp_path, "alice", "  Hello   there. ", seconds=3.0, amplitude=0.05)
    voice = VoiceLibrary(tmp_path).get("alice")
    assert voice.text == "Hello there."
    assert voice.seconds == pytest.approx(3.0)
    assert voice.audio.dtype == np.float32 and voice.audio.ndim == 1
    # Quiet clips are raised to F5-TTS's loudness; the original RMS is kept to restore it.
    assert float(np.sqrt(np.mean(voice.audio**2))) == pytest.approx(TARGET_RMS, rel=1e-3)
    assert voice.rms < TARGET_RMS


def test_stereo_downmixed_and_resampled(tmp_path: Path) -> None:
    write_voice(tmp_path, "st", seconds=2.0, rate=44100, channels=2, suffix=".flac")
    voice = VoiceLibrary(tmp_path).get("st")
    assert voice.audio.ndim == 1
    assert len(voice.audio) == pytest.approx(2.0 * SAMPLE_RATE, abs=2)


def test_long_clip_trimmed_at_a_pause(tmp_path: Path) -> None:
    path = write_voice(tmp_path, "long", seconds=15.0, gaps=False)
    audio, rate = sf.read(path)
    audio[int(9.5 * rate) : int(9.8 * rate)] = 0.0  # a clear pause
    sf.write(path, audio, rate)
    voice = VoiceLibrary(tmp_path).get("long")
    assert voice.trimmed_from_s == pytest.approx(15.0)
    assert voice.seconds <= MAX_SECONDS
    assert 9.5 <= voice.seconds <= 9.8


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: (d / "x.wav").write_bytes(b"RIFF nonsense"), "missing transcript"),
        (
            lambda d: ((d / "x.wav").write_bytes(b"RIFF nonsense"), (d / "x.txt").write_text("hi")),
            "unreadable audio",
        ),
        (lambda d: write_voice(d, "x", seconds=0.5), "needs at least 1 s"),
        (lambda d: write_voice(d, "x", amplitude=0.0), "is silent"),
        (lambda d: (write_voice(d, "x"), (d / "x.txt").write_text("  ")), "is empty"),
        (lambda d: (write_voice(d, "x"), (d / "x.yaml").write_text("speed: 9")), "bad settings"),
        (lambda d: (write_voice(d, "x"), (d / "x.yaml").write_text("pitch: 2")), "bad settings"),
    ],
)
def test_bad_voices_give_clear_errors(tmp_path: Path, setup: object, message: str) -> None:
    setup(tmp_path)  # type: ignore[operator]
    with pytest.raises(VoiceError, match=message) as info:
        VoiceLibrary(tmp_path).get("x")
    assert "voice 'x'" in str(info.value)


def test_unknown_and_hostile_names(tmp_path: Path) -> None:
    write_voice(tmp_path, "alice")
    library = VoiceLibrary(tmp_path)
    with pytest.raises(VoiceError, match=r"voice 'bob' not found in .* \(have: alice\)"):
        library.get("bob")
    for name in ("../../x", "a/b", "..", "", "x" * 65):
        with pytest.raises(VoiceError, match="not allowed"):
            library.get(name)


def test_settings_file(tmp_path: Path) -> None:
    write_voice(tmp_path, "alice")
    (tmp_path / "alice.yaml").write_text("speed: 1.2\nvolume: 0.8\nnfe_steps: 16\n")
    settings = VoiceLibrary(tmp_path).get("alice").settings
    assert (settings.speed, settings.volume, settings.nfe_steps) == (1.2, 0.8, 16)


def test_cache_hit_and_invalidation(tmp_path: Path) -> None:
    write_voice(tmp_path, "alice", "first text")
    library = VoiceLibrary(tmp_path)
    first = library.get("alice")
    assert library.get("alice") is first
    assert library.hits == 1
    # Touched but unchanged: still the same prepared voice.
    os.utime(tmp_path / "alice.txt", ns=(1, 1))
    assert library.get("alice") is first
    assert library.hits == 2
    (tmp_path / "alice.txt").write_text("second text")
    changed = library.get("alice")
    assert changed.text == "second text"
    assert changed.digest != first.digest
