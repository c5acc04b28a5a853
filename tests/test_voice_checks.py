"""Which voices can be used: checked in a worker thread, again only when their files change."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bot import voice_checks
from bot.voice_checks import VoiceChecks
from engine.voices import Voice, VoiceLibrary
from tests.engine.tiny import write_voice


class CountingLibrary(VoiceLibrary):
    """The real library, counting the voices it is asked to prepare, and where."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, builtins=False)
        self.asked: list[tuple[str, str]] = []

    def get(self, name: str) -> Voice:
        self.asked.append((name, threading.current_thread().name))
        return super().get(name)


async def test_voices_are_checked_off_the_loop_and_again_only_when_their_files_change(
    tmp_path: Path,
) -> None:
    write_voice(tmp_path, "good")
    write_voice(tmp_path, "hush", amplitude=0.0)
    write_voice(tmp_path, "short", seconds=0.5)
    library = CountingLibrary(tmp_path)
    checks = VoiceChecks(library)
    assert checks.problem("hush") is None and not checks.ready.is_set()  # not checked yet
    with capture_logs() as logs:
        await checks.refresh()
    assert checks.ready.is_set()
    assert [(c.name, c.ok) for c in checks.checks] == [
        ("good", True),
        ("hush", False),
        ("short", False),
    ]
    assert checks.problem("hush") == f"clip {tmp_path / 'hush.wav'} is silent"
    assert "needs at least 1 s" in str(checks.problem("short"))
    assert checks.usable() == ["good"]
    assert sorted(e["voice"] for e in logs if e["event"] == "voice.unusable") == ["hush", "short"]
    assert all(thread != threading.current_thread().name for _, thread in library.asked)

    library.asked.clear()
    with capture_logs() as logs:
        await checks.refresh()
    assert library.asked == []  # nothing changed: nothing read, nothing logged again
    assert not logs

    write_voice(tmp_path, "hush")  # fixed
    (tmp_path / "good.txt").unlink()  # broken
    await checks.refresh()
    assert sorted(name for name, _ in library.asked) == ["good", "hush"]
    assert checks.problem("hush") is None
    assert "missing transcript" in str(checks.problem("good"))


async def test_run_follows_new_voices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voice_checks, "CHECK_EVERY_S", 0.05)
    checks = VoiceChecks(VoiceLibrary(tmp_path, builtins=False))
    task = asyncio.create_task(checks.run())
    try:
        await asyncio.wait_for(checks.ready.wait(), 10)
        assert checks.checks == ()
        write_voice(tmp_path, "new")
        async with asyncio.timeout(10):
            while checks.usable() != ["new"]:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
