"""The served engine as deployed: `ishowtts serve`, and `ishowtts serve --ray`
with R replicas, each started as its command runs it (a process of its own,
the config file, warm-up), then the load benchmark's bots against its
WebSocket (`bench.serve_load --url`: N bots, each its own connection, paced
and back to back), then stopped; one after the other, in one run, so their
figures sit side by side.

Per deployment it prints the start-up time and each load's lines/s and first
audio p50/p99 (from the bots' side: the wire, and Ray's proxy where there is
one, included), and the peak memory used on each GPU (`nvidia-smi`, the
replicas' processes included). With one replica per GPU, the ratio of R
replicas against one says how the deployment scales, and the plain server
against one replica what Ray's proxy costs.

Run on the GPU machine (the F5TTS_v1_Base and Vocos shapes with random weights,
fp16, compiled + CUDA graphs, NFE 8, `engine.batch.max_size` 16; Ray from
`pip install .[serve]`):
    python -m bench.serve_deploy [--ray 1,2] [--plain] [--n 16,64,128] [--seconds 10]
Check the script on the CPU (the tests' tiny model, one replica; its figures
mean nothing):
    python -m bench.serve_deploy --tiny
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.engine import NFE, write_model
from bench.serve_load import LOADS, SECOND_VOICE_TEXT, GpuMemory, connect, row, run_load
from tests.engine.tiny import write_voice
from tests.runconfig import free_port

#: A deployment's start (Ray, the replicas' warm-up with compiling) may take this long.
START_S = 420.0
STOP_S = 60.0
TOKEN = "bench-deploy-token"


def write_config(root: Path, tiny: bool, port: int, replicas: int) -> Path:
    """The bot's config file for the served engine: the benchmark's model, wide
    limits (every bot comes from this one address), `replicas` under Ray."""
    files, arch = write_model(root, tiny)
    write_voice(root / "voices", "ref_b", SECOND_VOICE_TEXT, seconds=5.0)
    doc: dict[str, Any] = {
        "engine": {
            "model_path": str(files.model),
            "vocab_path": str(files.vocab),
            "vocoder_path": str(files.vocoder_config.parent),
            "voices_dir": str(root / "voices"),
            "arch": arch.model_dump(),
            "nfe_steps": NFE,
            "default_voice": "ref",
            "batch": {"max_size": 2 if tiny else 16},
        },
        "serve": {
            "port": port,
            "token": TOKEN,
            "max_clients": 1000,
            "requests_per_minute": 1_000_000,
            "burst": 100_000,
            "ray": {"replicas": replicas},
        },
        "logging": {"level": "info", "format": "json"},
    }
    if tiny:
        doc["engine"]["device"] = "cpu"
    path = root / f"ishowtts-{replicas}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


class Served:
    """`ishowtts serve [--ray]` as a process group of its own (Ray's processes with
    it), its log lines kept."""

    def __init__(self, config: Path, ray: bool, log_path: Path) -> None:
        args = [sys.executable, "-m", "bot.cli", "serve", "--config", str(config)]
        if ray:
            args.append("--ray")
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def event(self, name: str) -> dict[str, Any] | None:
        for line in self.log_path.read_text(errors="replace").splitlines():
            start = line.find("{")
            if start < 0:
                continue
            try:
                record = json.loads(line[start:])
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == name:
                return record
        return None

    async def wait_started(self) -> float:
        while time.monotonic() - self.started < START_S:
            if self.event("serve.started") is not None:
                return round(time.monotonic() - self.started, 1)
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(1.0)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the server did not start:\n{tail}")

    async def stop(self) -> int | None:
        """Ctrl-C, as at a terminal (to the whole group; where there are no process
        groups, to the server alone)."""
        if self.proc.poll() is None:
            self._signal(kill=False)
            try:
                await asyncio.to_thread(self.proc.wait, STOP_S)
            except subprocess.TimeoutExpired:
                self._signal(kill=True)
        self._log.close()
        return self.proc.poll()

    def _signal(self, kill: bool) -> None:
        if sys.platform == "win32":
            self.proc.kill() if kill else self.proc.terminate()
        else:
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGINT)


async def measure(
    label: str, served: Served, url: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    startup = await served.wait_started()
    print(json.dumps({"event": "deployment", "label": label, "startup_s": startup}), flush=True)
    gpus = GpuMemory() if args.gpu_memory else None
    records: list[dict[str, Any]] = []
    for n in args.n:
        clients = await connect(url, TOKEN, n)
        try:
            for load in LOADS:
                record = await run_load(
                    clients, n, load, args.seconds, args.period, None, ("ref", "ref_b"), gpus
                )
                record.update(url=url, deployment=label)
                records.append(record)
                print(json.dumps(record), flush=True)
                print(f"{label:<10} {row(record)}", flush=True)
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
    return records


async def main(args: argparse.Namespace, root: Path) -> None:
    deployments = [("plain", 1)] if args.plain else []
    deployments += [(f"ray x{r}", r) for r in args.ray]
    records: list[dict[str, Any]] = []
    for label, replicas in deployments:
        port = free_port()
        config = write_config(root / label.replace(" ", "-"), args.tiny, port, replicas)
        log_path = root / f"{label.replace(' ', '-')}.log"
        served = Served(config, ray=label != "plain", log_path=log_path)
        try:
            records += await measure(label, served, f"ws://127.0.0.1:{port}/ws", args)
        finally:
            code = await served.stop()
            print(json.dumps({"event": "stopped", "label": label, "exit": code}), flush=True)
    print("summary:", flush=True)
    for record in records:
        print(f"{record['deployment']:<10} {row(record)}", flush=True)
    by = {(r["deployment"], r["load"], r["n"]): r["lines_per_s"] for r in records}
    for (label, load, n), rate in by.items():
        one = by.get(("ray x1", load, n))
        if label.startswith("ray x") and label != "ray x1" and one:
            print(f"{label} against ray x1, {load} N={n}: {rate / one:.2f}x", flush=True)


def numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--ray", type=numbers, help="replicas of each Ray deployment (1,2)")
    parser.add_argument("--plain", action="store_true", help="also `ishowtts serve`, first")
    parser.add_argument("--n", type=numbers, help="bots (default: 16,64,128)")
    parser.add_argument("--seconds", type=float, help="each load's duration (default: 10)")
    parser.add_argument("--gpu-memory", action="store_true", help="peak memory per GPU")
    parser.add_argument("--out", help="a folder for the configs and the servers' logs")
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU: checks the script")
    args = parser.parse_args()
    args.ray = args.ray or ([1] if args.tiny else [1, 2])
    args.n = args.n or ([2] if args.tiny else [16, 64, 128])
    args.seconds = args.seconds or (1.0 if args.tiny else 10.0)
    args.period = (0.2, 0.4) if args.tiny else (3.0, 5.0)
    root = Path(args.out or tempfile.mkdtemp(prefix="bench-deploy-"))
    root.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(args, root))
