"""`ishowtts serve --ray`: the engine as a Ray Serve deployment on a local Ray
cluster (started by the command, on the CPU, with the tiny model), two replicas
behind Ray's HTTP proxy, reached by raw WebSocket clients and by the bot as a
subprocess; one replica is killed while it makes a line, and the bot carries on
through the other. Also serve.ray's config checks (no Ray needed)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from bot.chat.outcomes import TERMINAL_EVENTS
from bot.config import ConfigError, parse_config
from engine import wire
from engine.checkpoints import ModelFiles
from tests.botprocess import ROOT, BotProcess, command
from tests.engine.tiny import write_voice
from tests.runconfig import free_port, write_run_config
from tests.twitch.fake_server import FakeTwitch

TOKEN = "ray-test-token"
#: Ray's start, two replicas loading the tiny engine, on 2 busy cores.
STARTUP_S = 150.0
STOP_S = 60.0
VIEWER = "@id={id};user-id={uid};display-name=Viewer{uid} :v{uid}!v@v PRIVMSG #chan :{text}"
#: A replica's line as the driver passes it on: `(ServeReplica:app:deployment pid=N) {...}`.
REPLICA_LINE = re.compile(r"\((ServeReplica:\S+) pid=(\d+)[^)]*\)\S*\s+(\{.*\})\s*$")

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install .[serve])"
)


class RayServer:
    """`ishowtts serve --ray` as a subprocess; its JSON log and its replicas' (which
    Ray passes on with a prefix naming the process) read as written, each event
    with `pid` where a replica logged it."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, fault: Path) -> None:
        self.proc = proc
        self.url = url
        #: The replicas' engine.fault_file (engine/faults.py).
        self.fault = fault
        self.events: list[dict[str, Any]] = []
        self.other: list[str] = []
        self._lock = threading.Lock()
        assert proc.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            record: dict[str, Any] | None = None
            replica = REPLICA_LINE.search(line)
            with contextlib.suppress(ValueError):
                if replica is not None:
                    record = {**json.loads(replica.group(3)), "pid": int(replica.group(2))}
                elif line.startswith("{"):
                    record = json.loads(line)
            with self._lock:
                if isinstance(record, dict) and "event" in record:
                    self.events.append(record)
                else:
                    self.other.append(line)

    def logged(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [
                e
                for e in self.events
                if e["event"] == event and all(e.get(k) == v for k, v in fields.items())
            ]

    def wait_sync(self, event: str, timeout: float, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.logged(event, **fields)
            if found:
                return found[0]
            assert self.proc.poll() is None, f"serve --ray exited: {self.other[-15:]}"
            time.sleep(0.1)
        raise AssertionError(f"no {event} {fields} in {timeout:g} s; last: {self.other[-15:]}")

    async def until(self, event: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.logged(event, **fields)
            if found:
                return found[0]
            assert self.proc.poll() is None, f"serve --ray exited: {self.other[-15:]}"
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {event} {fields} in {timeout:g} s; last: {self.other[-15:]}")


def descendants(pid: int) -> list[int]:
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    return []


def alive(pids: list[int]) -> list[int]:
    import psutil

    left = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
    return left


@pytest.fixture(scope="module")
def ray_server(
    tiny_files: ModelFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RayServer]:
    """Two replicas on a Ray cluster of this machine; at the end, stopped with
    SIGTERM, and every process of the cluster gone."""
    root = tmp_path_factory.mktemp("ray")
    port = free_port()
    config = write_run_config(
        root,
        tiny_files,
        serve={"port": port, "token": TOKEN, "ray": {"replicas": 2}},
        engine={"fault_file": str(root / "fault")},
    )
    # No usage reports to Ray's makers; every replica line passed on whole.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
    started = time.monotonic()
    with (root / "stdout.log").open("wb") as stdout:
        proc = subprocess.Popen(
            command("serve", "--ray", "--config", str(config)),
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=subprocess.PIPE,
        )
    server = RayServer(proc, f"ws://127.0.0.1:{port}/ws", root / "fault")
    cluster: list[int] = []
    try:
        ready = server.wait_sync("serve.started", STARTUP_S)
        assert ready["url"] == server.url and ready["replicas"] == 2
        replicas = server.logged("serve.replica_ready")
        print(
            f"\nserve --ray up in {time.monotonic() - started:.1f} s "
            f"(replicas ready in {[r['seconds'] for r in replicas]} s)"
        )
        cluster = descendants(proc.pid)
        yield server
    finally:
        cluster = sorted({*cluster, *descendants(proc.pid)})
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(STOP_S)
        deadline = time.monotonic() + 30
        while alive(cluster) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = alive(cluster)
        for pid in left:  # only this test's own cluster, by id
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert code == 0, server.other[-20:]
        assert server.logged("serve.stopped")
        assert not left, f"Ray processes left running: {left}"


@contextlib.asynccontextmanager
async def hello(url: str, **fields: Any) -> Any:
    ws = await connect(url, proxy=None, compression=None, max_size=2**26)
    try:
        await ws.send(json.dumps({"type": "hello", "version": wire.VERSION, **fields}))
        yield ws, json.loads(await asyncio.wait_for(ws.recv(), 30))
    finally:
        with contextlib.suppress(ConnectionClosed):
            await ws.close()


@pytest.mark.ray
@needs_ray
async def test_the_ray_ingress_refuses_as_the_engine_server_does(ray_server: RayServer) -> None:
    # A browser page (an Origin header) never gets a WebSocket: 403, as from aiohttp.
    with pytest.raises(InvalidStatus) as refused:
        await connect(ray_server.url, proxy=None, origin=Origin("https://evil.example"))
    assert refused.value.response.status_code == 403
    async with hello(ray_server.url, token="wrong") as (ws, answer):
        assert (answer["code"], answer["message"]) == (wire.AUTH, "wrong token")
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert (ws.close_code, ws.close_reason) == (1008, wire.AUTH)
    async with hello(ray_server.url) as (ws, answer):
        assert (answer["code"], answer["message"]) == (wire.AUTH, "this server needs a token")
    async with hello(ray_server.url, token=TOKEN) as (ws, answer):
        assert answer["type"] == "ready" and answer["engine"]["device"] == "cpu"
        assert {"default", "mei"} <= set(answer["voices"])
        await ws.send(json.dumps({"type": "synthesize", "id": 7, "text": "Hi.", "voice": "mei"}))
        frames = []
        while isinstance(frame := await asyncio.wait_for(ws.recv(), 30), bytes):
            frames.append(frame)
        assert json.loads(frame)["type"] == "done" and frames
    # Each replica logs its own refusals (the later wrong token is throttled where it
    # reached the same one), and Ray passes their lines on in no fixed order between
    # replicas: the browser page's refusal is looked for by what it says.
    refusals = {r["message"]: r for r in ray_server.logged("serve.refused", code=wire.AUTH)}
    assert "browser page" in refusals and refusals["browser page"]["replica"]


@pytest.mark.ray
@needs_ray
async def test_the_bot_carries_on_through_another_replica_when_one_dies(
    ray_server: RayServer, pulse_server: None, tiny_files: ModelFiles, tmp_path: Path
) -> None:
    async with FakeTwitch() as twitch:
        nowhere = ModelFiles(
            model=tmp_path / "absent" / "model.safetensors",
            vocab=tmp_path / "absent" / "vocab.txt",
            vocoder_config=tmp_path / "absent" / "vocos" / "config.yaml",
            vocoder_weights=tmp_path / "absent" / "vocos" / "pytorch_model.bin",
        )
        bot_config = write_run_config(
            tmp_path,
            nowhere,
            engine={"url": ray_server.url, "token": TOKEN},
            platforms={"twitch": {"enabled": True, "channels": ["chan"], "url": twitch.url}},
            queue={"pacing": {"stale_after_s": 0}},
        )
        write_voice(tmp_path / "voices", "zed", "Only the bot has this voice.")
        bot = await BotProcess.start(bot_config)
        outcomes: dict[str, dict[str, Any]] = {}

        async def say(id: str, uid: int, text: str) -> None:
            await twitch.send(VIEWER.format(id=id, uid=uid, text=text))

        async def spoken(id: str) -> None:
            outcomes[id] = await bot.until("tts.spoken", msg_id=id)

        try:
            ready = await bot.until("engine.ready")
            assert ready["remote"] is True and ready["device"] == "cpu"
            await bot.until("twitch.connected")
            await say("r1", 1, "hello through ray")
            await spoken("r1")

            # The replica making this line dies: the line is skipped with its reason.
            ray_server.fault.write_text("hang 5")
            await say("r2", 2, "this one is cut off")
            hung = await ray_server.until("engine.fault_injected")
            killed = hung["pid"]
            os.kill(killed, signal.SIGKILL)
            outcomes["r2"] = skipped = await bot.until("tts.skipped", msg_id="r2")
            assert skipped["reason"] == "engine_unavailable"

            # The bot reconnects, lands on the other replica, and speaks on.
            await bot.until("engine.reconnected")
            for n in range(3, 6):
                await say(f"r{n}", n, f"line number {n} after the replica died")
            for n in range(3, 6):
                await spoken(f"r{n}")
            served = [e["pid"] for e in ray_server.logged("serve.client_connected") if "pid" in e]
            assert served[-1] != killed, served
        finally:
            assert await bot.stop() == 0
    assert set(outcomes) == {"r1", "r2", "r3", "r4", "r5"}
    # Each line ended once: the ends awaited above were taken from the log as read.
    assert not [e for e in bot.events if e["event"] in TERMINAL_EVENTS]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "serve: {ray: {replicas: 0}}",
            "config error: serve.ray.replicas: must be >= 1, got 0",
        ),
        (
            "serve: {ray: {replicas: 2, autoscaling: {max_replicas: 4}}}",
            "config error: serve.ray.replicas: set replicas or autoscaling, not both",
        ),
        (
            "serve: {ray: {autoscaling: {min_replicas: 3, max_replicas: 2}}}",
            "config error: serve.ray.autoscaling.min_replicas: 3 is more than max_replicas (2)",
        ),
        (
            "serve: {ray: {autoscaling: {target_ongoing_requests: 0}}}",
            "config error: serve.ray.autoscaling.target_ongoing_requests: must be > 0, got 0",
        ),
        (
            "serve: {ray: {num_gpus_per_replica: lots}}",
            "config error: serve.ray.num_gpus_per_replica: must be auto or a number of GPUs "
            "from 0 to 64, got 'lots'",
        ),
        (
            "serve: {ray: {address: 'head node'}}",
            "config error: serve.ray.address: must be auto, a head node's host:port or "
            "ray://host:port, got 'head node'",
        ),
    ],
)
def test_serve_ray_settings_are_checked(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as bad:
        parse_config(text)
    assert str(bad.value) == error


def test_serve_ray_settings_as_documented() -> None:
    ray = parse_config(
        "serve:\n  ray:\n    address: ray://head:10001\n"
        "    autoscaling: {min_replicas: 1, max_replicas: 4, target_ongoing_requests: 2}\n"
        "    num_gpus_per_replica: 1\n"
    ).serve.ray
    assert ray.address == "ray://head:10001" and ray.num_gpus_per_replica == 1.0
    assert ray.autoscaling is not None and ray.autoscaling.target_ongoing_requests == 2
    assert parse_config("").serve.ray.replicas == 1


def test_replicas_get_the_files_named_from_where_the_command_ran(tmp_path: Path) -> None:
    # A replica's working folder is Ray's: relative paths would be looked for there.
    from bot.ray_serve import replica_engine_config

    config = parse_config("engine:\n  voices_dir: voices\n  model_path: models/m.safetensors\n")
    engine = replica_engine_config(config)
    assert engine.voices_dir == tmp_path / "voices"  # the tests run in tmp_path
    assert engine.model_path == tmp_path / "models" / "m.safetensors"
    assert engine.vocoder_path is None and engine.fault_file is None


@needs_ray
def test_an_upload_limit_over_what_rays_proxy_passes_is_refused_at_start(tmp_path: Path) -> None:
    config = tmp_path / "ishowtts.yaml"
    config.write_text("serve:\n  max_upload_bytes: 20000000\n  port: 1\n")
    done = subprocess.run(
        command("serve", "--ray", "--config", str(config)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "serve.max_upload_bytes is 20000000, more than Ray's proxy passes" in done.stderr
