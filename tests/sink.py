"""Read back what reaches the PulseAudio null sink, through its monitor."""

from __future__ import annotations

import math
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


@contextmanager
def headless_pulse(scratch: Path) -> Iterator[None]:
    """A PulseAudio server with our null sink as the default sink, for as long as needed.

    Autospawn is off, so no client (pactl, PortAudio's ALSA plugin) ever starts
    a stock daemon behind our back; ours is the only server and its null sink
    (norewinds=1, 48 kHz) the default sink. One already running is reused.
    """
    conf = scratch / "client.conf"
    conf.write_text("autospawn = no\n")
    os.environ["PULSE_CLIENTCONFIG"] = str(conf)
    log_file = scratch / "pulseaudio.log"
    proc = None
    if not _pulse_up():
        proc = subprocess.Popen(
            [
                "pulseaudio",
                "--exit-idle-time=-1",
                # Its CPU watchdog ends the daemon after a spell of heavy use;
                # the tests keep both cores busy for minutes at a time.
                "--no-cpu-limit",
                "-n",
                f"--load=module-null-sink sink_name={SINK} norewinds=1 rate=48000",
                "--load=module-native-protocol-unix",
                "--load=module-cli-protocol-unix",
                f"--log-target=file:{log_file}",
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
            raise RuntimeError("pulseaudio did not start")
    ensure_null_sink()
    try:
        yield
    finally:
        if proc is not None:
            code = proc.poll()
            if code is None:
                proc.terminate()
                proc.wait(timeout=10)
            else:  # every audio test after this point failed for want of a server
                tail = log_file.read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(
                    f"the test sound server exited by itself (code {code}); its log ends:\n"
                    + "\n".join(tail)
                )


def _pulse_up() -> bool:
    return subprocess.run(["pactl", "info"], capture_output=True).returncode == 0


class LevelMeter:
    """The sink's peak level over a long run, keeping no audio.

    Unlike SinkCapture it survives the sink going away: when `parec` ends (the
    sink was unloaded) it is started again until the sink is back.
    """

    def __init__(self, over: float = 10 ** (-1 / 20)) -> None:
        self.over = over
        self.peak = 0.0
        self.samples = 0
        self.samples_over = 0
        self.restarts = 0
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        time.sleep(0.5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._proc = subprocess.Popen(
                [
                    "parec",
                    "-d",
                    f"{SINK}.monitor",
                    "--format=float32le",
                    f"--rate={RATE}",
                    "--channels=1",
                    "--raw",
                    "--latency-msec=20",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            assert self._proc.stdout is not None
            rest = b""
            while chunk := self._proc.stdout.read(8192):
                data = rest + chunk
                usable = len(data) // 4 * 4
                block = np.abs(np.frombuffer(data[:usable], dtype=np.float32))
                rest = data[usable:]
                if len(block):
                    self.peak = max(self.peak, float(block.max()))
                    self.samples += len(block)
                    self.samples_over += int((block > self.over).sum())
            self._proc.wait()
            if not self._stopping.is_set():
                self.restarts += 1
                time.sleep(0.2)

    @property
    def peak_dbfs(self) -> float:
        return 20 * float(np.log10(self.peak)) if self.peak > 0 else -math.inf

    def stop(self) -> None:
        self._stopping.set()
        if self._proc is not None:
            self._proc.terminate()
        self._thread.join(timeout=5)
