"""Many channels on one GPU: N simulated bots against one engine that batches.

One engine in this process, as `ishowtts serve` runs it, with
`engine.batch.max_size` = B; N bots as asyncio tasks, each sending short chat
lines (8-15 words) through `engine.stream`, alternating two voices (a 7 s and
a 5 s reference), under two loads for a fixed time: paced (one line every 3-5
s a bot, a busy channel) and flood (each bot's next line right after its last
one finished: the engine's capacity). For each engine, load and N it prints
lines/s, first audio p50/p99 (request to first chunk on the host), the batch
sizes the engine ran (mean, max), how busy the engine's thread was in batched
steps, and peak GPU memory; then the in-process ceiling, `sampler.sample_batch`
at B = 1 and at the engine's B, with the benchmark's flood lines
(`bench.engine.batch_throughput`, the figure FINDINGS.md cites) and with
these chat lines. The engine with B = 1 is today's one-at-a-time engine: the
reference for what batching changes, lone-request overhead included.

Where the bots reach the engine:
- in process (the default): each bot calls `engine.stream`;
- `--over-server`: the same engine behind `ishowtts serve`'s server
  (engine/serve.py, on loopback in this process), each bot its own connection
  (`engine.url`'s client, bot/remote_engine.py), as N bots on N machines are;
- `--url ws://HOST:PORT/ws`: a server already running (`ishowtts serve`, or
  `ishowtts serve --ray`'s ingress), each bot its own connection. Nothing of
  the engine is seen from here: no batch sizes, and the GPU memory is what
  `nvidia-smi` reports per GPU at the peak (the server's limits must allow N
  connections and their requests: `serve.max_clients`, `requests_per_minute`,
  `burst`). Its voices must include `--voices` (default: the server's default).

Run on the GPU (the F5TTS_v1_Base and Vocos shapes with random weights, fp16,
compiled + CUDA graphs, NFE 8; about 6 minutes a mode):
    python -m bench.serve_load [--n 1,4,16,64] [--batch 1,16] [--seconds 10] [--over-server]
    python -m bench.serve_load --url ws://127.0.0.1:8766/ws [--token T] [--n 16,64,128]
Check the script on the CPU (tiny random model, one engine with B = 2, two bots;
its figures mean nothing):
    python -m bench.serve_load --tiny [--over-server]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch

from bench.engine import FLOOD, NFE, batch_throughput, sync, write_model
from bot.instance import bind_port
from bot.remote_engine import EngineUnavailable, RemoteEngine
from engine.config import BatchConfig, EngineConfig, ServeConfig
from engine.serve import EngineServer
from engine.synth import Engine, SynthesisError
from engine.voices import VoiceLibrary
from tests.engine.tiny import write_voice

#: Chat lines of 8-15 words, as viewers type them.
CHAT = [
    "that was the cleanest clutch I have seen all week honestly",
    "can you try the other route through the castle next time",
    "hello from Brazil, first time catching the stream live, love it",
    "no way he missed that shot from two feet away lol",
    "what settings are you using for the mouse sensitivity right now",
    "chat is moving so fast nobody will notice I like trains",
    "please do the boss fight again but without any healing items",
    "just got here, did I miss the giveaway or is it later",
    "the music on this stream is always so good, what playlist",
    "remember to drink some water and stretch your back a little",
    "I bet fifty points he dies before reaching the checkpoint",
    "good luck on the speedrun today, you have got this one",
    "is the new patch out yet or are we still on the old one",
    "my cat just walked across the keyboard and sent this message",
    "how long have you been streaming today, it feels like hours",
    "that jump was absolutely insane, clip it before it is gone",
]
SECOND_VOICE_TEXT = "Thanks for watching everyone, see you all tomorrow at the same time."
LOADS = ("paced", "flood")


@dataclass(frozen=True, slots=True)
class Said:
    first_s: float  # request to first chunk
    total_s: float


async def bot(
    engine: Engine | RemoteEngine,
    voice: str,
    load: str,
    deadline: float,
    period: tuple[float, float],
    rng: random.Random,
    said: list[Said],
    errors: list[str],
) -> None:
    """One channel's bot: a line at a time, paced or back to back, until `deadline`."""
    loop = asyncio.get_running_loop()
    if load == "paced":  # the bots' first lines spread over the first period
        await asyncio.sleep(rng.uniform(0, period[0]))
    while loop.time() < deadline:
        started = loop.time()
        first = None
        try:
            async for _ in engine.stream(rng.choice(CHAT), voice):
                if first is None:
                    first = loop.time() - started
        except (SynthesisError, EngineUnavailable) as exc:
            errors.append(str(exc))
            if isinstance(exc, EngineUnavailable):  # a lost server: do not spin
                await asyncio.sleep(0.1)
            continue
        said.append(Said(first or 0.0, loop.time() - started))
        if load == "paced":
            wait = started + rng.uniform(*period) - loop.time()
            if wait > 0:
                await asyncio.sleep(min(wait, max(0.0, deadline - loop.time())))


async def connect(url: str, token: str, n: int) -> list[RemoteEngine]:
    """N clients of the server at `url`, each its own connection, all answered."""
    config = EngineConfig.model_validate({"url": url, "token": token})
    clients = [RemoteEngine(config) for _ in range(n)]
    for client in clients:
        client.start()
    try:
        await asyncio.wait_for(asyncio.gather(*(c.wait_ready() for c in clients)), 60)
    except BaseException:
        await asyncio.gather(*(c.aclose() for c in clients))
        raise
    return clients


class GpuMemory:
    """Peak memory used per GPU, from `nvidia-smi` (a server in other processes)."""

    def __init__(self) -> None:
        self.peak: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> list[int]:
        proc = await asyncio.create_subprocess_exec(
            "nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = await proc.communicate()
        return [int(line) for line in out.decode().split() if line.strip().isdigit()]

    async def _run(self) -> None:
        while True:
            used = await self._sample()
            self.peak = [max(a, b) for a, b in zip(self.peak, used, strict=False)] or used
            await asyncio.sleep(0.5)

    def start(self) -> None:
        self.peak = []
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> list[float]:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        return [round(mib / 1024, 2) for mib in self.peak]


async def run_load(
    engines: list[Engine] | list[RemoteEngine],
    n: int,
    load: str,
    seconds: float,
    period: tuple[float, float],
    local: Engine | None,
    voices: tuple[str, str],
    gpus: GpuMemory | None = None,
) -> dict[str, Any]:
    """N bots under `load` for `seconds`, bot i through `engines[i]` (or the one
    engine); what they measured and, with the `local` engine, what it ran."""
    cuda = local is not None and local.device.startswith("cuda")
    if cuda:
        sync()
        torch.cuda.reset_peak_memory_stats()
    if gpus is not None:
        gpus.start()
    sizes_before = Counter(local.batch_sizes) if local is not None else Counter()
    busy_before = local.batch_busy_s if local is not None else 0.0
    said: list[Said] = []
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + seconds
    await asyncio.gather(
        *(
            bot(
                engines[i % len(engines)],
                voices[i % 2],
                load,
                deadline,
                period,
                random.Random(i),
                said,
                errors,
            )
            for i in range(n)
        )
    )
    wall = loop.time() - started
    sizes = (local.batch_sizes - sizes_before) if local is not None else Counter()
    busy_s = (local.batch_busy_s - busy_before) if local is not None else 0.0
    steps = sum(sizes.values())
    firsts = np.array([s.first_s for s in said]) * 1000
    record: dict[str, Any] = {
        "event": "load",
        "batch": local.config.batch.max_size if local is not None else None,
        "load": load,
        "n": n,
        "lines": len(said),
        "errors": len(errors),
        "seconds": round(wall, 2),
        "lines_per_s": round(len(said) / wall, 1),
        "first_ms_p50": round(float(np.percentile(firsts, 50)), 1) if len(said) else None,
        "first_ms_p99": round(float(np.percentile(firsts, 99)), 1) if len(said) else None,
        "total_ms_p50": round(float(np.median([s.total_s for s in said])) * 1000, 1)
        if said
        else None,
        # Batched steps only (B > 1): how many requests each step sampled together.
        "batch_mean": round(sum(k * v for k, v in sizes.items()) / steps, 2) if steps else None,
        "batch_max": max(sizes) if steps else None,
        "busy": round(busy_s / wall, 2) if steps else None,
    }
    if errors:
        record["first_error"] = errors[0][:200]
    if cuda:
        sync()
        record["gpu_peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if gpus is not None:
        record["gpu_used_gb"] = await gpus.stop()
    return record


def row(r: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} ms"

    batch = "-" if r["batch_mean"] is None else f"{r['batch_mean']:.1f}/{r['batch_max']}"
    busy = "-" if r["busy"] is None else f"{r['busy'] * 100:.0f} %"
    memory = f"{r['gpu_peak_gb']:.2f} GB" if "gpu_peak_gb" in r else "-"
    if "gpu_used_gb" in r:
        memory = " + ".join(f"{gb:.1f}" for gb in r["gpu_used_gb"]) + " GB used"
    size = "-" if r["batch"] is None else r["batch"]
    via = "url" if "url" in r else ("server" if r.get("over_server") else "in-proc")
    return (
        f"{via:<7} B={size:<3} {r['load']:<5} N={r['n']:<3} {r['lines_per_s']:6.1f} lines/s  "
        f"first audio p50 {ms(r['first_ms_p50']):>7} p99 {ms(r['first_ms_p99']):>7}  "
        f"batch {batch:>8}  busy {busy:>5}  GPU peak {memory}  errors {r['errors']}"
    )


async def against_url(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The bots against a server already running (`--url`)."""
    probe = (await connect(args.url, args.token, 1))[0]
    info = {"event": "setup", "url": args.url, "server": probe.info,
            "voices": probe.voices.names(), "seconds": args.seconds}  # fmt: skip
    print(json.dumps(info), flush=True)
    voice = args.voices or [probe.voices.default or probe.voices.names()[0]]
    await probe.aclose()
    gpus = GpuMemory() if args.gpu_memory else None
    records: list[dict[str, Any]] = []
    for n in args.n:
        clients = await connect(args.url, args.token, n)
        try:
            for load in LOADS:
                pair_of = (voice[0], voice[-1])
                record = await run_load(
                    clients, n, load, args.seconds, args.period, None, pair_of, gpus
                )
                record["url"] = args.url
                records.append(record)
                print(json.dumps(record), flush=True)
                print(row(record), flush=True)
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
    print("summary:", flush=True)
    for record in records:
        print(row(record), flush=True)
    return records


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.url:
        return await against_url(args)
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    root = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    files, arch = write_model(root, args.tiny)
    write_voice(root / "voices", "ref_b", SECOND_VOICE_TEXT, seconds=5.0)
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    setup = {"event": "setup", "device": device, "gpu": gpu, "torch": torch.__version__,
             "nfe": NFE, "window_ms": args.window_ms, "seconds": args.seconds,
             "over_server": args.over_server}  # fmt: skip
    print(json.dumps(setup), flush=True)
    records: list[dict[str, Any]] = []
    for size in args.batch:
        batch = BatchConfig(max_size=size, window_ms=args.window_ms)
        config = EngineConfig(device=device, nfe_steps=NFE, arch=arch, batch=batch)
        engine = Engine(config, VoiceLibrary(root / "voices"), files)
        started = time.perf_counter()
        engine.start()
        await engine.wait_ready()
        ready = {"event": "engine", "batch": size, "path": str(engine.kernels),
                 "startup_s": round(time.perf_counter() - started, 1)}  # fmt: skip
        if device == "cuda":
            sync()
            ready["ready_gb"] = round(torch.cuda.memory_allocated() / 2**30, 2)
        print(json.dumps(ready), flush=True)
        server = None
        if args.over_server:
            # Limits wide enough for every bot from this one address, back to back.
            limits = ServeConfig(port=1, max_clients=max(args.n) + 1,
                                 requests_per_minute=1_000_000, burst=100_000)  # fmt: skip
            server = EngineServer(engine, engine.voices, limits, default_voice="ref")
            await server.start(bind_port("127.0.0.1", 0, "no free port on loopback"))
        try:
            for n in args.n:
                clients = await connect(server.url, "", n) if server is not None else []
                try:
                    for load in LOADS:
                        engines: list[Engine] | list[RemoteEngine] = clients or [engine]
                        record = await run_load(
                            engines, n, load, args.seconds, args.period, engine, ("ref", "ref_b")
                        )
                        record["over_server"] = server is not None
                        records.append(record)
                        print(json.dumps(record), flush=True)
                        print(row(record), flush=True)
                finally:
                    await asyncio.gather(*(c.aclose() for c in clients))
            if size > 1:
                # What the same batches reach without the engine's thread and streams.
                for lines, texts in (("flood", FLOOD), ("chat", CHAT)):
                    rates = batch_throughput(engine, (1, size), 1 if args.tiny else 3, texts)
                    per_s = {str(k): v for k, v in rates.items()}
                    ceiling = {"event": "ceiling", "batch": size, "lines": lines,
                               "sample_batch_lines_per_s": per_s}  # fmt: skip
                    records.append(ceiling)
                    print(json.dumps(ceiling), flush=True)
        finally:
            if server is not None:
                await server.close()
            engine.close()
            del engine  # its graphs and pool must not count in the next engine's peak
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
    print("summary:", flush=True)
    # One bot back to back: every request alone, the same lines on each engine.
    lone = {r["batch"]: r["first_ms_p50"] for r in records
            if r["event"] == "load" and r["load"] == "flood" and r["n"] == 1}  # fmt: skip
    if 1 in lone and len(lone) > 1 and None not in lone.values():
        for size, first in lone.items():
            if size > 1:
                overhead = {"event": "lone_overhead", "batch": size, "window_ms": args.window_ms,
                            "first_ms_p50_delta": round(first - lone[1], 1)}  # fmt: skip
                records.append(overhead)
                print(json.dumps(overhead), flush=True)
    for record in records:
        if record["event"] == "load":
            print(row(record), flush=True)
        elif record["event"] == "lone_overhead":
            print(
                f"a lone request (N=1, back to back), B={record['batch']} against B=1: "
                f"first audio p50 {record['first_ms_p50_delta']:+.1f} ms "
                f"(window {record['window_ms']} ms)",
                flush=True,
            )
        else:
            rates_text = ", ".join(
                f"B={k}: {v} lines/s" for k, v in record["sample_batch_lines_per_s"].items()
            )
            print(
                f"ceiling, sample_batch in process, {record['lines']} lines: {rates_text}",
                flush=True,
            )
    return records


def numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def pair(text: str) -> tuple[float, float]:
    low, high = (float(part) for part in text.split(","))
    return low, high


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=numbers, help="bots, e.g. 1,4,16,64 (the default)")
    parser.add_argument(
        "--batch", type=numbers, help="engine.batch.max_size of each engine (default: 1,16)"
    )
    parser.add_argument("--window-ms", type=float, default=3.0, help="engine.batch.window_ms")
    parser.add_argument("--seconds", type=float, help="each load's duration (default: 10)")
    parser.add_argument(
        "--period", type=pair, help="paced bots: seconds between lines (default: 3,5)"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny model: checks the script on CPU")
    parser.add_argument(
        "--over-server", action="store_true", help="each bot through its own server connection"
    )
    parser.add_argument("--url", help="a running server's WebSocket URL: bots against it only")
    parser.add_argument(
        "--token",
        default=os.environ.get("ISHOWTTS_SERVE_TOKEN", ""),
        help="with --url: the server's token (default: $ISHOWTTS_SERVE_TOKEN)",
    )
    parser.add_argument(
        "--voices", type=lambda t: t.split(","), help="with --url: one or two voice names"
    )
    parser.add_argument(
        "--gpu-memory", action="store_true", help="with --url: peak memory per GPU (nvidia-smi)"
    )
    args = parser.parse_args()
    # The engine's per-step debug lines and start-up notes would bury the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    # --tiny: one small run, a check of the script (a line takes about a second there).
    args.n = args.n or ([2] if args.tiny else [1, 4, 16, 64])
    args.batch = args.batch or ([2] if args.tiny else [1, 16])
    args.seconds = args.seconds or (0.5 if args.tiny else 10.0)
    args.period = args.period or ((0.2, 0.4) if args.tiny else (3.0, 5.0))
    asyncio.run(main(args))
