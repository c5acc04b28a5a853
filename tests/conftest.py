from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.checkpoints import ModelFiles
from tests.sink import SINK, ensure_null_sink


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    """Tiny random-weight F5-TTS + Vocos checkpoints in the published formats."""
    from tests.engine.tiny import write_all

    return write_all(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths in default configs (state file, voices/) land in a scratch dir."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def pulse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A headless PulseAudio with a null sink, as CI has no sound card.

    Autospawn is off, so no client (pactl, PortAudio's ALSA plugin) ever starts
    a stock daemon behind our back; ours is the only server and its null sink
    (norewinds=1, 48 kHz) the default sink.
    """
    if shutil.which("pulseaudio") is None:
        pytest.fail("pulseaudio is not installed: run .ci/run, or apt-get install pulseaudio")
    conf = tmp_path_factory.mktemp("pulse") / "client.conf"
    conf.write_text("autospawn = no\n")
    os.environ["PULSE_CLIENTCONFIG"] = str(conf)
    proc = None
    if not _pulse_up():
        proc = subprocess.Popen(
            [
                "pulseaudio",
                "--exit-idle-time=-1",
                "-n",
                f"--load=module-null-sink sink_name={SINK} norewinds=1 rate=48000",
                "--load=module-native-protocol-unix",
                "--load=module-cli-protocol-unix",
                "--log-target=stderr",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            if _pulse_up():
                break
            time.sleep(0.05)
        else:
            proc.kill()
            pytest.fail("pulseaudio did not start")
    ensure_null_sink()
    yield
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=10)


def _pulse_up() -> bool:
    return subprocess.run(["pactl", "info"], capture_output=True).returncode == 0
