from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from adapters.twitch import emotes
from engine.checkpoints import ModelFiles
from tests.sink import headless_pulse


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    """Tiny random-weight F5-TTS + Vocos checkpoints in the published formats."""
    from tests.engine.tiny import write_all

    return write_all(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths in default configs (state file, voices/) land in a scratch dir,
    and so do the per-user folders (state, channel locks), for bots started here too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    # Bots built in a test never reach the real emote services: a closed loopback port.
    closed = {service: "http://127.0.0.1:9" for service in emotes.SERVICES}
    monkeypatch.setattr(emotes, "DEFAULT_APIS", closed)


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A test that runs a command in process configures logging for the whole
    process (cached loggers): later tests' `capture_logs` would see nothing."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="session")
def pulse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A headless PulseAudio with a null sink, as CI has no sound card."""
    if shutil.which("pulseaudio") is None:
        pytest.fail("pulseaudio is not installed: run .ci/run, or apt-get install pulseaudio")
    with headless_pulse(tmp_path_factory.mktemp("pulse")):
        yield
