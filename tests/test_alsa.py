"""ALSA's error output goes into the log, not onto file descriptor 2."""

from __future__ import annotations

import ctypes
import os
import tempfile

import pytest
from structlog.testing import capture_logs

from bot.audio.alsa import route_alsa_errors


def test_alsa_errors_become_log_events_not_stderr_text() -> None:
    if not route_alsa_errors():
        pytest.fail("libasound2 is not installed: run .ci/run, or apt-get install libasound2")
    lib = ctypes.CDLL("libasound.so.2")
    pcm = ctypes.c_void_p()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as stderr, capture_logs() as logs:
        os.dup2(stderr.fileno(), 2)
        try:
            # Opening a PCM that does not exist makes ALSA report an error.
            result = lib.snd_pcm_open(ctypes.byref(pcm), b"no_such_pcm_device", 0, 0)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        stderr.seek(0)
        written = stderr.read()
    assert result < 0
    assert b"ALSA lib" not in written
    (event,) = [e for e in logs if e["event"] == "audio.alsa"]
    assert "Unknown PCM" in event["message"]
    assert event["function"] == "snd_pcm_open_noupdate"
    assert route_alsa_errors()  # installing twice is harmless
