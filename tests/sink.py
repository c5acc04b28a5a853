"""Read back what reaches the PulseAudio null sink, through its monitor."""

from __future__ import annotations

import subprocess
import threading
import time

import numpy as np

RATE = 48_000
#: The null sink the test sound server plays into.
SINK = "ishowtts_out"


class SinkCapture:
    """`parec` on the default sink's monitor, read in a thread (the recipe in
    shared/design/AUDIO-TESTING.md: start 0.5 s early, read from a pipe)."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [
                "parec",
                "-d",
                "@DEFAULT_MONITOR@",
                "--format=float32le",
                f"--rate={RATE}",
                "--channels=1",
                "--raw",
                "--latency-msec=20",
            ],
            stdout=subprocess.PIPE,
        )
        self._data = bytearray()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        time.sleep(0.5)

    def _read(self) -> None:
        assert self._proc.stdout is not None
        while chunk := self._proc.stdout.read(4096):
            self._data += chunk

    def samples(self) -> np.ndarray:
        usable = len(self._data) // 4 * 4
        return np.frombuffer(bytes(self._data[:usable]), dtype=np.float32)

    def stop(self) -> np.ndarray:
        time.sleep(0.3)
        self._proc.terminate()
        self._proc.wait(timeout=5)
        self._thread.join(timeout=5)
        return self.samples()


def active_span(audio: np.ndarray, threshold: float = 1e-3) -> tuple[int, int]:
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if not len(loud):
        return 0, 0
    return int(loud[0]), int(loud[-1]) + 1


def tone(
    seconds: float, freq: float = 440.0, amplitude: float = 0.25, rate: int = 24_000
) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def ensure_null_sink() -> None:
    """Our null sink exists (norewinds=1: see AUDIO-TESTING.md) and is the default."""
    sinks = subprocess.run(["pactl", "list", "short", "sinks"], capture_output=True, text=True)
    if SINK not in sinks.stdout:
        subprocess.run(
            [
                "pactl",
                "load-module",
                "module-null-sink",
                f"sink_name={SINK}",
                "norewinds=1",
                "rate=48000",
            ],
            check=True,
            capture_output=True,
        )
    subprocess.run(["pactl", "set-default-sink", SINK], check=True)


def remove_null_sink() -> None:
    """Unload the null sink: with no other sink, open streams die, like an unplugged device."""
    modules = subprocess.run(
        ["pactl", "list", "short", "modules"], capture_output=True, text=True, check=True
    ).stdout
    for line in modules.splitlines():
        if "module-null-sink" in line and f"sink_name={SINK}" in line:
            subprocess.run(["pactl", "unload-module", line.split()[0]], check=True)
