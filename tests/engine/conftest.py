from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.checkpoints import ModelFiles
from engine.config import EngineConfig
from engine.synth import Engine
from engine.voices import VoiceLibrary
from tests.engine.tiny import TINY_ARCH, write_voice


@pytest.fixture
def voices_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "voices"
    write_voice(directory, "alice", "This is the reference clip.")
    write_voice(directory, "mei", "这是参考音频。", seconds=2.5)
    return directory


@pytest.fixture
async def engine(tiny_files: ModelFiles, voices_dir: Path) -> AsyncIterator[Engine]:
    eng = Engine(EngineConfig(arch=TINY_ARCH, nfe_steps=8), VoiceLibrary(voices_dir), tiny_files)
    eng.start()
    await eng.wait_ready()
    yield eng
    eng.close()
