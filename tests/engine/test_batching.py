"""Requests of several clients served as one batch (`engine.batch`), on the CPU's
tiny model: the same audio as one at a time, whatever the mix of voices,
lengths and step counts; a cancelled request leaves its batch; a lone request
waits no longer than the window; previews still wait behind speech on air."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

from engine.checkpoints import ModelFiles
from engine.config import BatchConfig, EngineConfig
from engine.synth import Engine, SynthesisError, SynthesisStalled
from engine.voices import VoiceLibrary
from engine.worker import Worker, _Job
from tests.engine.tiny import TINY_ARCH

LONG = " ".join(f"This is sentence number {i} of a long message." for i in range(8))
FIVE = " ".join(f"Sentence {i} here." for i in range(5))

#: Different voices (English, Chinese), lengths and sentence counts, each with its seed.
REQUESTS = [
    ("Hello chat, welcome in! Second sentence here.", "alice", 1),
    ("大家好，欢迎来到直播间！", "mei", 2),
    ("A single, rather longer line of chat for the batch.", "alice", 3),
]


async def collect(
    engine: Engine, text: str, voice: str = "alice", seed: int = 1
) -> list[np.ndarray]:
    return [chunk async for chunk in engine.stream(text, voice, seed=seed)]


async def start(
    files: ModelFiles, voices: Path, max_size: int = 4, window_ms: float = 50.0, **config: Any
) -> Engine:
    batch = BatchConfig(max_size=max_size, window_ms=window_ms)
    cfg = EngineConfig(arch=TINY_ARCH, batch=batch, **{"nfe_steps": 8, **config})
    eng = Engine(cfg, VoiceLibrary(voices), files)
    eng.start()
    await eng.wait_ready()
    return eng


@pytest.fixture
async def batching(tiny_files: ModelFiles, voices_dir: Path) -> AsyncIterator[Engine]:
    # A wide window: on two busy cores the requests must all be in before it ends.
    eng = await start(tiny_files, voices_dir)
    yield eng
    eng.close()


def assert_same_audio(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    """Batched against alone: each chunk as long, the samples equal within fp32
    rounding (a batch pads and masks where a lone request does not)."""
    assert [len(c) for c in got] == [len(c) for c in want]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


async def test_concurrent_requests_are_one_batch_and_sound_as_they_do_alone(
    batching: Engine, engine: Engine
) -> None:
    alone = [await collect(engine, text, voice, seed) for text, voice, seed in REQUESTS]
    with capture_logs() as logs:
        together = await asyncio.gather(
            *(collect(batching, text, voice, seed) for text, voice, seed in REQUESTS)
        )
    for got, want in zip(together, alone, strict=True):
        assert_same_audio(got, want)
    batched = [e for e in logs if e["event"] == "engine.batched"]
    # First chunks of all three in one step; then the first request's second sentence.
    assert [(e["size"], e["starting"]) for e in batched] == [(3, 3), (1, 0)]
    assert batching.batch_sizes == {3: 1, 1: 1}
    (gathered,) = [e for e in logs if e["event"] == "engine.gathered"]
    assert gathered["jobs"] == 3


async def test_a_lone_request_waits_at_most_the_window_and_sounds_as_it_does_unbatched(
    tiny_files: ModelFiles, voices_dir: Path, engine: Engine
) -> None:
    # The gathering loop's every wait on the queue is bounded by what is left of the
    # window, and it stops at the window's end: recorded here, not timed.
    waits: list[float] = []  # the timeouts of blocking waits that have one

    class Recorded(queue.PriorityQueue[tuple[int, int, _Job | None]]):
        def get(self, block: bool = True, timeout: float | None = None) -> Any:
            if block and timeout is not None:
                waits.append(timeout)
            return super().get(block, timeout)

    batch = BatchConfig(max_size=4, window_ms=3.0)
    eng = Engine(
        EngineConfig(arch=TINY_ARCH, nfe_steps=8, batch=batch), VoiceLibrary(voices_dir), tiny_files
    )
    eng._jobs = Recorded()
    eng.start()
    await eng.wait_ready()
    try:
        text = "One viewer's line. Then a second sentence."
        want = await collect(engine, text, seed=5)
        waits.clear()
        with capture_logs() as logs:
            got = await collect(eng, text, seed=5)
    finally:
        eng.close()
    # A batch of one is the unbatched computation: the same samples, bit for bit.
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    assert [e["size"] for e in logs if e["event"] == "engine.batched"] == [1, 1]
    (gathered,) = [e for e in logs if e["event"] == "engine.gathered"]
    assert gathered["jobs"] == 1 and gathered["window_ms"] == 3.0
    # One wait for company, of at most the window; the rest of the time the
    # engine waited for work (no timeout) or took what was there (no wait).
    assert len(waits) == 1 and 0 < waits[0] <= 0.003


async def test_a_request_arriving_mid_batch_joins_at_the_next_step(batching: Engine) -> None:
    first = batching.stream(LONG, "alice", seed=1)
    with capture_logs() as logs:
        await anext(first)  # its first sentence is out: the batch runs
        late = await collect(batching, "A late line.", seed=2)
        rest = [c async for c in first]
    assert len(late) == 1 and len(rest) == 7
    batched = [(e["size"], e["starting"]) for e in logs if e["event"] == "engine.batched"]
    assert (2, 1) in batched  # the late line's first chunk beside the long one's next
    assert sum(size for size, _ in batched) == 9  # the long line's 8 + the late one


async def test_a_cancelled_request_leaves_the_batch_and_the_rest_is_unchanged(
    batching: Engine, engine: Engine
) -> None:
    texts = [("Keep. " + FIVE, 1), ("Cancel. " + FIVE, 2), ("Also keep. " + FIVE, 3)]
    alone = [await collect(engine, text, seed=seed) for text, seed in (texts[0], texts[2])]
    streams = [batching.stream(text, "alice", seed=seed) for text, seed in texts]
    with capture_logs() as logs:
        firsts = await asyncio.gather(*(anext(s) for s in streams))
        await streams[1].aclose()  # a skip, mid-way through the batch
        kept = [[firsts[i]] + [c async for c in streams[i]] for i in (0, 2)]
    for got, want in zip(kept, alone, strict=True):
        assert_same_audio(got, want)
    sizes = [e["size"] for e in logs if e["event"] == "engine.batched"]
    assert sizes[0] == 3 and sizes[-1] == 2
    assert sizes.count(3) < 6  # it left before the end of its six sentences
    assert [e["voice"] for e in logs if e["event"] == "engine.cancelled"] == ["alice"]


async def test_a_request_given_up_while_it_waited_takes_no_step(batching: Engine) -> None:
    first = batching.stream(FIVE, "alice", seed=1)
    with capture_logs() as logs:
        await anext(first)
        waiting = asyncio.ensure_future(collect(batching, "Nobody hears this.", seed=2))
        await asyncio.sleep(0)  # queued behind the running batch
        waiting.cancel()  # its listener leaves before it starts
        rest = [c async for c in first]
    assert len(rest) == 4
    assert [e["size"] for e in logs if e["event"] == "engine.batched"] == [1] * 5
    assert len([e for e in logs if e["event"] == "engine.cancelled"]) == 1


async def test_requests_with_different_step_counts_never_share_a_batch(
    batching: Engine, engine: Engine, voices_dir: Path
) -> None:
    (voices_dir / "quick.wav").write_bytes((voices_dir / "alice.wav").read_bytes())
    (voices_dir / "quick.txt").write_text("This is the reference clip.")
    (voices_dir / "quick.yaml").write_text("nfe_steps: 4\n")
    requests = [("Eight steps. And more.", "alice", 1), ("Four steps. And more.", "quick", 2)]
    alone = [await collect(engine, text, voice, seed) for text, voice, seed in requests]
    with capture_logs() as logs:
        together = await asyncio.gather(*(collect(batching, *r) for r in requests))
    for got, want in zip(together, alone, strict=True):
        assert_same_audio(got, want)
    batched = [(e["steps"], e["size"]) for e in logs if e["event"] == "engine.batched"]
    # Taking turns: one step count, then the other, each alone in its batch.
    assert batched == [(8, 1), (4, 1), (8, 1), (4, 1)]


async def test_a_bad_voice_fails_its_own_request_only(batching: Engine) -> None:
    with capture_logs() as logs:
        results = await asyncio.gather(
            collect(batching, "Fine line.", "alice"),
            collect(batching, "Doomed line.", "nobody"),
            collect(batching, "另一句。", "mei"),
            return_exceptions=True,
        )
    assert isinstance(results[1], SynthesisError) and "nobody" in str(results[1])
    assert isinstance(results[0], list) and len(results[0]) == 1
    assert isinstance(results[2], list) and len(results[2]) == 1
    assert [e["size"] for e in logs if e["event"] == "engine.batched"] == [2]
    assert batching.errors == 1


async def test_a_fault_in_the_batch_code_fails_its_requests_not_the_engine(
    batching: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = Engine._batch_step

    def broken(self: Engine, group: list[Any], running: list[Any]) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Engine, "_batch_step", broken)
    async with asyncio.timeout(30):
        results = await asyncio.gather(
            collect(batching, "One."), collect(batching, "Two."), return_exceptions=True
        )
        assert all(isinstance(r, SynthesisError) and "a bug" in str(r) for r in results)
        monkeypatch.setattr(Engine, "_batch_step", step)
        assert len(await collect(batching, "Three.")) == 1


async def test_previews_still_wait_behind_batched_speech_on_air(
    batching: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The order jobs start in: previews one by one (`_run`), on-air lines in batches.
    started: list[str] = []
    run, run_batch = Engine._run, Engine._run_batch

    def spy(self: Engine, job: _Job) -> None:
        started.append(job.text[:9])
        run(self, job)

    def spy_batch(self: Engine, jobs: list[_Job]) -> None:
        started.append("+".join(job.text[:9] for job in jobs))
        run_batch(self, jobs)

    monkeypatch.setattr(Engine, "_run", spy)
    monkeypatch.setattr(Engine, "_run_batch", spy_batch)

    async def drain(stream: AsyncIterator[np.ndarray]) -> int:
        return len([c async for c in stream])

    first = batching.stream("Preview 1 " + LONG, "alice", seed=1, preview=True)
    await anext(first)  # the first preview runs, seven sentences to go
    waiting = [
        asyncio.create_task(drain(batching.stream(text, "alice", seed=1, preview=preview)))
        for text, preview in (
            ("Preview 2 " + LONG, True),
            ("On air: first viewer.", False),
            ("On air: second viewer.", False),
        )
    ]
    counts = await asyncio.gather(drain(first), *waiting)
    assert counts == [7, 8, 1, 1]
    # Both on-air lines in one batch, between the running preview's sentences,
    # before the preview queued ahead of them.
    assert started == ["Preview 1", "On air: f+On air: s", "Preview 2"]


async def test_a_stalled_batch_fails_all_its_requests_and_the_queue_moves_on(
    tiny_files: ModelFiles, voices_dir: Path, tmp_path: Path
) -> None:
    fault = tmp_path / "fault"
    eng = await start(tiny_files, voices_dir, nfe_steps=4, stall_timeout_s=1.0, fault_file=fault)
    try:
        fault.write_text("hang 3")
        with capture_logs() as logs:
            hung = await asyncio.gather(
                collect(eng, "This one hangs."),
                collect(eng, "So does this one, in the same batch."),
                return_exceptions=True,
            )
            # A fresh thread serves what comes next, long before the stuck one wakes.
            assert len(await collect(eng, "And on it goes.")) == 1
        assert all(isinstance(r, SynthesisStalled) for r in hung), hung
        stalled = [e for e in logs if e["event"] == "engine.stalled"]
        assert len(stalled) == 2 and {e["stuck_threads"] for e in stalled} == {1}
        assert eng.stalls == 2 and eng.errors == 2
    finally:
        eng.close()


def test_the_queue_gives_a_batch_only_speech_on_air() -> None:
    # What a gathering or a step in between takes: on-air jobs, never a preview
    # or the stop marker, which keep their places in the queue.
    worker = Worker()
    worker.config = EngineConfig(batch=BatchConfig(max_size=4, window_ms=50.0))
    preview = _Job("p", "alice", None, None, preview=True)
    on_air = [_Job(f"a{i}", "alice", None, None) for i in range(3)]
    for job in (preview, on_air[0], None, on_air[1], on_air[2]):
        worker._put(job)
    # A thread that does not serve the queue (one the watchdog replaced) takes nothing.
    assert worker._take_on_air(4) == []
    worker._worker = threading.current_thread()
    assert worker._take_on_air(2) == on_air[:2]
    # What is there joins at once; then the preview is next: no waiting for more.
    first = _Job("first", "alice", None, None)
    assert worker._gather(first) == [first, on_air[2]]
    assert [entry[2] for entry in sorted(worker._jobs.queue)] == [preview, None]
    assert worker._take_on_air(4) == []
    worker._closing.set()
    worker._put(on_air[0])
    assert worker._take_on_air(4) == []  # closing: no more
