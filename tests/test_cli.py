"""The `ishowtts` command as a user runs it: a real subprocess each time."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.botprocess import command

ROOT = Path(__file__).resolve().parent.parent


def ishowtts(*args: str) -> list[str]:
    return command(*args)


def run(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ishowtts(*args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,  # the tiny engine on 2 busy cores
        env={**os.environ, **(env or {})},
    )


def test_check_config_show_prints_effective_config_with_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("platforms:\n  twitch: {enabled: true, channels: [me], nick: mybot}\n")
    env = {"ISHOWTTS_TWITCH_TOKEN": "oauth:supersecret"}
    result = run("check-config", str(config), "--show", env=env)
    assert result.returncode in (0, 1), result.stderr
    assert "supersecret" not in result.stdout
    assert "token: '**********'" in result.stdout
    assert "channels:\n    - me" in result.stdout
    quiet = run("check-config", str(config), env=env)
    assert "token:" not in quiet.stdout
    assert "--show prints every setting" in quiet.stdout or "would refuse" in quiet.stdout


def test_check_config_default_path_is_the_shipped_file() -> None:
    result = run("check-config")
    assert result.returncode in (0, 1), result.stderr
    assert result.stdout.startswith("# config/ishowtts.yaml: valid")


def test_check_config_ends_with_what_run_would_refuse(tmp_path: Path) -> None:
    # A missing voice the user named, a missing output device, no platform: each
    # a warning line at the end, and exit 1 (run would refuse to start).
    config = tmp_path / "c.yaml"
    config.write_text(
        f"engine: {{voices_dir: {tmp_path / 'voices'}, default_voice: narrator}}\n"
        "audio: {output_device: Speakers That Are Not There}\n"
        "web: {enabled: false}\n"
    )
    result = run("check-config", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"# {config}: valid"
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert len(warnings) == 3, lines
    assert warnings[0].startswith("warning: voice 'narrator' not found")
    assert warnings[1].startswith("warning: output device 'Speakers That Are Not There'")
    assert warnings[2].startswith("warning: no chat platform is on yet")
    assert lines[-1].startswith("`ishowtts run` would refuse to start")
    assert "platforms:" not in result.stdout  # the full config only with --show


def test_bad_config_stops_with_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("queue:\n  max_size: -3\n")
    for args in (["check-config", str(config)], ["run", "--config", str(config)]):
        result = run(*args)
        assert result.returncode == 2
        assert result.stderr == "config error: queue.max_size: must be > 0, got -3\n"
        assert "Traceback" not in result.stderr


def test_voices_lists_library_and_flags_invalid_ones(tmp_path: Path) -> None:
    from tests.engine.tiny import write_voice

    voices = tmp_path / "voices"
    write_voice(voices, "alice", "Hello from Alice.", seconds=3.0)
    write_voice(voices, "short", "Too short.", seconds=0.5)
    (voices / "bob.flac").write_bytes(b"fLaC")
    (voices / "notes.md").write_text("not a voice")
    config = tmp_path / "c.yaml"
    config.write_text(f"engine: {{voices_dir: {voices}, default_voice: alice}}\n")
    result = run("voices", "--config", str(config))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == 'alice (default)  3.0 s  "Hello from Alice."'
    assert lines[1].startswith("bob  INVALID: voice 'bob': missing transcript")
    assert lines[2].startswith("short  INVALID: voice 'short': clip")
    assert "needs at least 1 s" in lines[2]
    assert lines[3].startswith("builtin-en (built-in, from the f5-tts package)  ")
    assert lines[4].startswith("builtin-zh (built-in, from the f5-tts package)  ")
    assert len(lines) == 5


def test_voices_on_a_fresh_install_lists_the_builtins_and_the_default(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"engine: {{voices_dir: {tmp_path / 'voices'}}}\n")
    result = run("voices", "--config", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("builtin-en (default) (built-in, from the f5-tts package)  ")
    assert '"Some call me nature, others call me mother nature."' in lines[0]
    assert lines[1].startswith("builtin-zh (built-in")
    assert lines[2].startswith("no voices of your own in")
    assert "NAME.wav and NAME.txt" in lines[2]


def test_say_writes_a_wav_with_the_tiny_engine(tmp_path: Path) -> None:
    import soundfile as sf

    from tests.engine.tiny import write_all, write_voice

    files = write_all(tmp_path / "ckpt")
    write_voice(tmp_path / "voices", "alice")
    config = tmp_path / "c.yaml"
    config.write_text(
        "engine:\n"
        f"  model_path: {files.model}\n"
        f"  vocoder_path: {files.vocoder_config.parent}\n"
        f"  voices_dir: {tmp_path / 'voices'}\n"
        "  default_voice: alice\n"
        "  arch: {dim: 64, depth: 2, heads: 2, ff_mult: 2, text_dim: 32, conv_layers: 1}\n"
        "logging: {level: warning}\n"
    )
    out = tmp_path / "out.wav"
    result = run(
        "say", "Hello chat. 你好！", "--config", str(config), "--out", str(out), "--seed", "1"
    )
    assert result.returncode == 0, result.stderr
    assert "real-time factor" in result.stdout
    audio, rate = sf.read(out)
    assert rate == 24000
    assert len(audio) > rate // 2
    assert abs(audio).max() > 0


def say_without_model(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`ishowtts say hi ARGS` with one voice (alice, the default) and no model files."""
    from tests.engine.tiny import write_voice

    write_voice(tmp_path / "voices", "alice")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"engine: {{model_path: {tmp_path / 'missing.safetensors'}, "
        f"voices_dir: {tmp_path / 'voices'}, default_voice: alice}}\n"
    )
    return run("say", "hi", *args, "--config", str(config), env={"HF_HUB_OFFLINE": "1"})


def test_say_without_model_files_is_one_clear_error(tmp_path: Path) -> None:
    result = say_without_model(tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("engine error: model files not found: ")
    assert "Traceback" not in result.stderr


def test_say_with_an_unknown_voice_says_so_before_touching_the_model(tmp_path: Path) -> None:
    # No model files either: the voice is what is wrong, and is said first.
    result = say_without_model(tmp_path, "--voice", "bob")
    assert result.returncode == 2
    assert result.stderr.startswith("voice error: voice 'bob' not found")
    assert "alice" in result.stderr  # what there is to pick from
    assert "model files" not in result.stderr and "Traceback" not in result.stderr


def test_devices_lists_outputs_of_the_sound_server(pulse_server: None) -> None:
    result = run("devices")
    assert result.returncode == 0, result.stderr
    # PortAudio reaches PulseAudio through ALSA's pulse plugin.
    assert any(" pulse " in line and "Hz" in line for line in result.stdout.splitlines())
    assert "audio.output_device" in result.stdout


def test_the_installed_command_is_the_cli() -> None:
    exe = shutil.which("ishowtts")
    assert exe is not None, "pip install . puts `ishowtts` on the PATH"
    result = subprocess.run([exe, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--twitch CHANNEL" in result.stdout and "--bilibili ROOM_ID" in result.stdout
