"""Stopping the bot on every OS: Ctrl-C through the event loop where it takes
signal handlers (Unix), through `signal.signal` where it cannot (Windows), a
second Ctrl-C at once, and no open page holding the exit up."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from bot.signals import StopOnSignal, stop_signals
from engine.checkpoints import ModelFiles
from tests.botprocess import BotProcess, command
from tests.runconfig import free_port, write_run_config

#: Runs `ishowtts` with an event loop that has no signal handlers, as on Windows.
WINDOWS_LIKE_LOOP = (
    "import asyncio, sys\n"
    "def refuse(*args, **kwargs):\n"
    "    raise NotImplementedError\n"
    "asyncio.unix_events._UnixSelectorEventLoop.add_signal_handler = refuse\n"
    "from bot.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


class _NoSignalLoop:
    """A loop that, as on Windows, cannot take signal handlers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def add_signal_handler(self, *_: object) -> None:
        raise NotImplementedError

    def remove_signal_handler(self, *_: object) -> bool:
        raise AssertionError("no handler was added to the loop")

    def call_soon_threadsafe(self, *args: object) -> object:
        return self._loop.call_soon_threadsafe(*args)  # type: ignore[arg-type]


def _handed_back_to_the_os() -> bool:
    return all(signal.getsignal(sig) == signal.SIG_DFL for sig in stop_signals())


async def test_without_loop_signal_handlers_the_first_signal_stops_the_next_is_the_oss() -> None:
    stop = asyncio.Event()
    loop = _NoSignalLoop(asyncio.get_running_loop())
    handler = StopOnSignal(loop, stop)  # type: ignore[arg-type]
    before = signal.getsignal(signal.SIGINT)
    handler.install()
    try:
        assert handler.mode == "signal"
        assert not _handed_back_to_the_os()
        os.kill(os.getpid(), signal.SIGINT)
        async with asyncio.timeout(5):
            await stop.wait()
        # A second Ctrl-C now ends the process at once, with no Python in its way.
        assert _handed_back_to_the_os()
    finally:
        handler.uninstall()
    assert signal.getsignal(signal.SIGINT) is before


async def test_loop_signal_handlers_are_used_where_the_loop_has_them() -> None:
    stop = asyncio.Event()
    handler = StopOnSignal(asyncio.get_running_loop(), stop)
    before = signal.getsignal(signal.SIGTERM)
    handler.install()
    try:
        assert handler.mode == "loop"
        os.kill(os.getpid(), signal.SIGTERM)
        async with asyncio.timeout(5):
            await stop.wait()
        assert _handed_back_to_the_os()
    finally:
        handler.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before


async def test_a_second_ctrl_c_during_the_stop_ends_the_bot_at_once(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path
) -> None:
    bot = await BotProcess.start(write_run_config(tmp_path, tiny_files))
    await bot.until("bot.started")
    bot.proc.send_signal(signal.SIGINT)
    await bot.until("bot.stopping")
    asked = time.monotonic()
    code = await bot.stop(signal.SIGINT)
    assert code in (0, -signal.SIGINT)  # finished cleanly first, or ended by the OS
    assert time.monotonic() - asked < 5


async def test_bot_stops_cleanly_where_the_loop_takes_no_signal_handlers(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path
) -> None:
    config = write_run_config(tmp_path, tiny_files)
    argv = [sys.executable, "-c", WINDOWS_LIKE_LOOP, "run", "--config", str(config)]
    bot = await BotProcess.start(config, argv=argv)
    await bot.until("bot.started")
    assert await bot.stop(signal.SIGINT) == 0
    assert bot.logged("bot.stopping", signal="SIGINT")
    assert bot.logged("audio.closed")
    assert bot.logged("bot.stopped")


async def test_stop_while_the_panel_event_stream_is_open_exits_within_5_s(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path
) -> None:
    port = free_port()
    config = write_run_config(tmp_path, tiny_files, web={"enabled": True, "port": port})
    bot = await BotProcess.start(config)
    await bot.until("bot.started")
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        streams = [await session.get(f"{base}/api/events") for _ in range(2)]
        overlay = await session.get(f"{base}/overlay")
        assert overlay.status == 200
        for stream in streams:
            assert (await stream.content.readline()).startswith(b"data: ")
        asked = time.monotonic()
        code = await bot.stop(signal.SIGINT)
        took = time.monotonic() - asked
        # The streams end instead of being cut: the page sees the bot go.
        for stream in streams:
            async with asyncio.timeout(5):
                await stream.read()
    assert code == 0
    timeline = [(e["timestamp"][11:23], e["event"]) for e in bot.events[-12:]]
    assert took < 5, f"exit took {took:.1f} s with clients attached: {timeline}"
    assert bot.logged("bot.stopped")


async def test_a_second_bot_on_the_same_port_or_channel_is_refused(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path
) -> None:
    port = free_port()
    for name in "abc":
        (tmp_path / name).mkdir()
    # Chat is read from a closed loopback port: nothing leaves this machine.
    nowhere = {"twitch": {"url": "ws://127.0.0.1:9"}}
    first = write_run_config(
        tmp_path / "a", tiny_files, web={"enabled": True, "port": port}, platforms=nowhere
    )
    bot = await BotProcess.start(first, "--twitch", "somechannel")
    await bot.until("bot.started")
    try:
        second = write_run_config(
            tmp_path / "b", tiny_files, web={"enabled": True, "port": port}, platforms=nowhere
        )
        for args in (("--twitch", "otherchannel"), ()):
            proc = await asyncio.create_subprocess_exec(
                *command("run", "--config", str(second), *args),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 2
            told = [x for x in err.decode().splitlines() if x.startswith("start-up error:")]
            assert told == [
                f"start-up error: web panel port {port} on 127.0.0.1 is already in use: is "
                "another ishowtts running? Stop it, or set web.port to a free port"
            ]
        # Without a panel, the same channel is still one bot's.
        third = write_run_config(tmp_path / "c", tiny_files, platforms=nowhere)
        proc = await asyncio.create_subprocess_exec(
            *command("run", "--config", str(third), "--twitch", "somechannel"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2
        assert "start-up error: another ishowtts is already reading twitch somechannel" in (
            err.decode()
        )
    finally:
        assert await bot.stop(signal.SIGINT) == 0


@pytest.mark.parametrize("when", ["warming_up"])
async def test_stop_during_warm_up_exits_cleanly(
    pulse_server: None, tiny_files: ModelFiles, tmp_path: Path, when: str
) -> None:
    bot = await BotProcess.start(write_run_config(tmp_path, tiny_files))
    await bot.until(f"bot.{when}")
    asked = time.monotonic()
    assert await bot.stop(signal.SIGINT) == 0
    assert time.monotonic() - asked < 5


async def test_a_stop_while_starting_ends_what_the_panel_queued(
    tiny_files: ModelFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The panel serves while the model loads: a line said then must not vanish
    # without an end when the start-up is stopped (Ctrl-C in warm-up).
    from structlog.testing import capture_logs

    from bot import app
    from bot.config import load_config
    from bot.instance import ChannelLocks

    async def stopped_while_warming(*args: object) -> int:
        stop = args[3]
        assert isinstance(stop, asyncio.Event)
        await stop.wait()
        return 0

    monkeypatch.setattr(app, "_start_engine", stopped_while_warming)
    port = free_port()
    path = write_run_config(
        tmp_path,
        tiny_files,
        web={"enabled": True, "port": port},
        audio={"output_device": "none"},
    )
    config = load_config(path)
    stop = asyncio.Event()
    base = f"http://127.0.0.1:{port}"
    with capture_logs() as logs:
        running = asyncio.create_task(app._run(config, stop, ChannelLocks(config.platforms)))
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"{base}/api/status") as r:
                        assert (await r.json())["state"] == "starting"
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            body = {"text": "said while starting"}
            async with http.post(f"{base}/api/say", json=body, headers={"Origin": base}) as r:
                assert r.status == 200
                said = (await r.json())["id"]
        stop.set()
        assert await asyncio.wait_for(running, 10) == 0
    ended = [e for e in logs if e.get("msg_id") == said.split(":", 1)[1]]
    assert [(e["event"], e.get("reason")) for e in ended] == [("tts.skipped", "shutdown")]
