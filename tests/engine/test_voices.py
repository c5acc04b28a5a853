from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.audio import SAMPLE_RATE
from engine.voices import (
    MAX_SECONDS,
    TARGET_RMS,
    VoiceError,
    VoiceLibrary,
    builtin_voices,
    choose_default_voice,
)
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
    with pytest.raises(
        VoiceError, match=r"voice 'bob' not found in .* \(have: alice, builtin-en, builtin-zh\)"
    ):
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


CJK = re.compile(r"[\u4e00-\u9fff]")


def test_builtin_voices_from_the_installed_package(tmp_path: Path) -> None:
    import f5_tts

    package = Path(next(iter(f5_tts.__path__)))
    library = VoiceLibrary(tmp_path / "no-such-folder")
    assert library.names() == ["builtin-en", "builtin-zh"]
    en, zh = library.get("builtin-en"), library.get("builtin-zh")
    for voice in (en, zh):
        assert 3.0 <= voice.seconds <= MAX_SECONDS and voice.trimmed_from_s is None
        assert voice.audio.dtype == np.float32 and voice.audio.ndim == 1
        assert library.files(voice.name).audio.is_relative_to(package)
    assert en.text == "Some call me nature, others call me mother nature."
    assert not CJK.search(en.text)
    assert len(CJK.findall(zh.text)) >= 5


def test_builtins_cached_like_user_voices(tmp_path: Path) -> None:
    library = VoiceLibrary(tmp_path)
    first = library.get("builtin-en")
    assert library.get("builtin-en") is first
    assert library.hits == 1
    assert first.digest and first.digest != library.get("builtin-zh").digest


def test_user_voices_listed_before_builtins(tmp_path: Path) -> None:
    write_voice(tmp_path, "zed")
    write_voice(tmp_path, "alice")
    assert VoiceLibrary(tmp_path).names() == ["alice", "zed", "builtin-en", "builtin-zh"]
    assert VoiceLibrary(tmp_path, builtins=False).names() == ["alice", "zed"]


def test_user_voice_shadows_a_builtin(tmp_path: Path) -> None:
    write_voice(tmp_path, "builtin-en", "My own voice.")
    library = VoiceLibrary(tmp_path)
    assert library.names() == ["builtin-en", "builtin-zh"]
    assert library.get("builtin-en").text == "My own voice."


def test_builtins_absent_when_the_package_layout_differs(tmp_path: Path) -> None:
    import f5_tts

    assert builtin_voices(tmp_path) == []
    # A copy of the package's own files gives both; each goes when its source does.
    real = Path(next(iter(f5_tts.__path__))) / "infer"
    shutil.copytree(real / "examples" / "basic", tmp_path / "infer" / "examples" / "basic")
    shutil.copyfile(real / "speech_edit.py", tmp_path / "infer" / "speech_edit.py")
    assert [v.name for v in builtin_voices(tmp_path)] == ["builtin-en", "builtin-zh"]
    config = tmp_path / "infer" / "examples" / "basic" / "basic.toml"
    config.write_text('ref_audio = "infer/examples/basic/gone.wav"\nref_text = "Hi."\n')
    assert [v.name for v in builtin_voices(tmp_path)] == ["builtin-zh"]
    config.write_text("ref_audio = [")  # not TOML
    (tmp_path / "infer" / "speech_edit.py").write_text("origin_text = 'elsewhere'\n")
    assert builtin_voices(tmp_path) == []


def test_configured_voice_that_exists_is_used(tmp_path: Path) -> None:
    write_voice(tmp_path, "default")
    write_voice(tmp_path, "alice")
    library = VoiceLibrary(tmp_path)
    assert choose_default_voice(library, "default", "en") == ("default", None)
    assert choose_default_voice(library, "alice", "zh") == ("alice", None)
    assert choose_default_voice(library, "builtin-zh", "en") == ("builtin-zh", None)


def test_implicit_default_falls_back_to_the_only_user_voice(tmp_path: Path) -> None:
    write_voice(tmp_path, "alice")
    name, reason = choose_default_voice(VoiceLibrary(tmp_path), "default", "zh")
    assert name == "alice"
    assert reason is not None and "'alice'" in reason


@pytest.mark.parametrize(
    ("user_voices", "language", "expected"),
    [
        ([], "en", "builtin-en"),
        ([], "zh", "builtin-zh"),
        ([], "fr", "builtin-en"),
        (["alice", "bob"], "en", "builtin-en"),
        (["alice", "bob"], "zh", "builtin-zh"),
    ],
)
def test_implicit_default_falls_back_to_a_builtin(
    tmp_path: Path, user_voices: list[str], language: str, expected: str
) -> None:
    for voice in user_voices:
        write_voice(tmp_path, voice)
    name, reason = choose_default_voice(VoiceLibrary(tmp_path), "default", language)
    assert name == expected
    assert reason is not None and expected in reason


@pytest.mark.parametrize("user_voices", [[], ["alice", "bob"]])
def test_implicit_default_without_builtins_is_not_found(
    tmp_path: Path, user_voices: list[str]
) -> None:
    for voice in user_voices:
        write_voice(tmp_path, voice)
    library = VoiceLibrary(tmp_path, builtins=False)
    with pytest.raises(VoiceError, match=r"voice 'default' not found in .* \(have: "):
        choose_default_voice(library, "default", "en")


def test_explicit_voice_that_is_missing_is_an_error(tmp_path: Path) -> None:
    write_voice(tmp_path, "alice")
    library = VoiceLibrary(tmp_path)
    with pytest.raises(
        VoiceError, match=r"voice 'bob' not found in .* \(have: alice, builtin-en, builtin-zh\)"
    ):
        choose_default_voice(library, "bob", "en")


def test_broken_voices_are_not_skipped(tmp_path: Path) -> None:
    write_voice(tmp_path, "alice")
    (tmp_path / "alice.txt").unlink()
    with pytest.raises(VoiceError, match="voice 'alice': missing transcript"):
        choose_default_voice(VoiceLibrary(tmp_path), "default", "en")
    write_voice(tmp_path, "default", seconds=0.5)
    with pytest.raises(VoiceError, match=r"voice 'default'.*needs at least 1 s"):
        choose_default_voice(VoiceLibrary(tmp_path), "default", "en")
