"""The soak harness: `ishowtts run` under chat load with faults, read back from
its JSON log, a lag probe, /proc and the audio sink.

The bot is the real thing (subprocess, config file, tiny random-weight engine on
CPU, PulseAudio null sink); Twitch and Bilibili are the loopback servers from
their adapters' tests, speaking the real wire protocols. Every chat message a
server hands to a live connection is followed to its one terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bot.chat.outcomes import TERMINAL_EVENTS
from engine.checkpoints import ModelFiles
from tests.bilibili import fixtures as fx
from tests.bilibili.fake_server import FakeBilibili
from tests.botprocess import ROOT, command
from tests.runconfig import free_port, write_run_config
from tests.sink import LevelMeter, ensure_null_sink, remove_null_sink
from tests.soak import malformed
from tests.soak.traffic import Traffic, twitch_clearchat, twitch_clearmsg
from tests.twitch.fake_server import FakeTwitch

#: Log events that mean a part of the bot crashed (caught, but a bug all the same).
CRASH_EVENTS = frozenset(
    {"bot.task_crashed", "adapter.crashed", "router.error", "outcomes.listener_error"}
)


#: After the planned time, how long chat goes on while faults finish recovering.
RECOVERY_GRACE_S = 90.0


@dataclass(frozen=True)
class SoakPlan:
    seconds: float = 180.0
    #: Chat messages per second, over both platforms.
    rate: float = 50.0
    #: A fault every this many seconds (None: no faults, e.g. a flood).
    fault_every_s: float | None = 10.0
    #: The RSS baseline is taken this long after chat starts.
    warmup_s: float = 30.0
    #: How often each server sends a batch (one WebSocket frame).
    batch_s: float = 0.02
    stall_timeout_s: float = 3.0
    refuse_s: float = 30.0
    queue_max: int = 50
    #: A Bilibili superchat this often (paid priority; retracted in bursts).
    superchat_every_s: float = 5.0


@dataclass(frozen=True)
class Criteria:
    lag_p99_ms: float = 20.0
    rss_growth_pct: float | None = 5.0
    peak_dbfs: float = -1.0
    faults_recover: bool = True
    overflow_logged: bool = False


@dataclass
class FaultRecord:
    name: str
    at_s: float
    handled_s: float | None = None
    recovered_s: float | None = None


@dataclass
class SoakReport:
    plan: SoakPlan
    exit_code: int | None = None
    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: int = 0
    lag: dict[str, Any] = field(default_factory=dict)
    blocked: list[float] = field(default_factory=list)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)
    rss_baseline_mb: float = 0.0
    rss_end_mb: float = 0.0
    peak_dbfs: float = float("-inf")
    samples_over: int = 0
    max_queue_depth: int = 0
    queue_polls: int = 0
    faults: list[FaultRecord] = field(default_factory=list)
    crashes: list[dict[str, Any]] = field(default_factory=list)
    #: Warning- and error-level events by name (what went wrong, and how often).
    warnings: Counter[str] = field(default_factory=Counter)
    alsa_messages: int = 0
    other_lines: int = 0
    #: Log lines that start as JSON but do not parse: interleaved or cut writes.
    broken_lines: list[str] = field(default_factory=list)
    other_sample: list[str] = field(default_factory=list)

    @property
    def rss_growth_pct(self) -> float:
        if not self.rss_baseline_mb:
            return 0.0
        return (self.rss_end_mb - self.rss_baseline_mb) / self.rss_baseline_mb * 100

    def figures(self) -> dict[str, Any]:
        return {
            "seconds": self.plan.seconds,
            "rate": self.plan.rate,
            "exit_code": self.exit_code,
            "sent": self.sent,
            "outcomes": dict(self.outcomes),
            "missing": len(self.missing),
            "duplicated": len(self.duplicated),
            "unexpected_ends": self.unexpected,
            "loop_lag_p50_ms": self.lag.get("total_p50_ms"),
            "loop_lag_p99_ms": self.lag.get("total_p99_ms"),
            "loop_lag_max_ms": self.lag.get("total_max_ms"),
            "loop_blocked": len(self.blocked),
            "rss_baseline_mb": round(self.rss_baseline_mb, 1),
            "rss_end_mb": round(self.rss_end_mb, 1),
            "rss_max_mb": round(max((m for _, m in self.rss_mb), default=0.0), 1),
            "rss_growth_pct": round(self.rss_growth_pct, 2),
            "peak_dbfs": round(self.peak_dbfs, 2),
            "samples_over_ceiling": self.samples_over,
            "max_queue_depth": self.max_queue_depth,
            "queue_polls": self.queue_polls,
            "faults": [asdict(f) for f in self.faults],
            "crashes": [c.get("event") for c in self.crashes],
            "warnings": dict(self.warnings),
            "alsa_messages": self.alsa_messages,
            "non_json_lines": self.other_lines,
            "non_json_sample": self.other_sample[:3],
            "broken_log_lines": len(self.broken_lines),
        }

    def failures(self, criteria: Criteria) -> list[str]:
        out = []
        if self.exit_code != 0:
            out.append(f"bot exit code {self.exit_code}")
        if self.sent == 0:
            out.append("no chat was delivered to the bot")
        if self.missing:
            out.append(f"{len(self.missing)} messages with no terminal event: {self.missing[:5]}")
        if self.duplicated:
            out.append(f"{len(self.duplicated)} with several: {self.duplicated[:5]}")
        p99 = self.lag.get("total_p99_ms")
        if p99 is None:
            out.append("no final loop.lag report")
        elif p99 > criteria.lag_p99_ms:
            out.append(f"loop lag p99 {p99} ms > {criteria.lag_p99_ms} ms")
        if criteria.rss_growth_pct is not None and self.rss_growth_pct >= criteria.rss_growth_pct:
            out.append(f"RSS grew {self.rss_growth_pct:.1f} % after warm-up")
        if self.peak_dbfs > criteria.peak_dbfs:
            out.append(f"output peak {self.peak_dbfs:.2f} dBFS > {criteria.peak_dbfs} dBFS")
        if criteria.faults_recover:
            for f in self.faults:
                if f.handled_s is None or f.recovered_s is None:
                    out.append(
                        f"fault {f.name} at {f.at_s:.0f} s: handled={f.handled_s} "
                        f"recovered={f.recovered_s}"
                    )
        if self.broken_lines:
            out.append(f"{len(self.broken_lines)} broken log lines: {self.broken_lines[:2]}")
        if self.crashes:
            out.append(f"crash events: {[c.get('event') for c in self.crashes[:5]]}")
        if self.max_queue_depth > self.plan.queue_max:
            out.append(f"queue depth {self.max_queue_depth} > bound {self.plan.queue_max}")
        if criteria.overflow_logged and not self.outcomes.get("tts.overflow"):
            out.append("no overflow drops logged")
        return out


@dataclass
class _Fault:
    name: str
    inject: Callable[[Soak], Awaitable[None]]
    #: (event, predicate on the record) that shows the bot noticed the fault.
    handled: Callable[[dict[str, Any]], bool]
    #: That the bot is back to normal, given the fault's time and the record.
    recovered: Callable[[Soak, FaultRecord, dict[str, Any]], bool]
    #: Platforms that must be connected for this fault to mean anything.
    needs: tuple[str, ...] = ()


def _event(name: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["event"] == name and all(r.get(k) == v for k, v in fields.items())


def _then(name: str) -> Callable[[Soak, FaultRecord, dict[str, Any]], bool]:
    """The bot logged `name` after noticing the fault."""
    return lambda soak, fault, r: r["event"] == name


def _platform_flows(platform: str) -> Callable[[Soak, FaultRecord, dict[str, Any]], bool]:
    """A message sent on `platform` after the fault reached its end."""

    def check(soak: Soak, fault: FaultRecord, r: dict[str, Any]) -> bool:
        if r["event"] not in TERMINAL_EVENTS or r.get("platform") != platform:
            return False
        sent_at = soak.sent_at.get(f"{platform}:{r.get('msg_id')}")
        return sent_at is not None and sent_at > fault.at_s

    return check


def _reconnected(platform: str) -> Callable[[Soak, FaultRecord, dict[str, Any]], bool]:
    return lambda soak, fault, r: r["event"] == f"{platform}.connected"


class Soak:
    def __init__(self, plan: SoakPlan, files: ModelFiles, workdir: Path) -> None:
        self.plan = plan
        self.files = files
        self.workdir = workdir
        self.report = SoakReport(plan)
        self.traffic = Traffic()
        self.twitch = FakeTwitch()
        self.bilibili = FakeBilibili()
        self.fault_file = workdir / "engine-fault"
        self.port = free_port()
        self.sent_at: dict[str, float] = {}
        self.ends: Counter[str] = Counter()
        self.playing: str | None = None
        self.paused = False
        self.started = 0.0
        self._open_faults: list[tuple[_Fault, FaultRecord]] = []
        self._proc: asyncio.subprocess.Process | None = None

    def now(self) -> float:
        return time.monotonic() - self.started

    # the run -------------------------------------------------------------------
    async def run(self) -> SoakReport:
        async with self.twitch, self.bilibili:
            config = write_run_config(
                self.workdir,
                self.files,
                platforms={
                    "twitch": {"enabled": True, "channels": ["chan"], "url": self.twitch.url},
                    "bilibili": self.bilibili.config(),
                },
                engine={
                    "stall_timeout_s": self.plan.stall_timeout_s,
                    "fault_file": str(self.fault_file),
                },
                queue={"max_size": self.plan.queue_max},
                web={"enabled": True, "host": "127.0.0.1", "port": self.port},
            )
            meter = LevelMeter()
            self._proc = await asyncio.create_subprocess_exec(
                *command("run", "--config", str(config)),
                cwd=ROOT,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                limit=4 * 1024 * 1024,
            )
            reader = asyncio.create_task(self._read_log())
            try:
                await self._wait_live()
                self.started = time.monotonic()
                helpers = [
                    asyncio.create_task(self._sample_rss()),
                    asyncio.create_task(self._poll_queue()),
                ]
                chat = asyncio.create_task(self._chat())
                if self.plan.fault_every_s:
                    await self._inject_faults()
                else:
                    await asyncio.sleep(self.plan.seconds)
                await self._until_recovered(RECOVERY_GRACE_S)
                self.paused = True
                chat.cancel()
                await asyncio.sleep(2.0)  # let the last batches reach their ends
                for task in helpers:
                    task.cancel()
                self._proc.send_signal(signal.SIGTERM)
                self.report.exit_code = await asyncio.wait_for(self._proc.wait(), 60)
                await asyncio.wait_for(reader, 30)
            finally:
                meter.stop()
                if self._proc.returncode is None:
                    self._proc.kill()
                    await self._proc.wait()
                reader.cancel()
        self.report.peak_dbfs = meter.peak_dbfs
        self.report.samples_over = meter.samples_over
        self._settle()
        return self.report

    async def _wait_live(self) -> None:
        async with asyncio.timeout(120):
            while not (self.twitch.live and self.bilibili.live):
                assert self._proc is not None and self._proc.returncode is None, "bot exited"
                await asyncio.sleep(0.05)

    def _settle(self) -> None:
        r = self.report
        r.sent = len(self.sent_at)
        r.missing = [k for k in self.sent_at if self.ends[k] == 0]
        r.duplicated = [k for k, n in self.ends.items() if n > 1]
        r.unexpected = sum(1 for k in self.ends if k not in self.sent_at)
        after = [m for t, m in r.rss_mb if t >= self.plan.warmup_s]
        if after:
            r.rss_baseline_mb = statistics.median(after[:5])
            r.rss_end_mb = statistics.median(after[-5:])

    # chat --------------------------------------------------------------------------
    async def _chat(self) -> None:
        """Chat at the planned rate, by the clock: a slow tick sends a bigger batch."""
        owed = {"twitch": 0.0, "bilibili": 0.0}
        next_sc = self.plan.superchat_every_s
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.plan.batch_s)
            now = time.monotonic()
            for platform in owed:
                # Nothing is owed for time a platform was down: that chat was never sent.
                up = not self.paused and getattr(self, platform).live
                owed[platform] = owed[platform] + self.plan.rate / 2 * (now - last) if up else 0.0
            last = now
            n = int(owed["twitch"])
            if n:
                owed["twitch"] -= n
                batch = self.traffic.twitch(n)
                await self._deliver(batch, self.twitch.send([line for _, line in batch]))
            n = int(owed["bilibili"])
            if n:
                owed["bilibili"] -= n
                docs = self.traffic.bilibili(n)
                if self.now() >= next_sc:
                    next_sc += self.plan.superchat_every_s
                    docs.append(self.traffic.superchat())
                frame = fx.brotli_batch(*(d for _, d in docs))
                await self._deliver(docs, self.bilibili.send(frame))

    async def _deliver(self, batch: list[tuple[str, Any]], sending: Awaitable[None]) -> None:
        try:
            await sending
        except Exception:
            return  # the connection went down: this chat never reached the bot
        at = self.now()
        for key, _ in batch:
            self.sent_at[key] = at

    # faults ------------------------------------------------------------------------
    async def _inject_faults(self) -> None:
        assert self.plan.fault_every_s is not None
        index = 0
        while True:
            due = (index + 1) * self.plan.fault_every_s
            if due >= self.plan.seconds:
                await asyncio.sleep(max(0.0, self.plan.seconds - self.now()))
                return
            await asyncio.sleep(max(0.0, due - self.now()))
            fault = self._next_fault(index)
            # Quiet for a moment, so no chat is in flight on a link the fault cuts.
            self.paused = True
            await asyncio.sleep(0.5)
            record = FaultRecord(fault.name, round(self.now(), 2))
            self.report.faults.append(record)
            self._open_faults.append((fault, record))
            await fault.inject(self)
            await asyncio.sleep(0.3)
            self.paused = False
            index += 1

    async def _until_recovered(self, limit: float) -> None:
        """Chat goes on after the last fault until every fault has recovered (a
        reconnect may be waiting out its backoff), for at most `limit` seconds."""
        deadline = time.monotonic() + limit
        while self._open_faults and time.monotonic() < deadline:
            await asyncio.sleep(0.5)

    def _next_fault(self, index: int) -> _Fault:
        """The next fault in the cycle whose platform is up (an outage may still last)."""
        for step in range(len(FAULTS)):
            fault = FAULTS[(index + step) % len(FAULTS)]
            if all(getattr(self, p).live for p in fault.needs):
                return fault
        return FAULTS[index % len(FAULTS)]

    def _check_faults(self, record: dict[str, Any]) -> None:
        for fault, rec in list(self._open_faults):
            if rec.handled_s is None:
                if fault.handled(record):
                    rec.handled_s = round(self.now() - rec.at_s, 2)
                continue
            if fault.recovered(self, rec, record):
                rec.recovered_s = round(self.now() - rec.at_s, 2)
                self._open_faults.remove((fault, rec))

    # what the bot says ------------------------------------------------------------------
    async def _read_log(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while line := await self._proc.stderr.readline():
            if not line.startswith(b"{"):
                self.report.other_lines += 1
                if len(self.report.other_sample) < 20:
                    self.report.other_sample.append(line.decode(errors="replace").rstrip())
                continue
            try:
                record = json.loads(line)
            except ValueError:
                self.report.broken_lines.append(line.decode(errors="replace")[:500])
                continue
            self._on_record(record)

    def _on_record(self, record: dict[str, Any]) -> None:
        event = record["event"]
        if record.get("level") in ("warning", "error", "critical"):
            self.report.warnings[event] += 1
        if event in TERMINAL_EVENTS:
            key = f"{record.get('platform')}:{record.get('msg_id')}"
            self.ends[key] += 1
            self.report.outcomes[event] += 1
            if key == self.playing:
                self.playing = None
        elif event == "tts.playing":
            msg_id = str(record.get("msg_id"))
            self.playing = ("bilibili:" if msg_id.startswith(("b", "sc:")) else "twitch:") + msg_id
        elif event == "loop.lag" and record.get("final"):
            self.report.lag = record
        elif event == "loop.blocked":
            self.report.blocked.append(record["lag_ms"])
        elif event == "audio.alsa":
            self.report.alsa_messages += 1
        elif event in CRASH_EVENTS:
            self.report.crashes.append(record)
        if self.started:
            self._check_faults(record)

    async def _sample_rss(self) -> None:
        assert self._proc is not None
        status = Path(f"/proc/{self._proc.pid}/status")
        while True:
            with contextlib.suppress(OSError):
                match = re.search(r"VmRSS:\s+(\d+) kB", status.read_text())
                if match:
                    self.report.rss_mb.append((round(self.now(), 1), int(match[1]) / 1024))
            await asyncio.sleep(1.0)

    async def _poll_queue(self) -> None:
        url = f"http://127.0.0.1:{self.port}/metrics"
        async with aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        text = await r.text()
                    match = re.search(r"^ishowtts_queue_depth (\S+)$", text, re.M)
                    if match:
                        depth = int(float(match[1]))
                        self.report.max_queue_depth = max(self.report.max_queue_depth, depth)
                        self.report.queue_polls += 1
                await asyncio.sleep(0.2)

    # helpers for faults -------------------------------------------------------------------
    def pending(self, platform: str) -> list[str]:
        return [k for k in self.sent_at if k.startswith(platform) and not self.ends[k]]


async def _drop_twitch(soak: Soak) -> None:
    soak.twitch.drop()


async def _drop_bilibili(soak: Soak) -> None:
    soak.bilibili.drop()


async def _refuse_twitch(soak: Soak) -> None:
    soak.twitch.refuse_until = time.monotonic() + soak.plan.refuse_s
    soak.twitch.drop()


async def _refuse_bilibili(soak: Soak) -> None:
    soak.bilibili.refuse_until = time.monotonic() + soak.plan.refuse_s
    soak.bilibili.drop()


async def _irc_garbage(soak: Soak) -> None:
    for frame in malformed.irc_frames():
        await soak.twitch.send_raw(frame)


async def _bilibili_garbage(soak: Soak) -> None:
    for frame in malformed.bilibili_frames():
        await soak.bilibili.send(frame)
    # A 100 KB danmaku is well-formed: it is chat, and must reach its end too.
    key, doc = soak.traffic.bilibili(1)[0]
    doc["info"][1] = "长" * 100_000
    await soak._deliver([(key, doc)], soak.bilibili.send(fx.brotli_batch(doc)))


async def _engine_raise(soak: Soak) -> None:
    soak.fault_file.write_text("raise")


async def _engine_hang(soak: Soak) -> None:
    soak.fault_file.write_text(f"hang {soak.plan.stall_timeout_s * 2}")


async def _audio_vanishes(soak: Soak) -> None:
    await asyncio.to_thread(remove_null_sink)
    await asyncio.sleep(2.0)
    await asyncio.to_thread(ensure_null_sink)


async def _retraction_burst(soak: Soak) -> None:
    """Bans and deletions aimed at what is pending and what is playing."""
    pending = soak.pending("twitch")
    lines = []
    if soak.playing and soak.playing.startswith("twitch:"):
        lines.append(twitch_clearmsg(soak.playing.removeprefix("twitch:")))
    users = {soak.traffic.twitch_users[k] for k in pending[-20:]}
    lines += [twitch_clearchat(uid) for uid in sorted(users)[:5]]
    lines += [twitch_clearmsg(k.removeprefix("twitch:")) for k in pending[:10]]
    if lines:
        await soak.twitch.send(lines)
    superchats = [int(k.rsplit(":", 1)[1]) for k in soak.pending("bilibili:sc:")]
    if soak.playing and soak.playing.startswith("bilibili:sc:"):
        superchats.append(int(soak.playing.rsplit(":", 1)[1]))
    if superchats:
        await soak.bilibili.send(fx.brotli_batch(fx.superchat_delete(*superchats)))


#: The cycle. Outages (refusals) are followed by faults elsewhere, so the
#: platform is back before its next turn; a fault whose platform is still down
#: is skipped for the next one.
FAULTS = [
    _Fault(
        "refuse_twitch",
        _refuse_twitch,
        _event("twitch.disconnected"),
        _reconnected("twitch"),
        ("twitch",),
    ),
    _Fault(
        "drop_bilibili",
        _drop_bilibili,
        _event("bilibili.disconnected"),
        _reconnected("bilibili"),
        ("bilibili",),
    ),
    _Fault("engine_raise", _engine_raise, _event("engine.error"), _then("tts.spoken")),
    _Fault(
        "bilibili_garbage",
        _bilibili_garbage,
        _event("bilibili.decode_error"),
        _platform_flows("bilibili"),
        ("bilibili",),
    ),
    _Fault("audio_vanishes", _audio_vanishes, _event("audio.device_error"), _then("audio.opened")),
    _Fault(
        "irc_garbage",
        _irc_garbage,
        _event("twitch.decode_error"),
        _platform_flows("twitch"),
        ("twitch",),
    ),
    _Fault(
        "retraction_burst",
        _retraction_burst,
        _event("tts.retracted"),
        _then("tts.spoken"),
        ("twitch",),
    ),
    _Fault("engine_hang", _engine_hang, _event("engine.stalled"), _then("tts.spoken")),
    _Fault(
        "drop_twitch",
        _drop_twitch,
        _event("twitch.disconnected"),
        _reconnected("twitch"),
        ("twitch",),
    ),
    _Fault(
        "refuse_bilibili",
        _refuse_bilibili,
        _event("bilibili.disconnected"),
        _reconnected("bilibili"),
        ("bilibili",),
    ),
]


async def run_soak(plan: SoakPlan, files: ModelFiles, workdir: Path) -> SoakReport:
    os.makedirs(workdir, exist_ok=True)
    return await Soak(plan, files, workdir).run()
