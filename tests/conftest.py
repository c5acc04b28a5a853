from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def pulse_server() -> Iterator[None]:
    """A headless PulseAudio with a null sink, as OBS-less CI has no sound card."""
    if shutil.which("pulseaudio") is None:
        pytest.fail("pulseaudio is not installed: run .ci/run, or apt-get install pulseaudio")
    if subprocess.run(["pactl", "info"], capture_output=True).returncode == 0:
        yield
        return
    proc = subprocess.Popen(
        [
            "pulseaudio",
            "--exit-idle-time=-1",
            "-n",
            "--load=module-null-sink sink_name=ishowtts_out norewinds=1 rate=48000",
            "--load=module-native-protocol-unix",
            "--load=module-cli-protocol-unix",
            "--log-target=stderr",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if subprocess.run(["pactl", "info"], capture_output=True).returncode == 0:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("pulseaudio did not start")
    yield
    proc.terminate()
    proc.wait(timeout=10)
