from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import torch
from structlog.testing import capture_logs

from engine import chunking
from engine.checkpoints import HOP_LENGTH
from engine.faults import apply_fault
from engine.kernels import Kernels
from engine.synth import Engine, SynthesisError, SynthesisStalled
from engine.voices import TARGET_RMS
from engine.worker import MAX_STUCK_THREADS, _Job

LONG = " ".join(f"This is sentence number {i} of a long message." for i in range(8))


async def collect(
    engine: Engine, text: str, voice: str = "alice", seed: int = 1
) -> list[np.ndarray]:
    return [chunk async for chunk in engine.stream(text, voice, seed=seed)]


async def test_one_chunk_per_sentence_of_float32_audio(engine: Engine) -> None:
    chunks = await collect(engine, "Hello chat. 你好！ Mixed text, 中文 and English.")
    assert len(chunks) == 3
    for chunk in chunks:
        assert chunk.dtype == np.float32 and chunk.ndim == 1
        assert np.isfinite(chunk).all()
        assert np.abs(chunk).max() > 0


async def test_output_length_follows_the_duration_rule(engine: Engine) -> None:
    voice = engine.voices.get("alice")
    ref_frames = len(voice.audio) // HOP_LENGTH
    ref_text = voice.text + " "
    text = "A single sentence of chat for the length check"
    (chunk,) = await collect(engine, text)
    frames = chunking.duration_frames(ref_frames, ref_text, text) - ref_frames
    decoded = engine._vocoder.decode(torch.zeros(1, 100, frames)).shape[-1]
    assert len(chunk) == decoded
    assert abs(len(chunk) - frames * HOP_LENGTH) <= HOP_LENGTH


async def test_a_faster_request_is_shorter_by_its_speed(engine: Engine) -> None:
    text = "A single sentence of chat read at two paces"
    (normal,) = await collect(engine, text)
    (fast,) = [c async for c in engine.stream(text, "alice", seed=1, speed=1.3)]
    assert abs(len(fast) / len(normal) - 1 / 1.3) < 0.03
    with pytest.raises(ValueError, match="speed"):
        await anext(engine.stream(text, "alice", speed=5.0))


async def test_chunks_are_cross_faded(engine: Engine) -> None:
    text = "First sentence here. Second sentence there."
    joined = np.concatenate(await collect(engine, text))
    separate = [
        np.concatenate(await collect(engine, part))
        for part in ("First sentence here.", "Second sentence there.")
    ]
    fade = int(engine.config.cross_fade_ms / 1000 * 24000)
    assert len(joined) == sum(len(s) for s in separate) - fade


async def test_first_chunk_arrives_before_the_last_is_computed(engine: Engine) -> None:
    before = engine.steps_run
    stream = engine.stream(LONG, "alice", seed=1)
    first = await stream.__anext__()
    steps_at_first = engine.steps_run - before
    rest = [c async for c in stream]
    total = engine.steps_run - before
    assert len(first) > 0 and len(rest) == 7
    assert total == 8 * 8
    assert steps_at_first < total / 2


async def test_cancel_stops_within_one_step(engine: Engine) -> None:
    stream = engine.stream(LONG, "alice", seed=1)
    await stream.__anext__()
    with capture_logs() as logs:
        await stream.aclose()
        at_cancel = engine.steps_run
        await asyncio.sleep(0.5)
    assert engine.steps_run - at_cancel <= 1
    assert any(e["event"] == "engine.cancelled" for e in logs)
    # And the engine serves the next request.
    assert len(await collect(engine, "Still here.")) == 1


async def test_speech_for_the_air_starts_before_waiting_previews(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The order jobs start in, as the inference thread takes them.
    started: list[tuple[str, int]] = []
    run = Engine._run

    def spy(self: Engine, job: _Job) -> None:
        started.append((job.text[:9], first_job.chunks if first_job else 0))
        run(self, job)

    first_job: _Job | None = None
    monkeypatch.setattr(Engine, "_run", spy)

    async def drain(stream: AsyncIterator[np.ndarray]) -> None:
        async for _ in stream:
            pass

    first = engine.stream("Preview 1 " + LONG, "alice", seed=1, preview=True)
    await first.__anext__()  # the first preview runs, seven sentences to go
    first_job = engine._job
    assert first_job is not None and first_job.text.startswith("Preview 1")
    waiting = [
        asyncio.create_task(drain(engine.stream(text, "alice", seed=1, preview=preview)))
        for text, preview in (
            ("Preview 2 " + LONG, True),
            ("Preview 3 " + LONG, True),
            ("On air: a viewer's line.", False),  # queued last
        )
    ]
    await asyncio.gather(drain(first), *waiting)
    assert [text for text, _ in started] == [
        "Preview 1",
        "On air: a",  # between the running preview's sentences
        "Preview 2",
        "Preview 3",
    ]
    on_air_at = started[1][1]
    assert 1 <= on_air_at < 8  # the first preview had not finished


async def test_a_failed_request_does_not_stop_the_engine(engine: Engine) -> None:
    with (
        capture_logs() as logs,
        pytest.raises(
            SynthesisError,
            match=r"voice 'nobody' not found .* \(have: alice, mei, builtin-en, builtin-zh\)",
        ),
    ):
        await collect(engine, "hello", voice="nobody")
    assert logs[0]["event"] == "engine.error"
    assert len(await collect(engine, "hello again")) == 1


async def test_voice_cache_hit_on_second_call(engine: Engine, voices_dir: Path) -> None:
    await collect(engine, "one", voice="mei")
    hits = engine.voices.hits
    await collect(engine, "two", voice="mei")
    assert engine.voices.hits == hits + 1
    (voices_dir / "mei.txt").write_text("新的文本。", encoding="utf-8")
    await collect(engine, "three", voice="mei")
    assert engine.voices.hits == hits + 1  # re-read, not served from cache
    assert engine.voices.get("mei").text == "新的文本。"


async def test_same_seed_same_audio(engine: Engine) -> None:
    a = np.concatenate(await collect(engine, "Repeatable output.", seed=7))
    b = np.concatenate(await collect(engine, "Repeatable output.", seed=7))
    assert np.array_equal(a, b)


async def test_a_voices_volume_and_a_quiet_clips_loudness_scale_its_audio(
    engine: Engine, voices_dir: Path
) -> None:
    # alice's clip again with volume 0.5 in its settings: the same speech at
    # half the level. And the clip at a quarter and an eighth of its level:
    # both are raised to the target loudness for the model (the same speech),
    # then given back their own, so the quieter one comes out at half.
    import soundfile as sf

    audio, rate = sf.read(voices_dir / "alice.wav", dtype="float32")
    text = engine.voices.get("alice").text
    for name, level in (("half", 1.0), ("quarter", 0.25), ("eighth", 0.125)):
        (voices_dir / f"{name}.txt").write_text(text)
        sf.write(voices_dir / f"{name}.wav", audio * level, rate, subtype="FLOAT")
    (voices_dir / "half.yaml").write_text("volume: 0.5\n")
    out = {
        name: await collect(engine, "Scaled output.", voice=name, seed=7)
        for name in ("alice", "half", "quarter", "eighth")
    }
    assert engine.voices.get("quarter").rms < TARGET_RMS
    for whole, halved in zip(out["alice"], out["half"], strict=True):
        assert halved.dtype == np.float32
        np.testing.assert_allclose(halved, whole * 0.5, rtol=1e-5, atol=1e-7)
    for quarter, eighth in zip(out["quarter"], out["eighth"], strict=True):
        assert eighth.dtype == np.float32 and np.abs(eighth).max() > 0
        np.testing.assert_allclose(eighth, quarter * 0.5, rtol=1e-3, atol=1e-6)
    # Given back its own level: a quarter of the clip's loudness comes out
    # quieter than the clip's own voice does.
    assert np.abs(np.concatenate(out["quarter"])).max() < np.abs(np.concatenate(out["alice"])).max()


async def test_empty_text_gives_no_audio(engine: Engine) -> None:
    assert await collect(engine, "   ") == []


async def test_loading_failure_is_reported_by_wait_ready(tmp_path: Path, voices_dir: Path) -> None:
    from engine.checkpoints import CheckpointError, ModelFiles
    from engine.config import EngineConfig
    from engine.voices import VoiceLibrary

    missing = tmp_path / "none"
    files = ModelFiles(
        missing / "m.safetensors", missing / "vocab.txt", missing / "c.yaml", missing / "w.bin"
    )
    eng = Engine(EngineConfig(), VoiceLibrary(voices_dir), files)
    eng.start()
    with pytest.raises(CheckpointError):
        await eng.wait_ready()
    eng.close()


@pytest.fixture
async def faulty_engine(
    tiny_files: Path, voices_dir: Path, tmp_path: Path
) -> AsyncIterator[Engine]:
    from engine.config import EngineConfig
    from engine.voices import VoiceLibrary
    from tests.engine.tiny import TINY_ARCH

    config = EngineConfig(
        arch=TINY_ARCH, nfe_steps=4, stall_timeout_s=1.0, fault_file=tmp_path / "fault"
    )
    eng = Engine(config, VoiceLibrary(voices_dir), tiny_files)  # type: ignore[arg-type]
    eng.start()
    await eng.wait_ready()
    yield eng
    eng.close()


async def test_fault_file_makes_the_next_synthesis_raise_once(faulty_engine: Engine) -> None:
    assert faulty_engine.config.fault_file is not None
    faulty_engine.config.fault_file.write_text("raise")
    with capture_logs() as logs, pytest.raises(SynthesisError, match="injected fault"):
        await collect(faulty_engine, "this one fails")
    assert [e["event"] for e in logs] == ["engine.fault_injected", "engine.error"]
    assert not faulty_engine.config.fault_file.exists()  # consumed
    assert len(await collect(faulty_engine, "this one works")) == 1
    assert faulty_engine.errors == 1


async def test_a_hung_synthesis_is_abandoned_and_the_queue_moves_on(
    faulty_engine: Engine,
) -> None:
    assert faulty_engine.config.fault_file is not None
    faulty_engine.config.fault_file.write_text("hang 3")
    hung = asyncio.ensure_future(collect(faulty_engine, "this one hangs"))
    queued = asyncio.ensure_future(collect(faulty_engine, "this one waits behind it"))
    with capture_logs() as logs:
        started = asyncio.get_running_loop().time()
        with pytest.raises(SynthesisStalled, match="no progress"):
            await hung
        waited = asyncio.get_running_loop().time() - started
        # The request queued behind the stuck one is served by a fresh thread,
        # long before the stuck one wakes up.
        assert len(await queued) == 1
        served = asyncio.get_running_loop().time() - started
    assert 0.9 <= waited < 3.0
    assert served < 3.5
    (stalled,) = [e for e in logs if e["event"] == "engine.stalled"]
    assert stalled["stuck_threads"] == 1 and stalled["stalled_s"] >= 1.0
    assert faulty_engine.stalls == 1 and faulty_engine.errors == 1
    # When the stuck thread wakes, it notices it was replaced, drops its work and
    # leaves; the engine keeps one serving thread.
    await asyncio.sleep(3.0)
    workers = [t.name for t in threading.enumerate() if t.name.startswith("ishowtts-engine")]
    assert sorted(workers) == ["ishowtts-engine-1", "ishowtts-engine-watchdog"]
    assert len(await collect(faulty_engine, "and on it goes")) == 1


async def test_too_many_stuck_threads_fail_requests_at_once(faulty_engine: Engine) -> None:
    assert faulty_engine.config.fault_file is not None
    for n in range(MAX_STUCK_THREADS):
        faulty_engine.config.fault_file.write_text("hang 30")
        with pytest.raises(SynthesisStalled):
            await collect(faulty_engine, f"hang number {n}")
    with capture_logs() as logs, pytest.raises(SynthesisError, match="engine is stuck"):
        async with asyncio.timeout(0.5):
            await collect(faulty_engine, "fails fast")
    assert logs[-1]["event"] == "engine.error" and logs[-1]["error"] == "stuck"


def test_unknown_fault_is_logged_and_ignored(tmp_path: Path) -> None:
    path = tmp_path / "fault"
    path.write_text("explode now")
    with capture_logs() as logs:
        apply_fault(path)
    assert logs == [
        {"event": "engine.fault_unknown", "content": "explode now", "log_level": "warning"}
    ]
    apply_fault(None)
    apply_fault(tmp_path / "absent")


def test_without_triton_the_engine_warns_once_and_uses_cuda_graphs(
    tiny_files: Path, voices_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    from engine import kernels
    from engine.config import EngineConfig
    from tests.engine.tiny import TINY_ARCH

    monkeypatch.setattr(kernels, "triton_installed", lambda: False)
    config = EngineConfig(arch=TINY_ARCH, device="cuda", compile=True, cuda_graphs=True)
    with capture_logs() as logs:
        chosen = kernels.choose(config, "cuda", torch.float16)
    assert chosen.graphs and not chosen.compiled
    assert chosen.path == "graphs"
    warnings = [e for e in logs if e["event"] == "engine.compile_unavailable"]
    assert len(warnings) == 1 and warnings[0]["fallback"] == "cuda graphs"


async def test_a_failed_graph_capture_falls_back_to_eager_and_still_starts(
    tiny_files: Path, voices_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.config import EngineConfig
    from engine.voices import VoiceLibrary
    from tests.engine.tiny import TINY_ARCH

    # On this CPU-only machine a CUDA graph cannot be captured: the first capture
    # fails at warm-up, as it would on a GPU whose driver refuses graphs.
    graphed = Kernels(compiled=False, graphs=True, conv="package", attention="mask")
    config = EngineConfig(arch=TINY_ARCH, nfe_steps=4)
    eng = Engine(config, VoiceLibrary(voices_dir), tiny_files, kernels=graphed)  # type: ignore[arg-type]
    with capture_logs() as logs:
        eng.start()
        await eng.wait_ready()
    try:
        assert eng.path == "eager"
        fallbacks = [e for e in logs if e["event"] == "engine.graphs_unavailable"]
        assert len(fallbacks) == 1 and fallbacks[0]["fallback"] == "no graphs"
        assert [e["path"] for e in logs if e["event"] == "engine.ready"] == ["eager"]
        assert len(await collect(eng, "Still speaking after the fallback.")) == 1
    finally:
        eng.close()


async def test_ready_says_where_the_start_up_time_went(tiny_files: Path, voices_dir: Path) -> None:
    # Operators (and the benchmark) read engine.ready to see what a start cost:
    # loading, then each warm-up line (the first one compiles where compiling is on).
    from engine.config import EngineConfig
    from engine.voices import VoiceLibrary
    from tests.engine.tiny import TINY_ARCH

    eng = Engine(EngineConfig(arch=TINY_ARCH, nfe_steps=4), VoiceLibrary(voices_dir), tiny_files)  # type: ignore[arg-type]
    with capture_logs() as logs:
        eng.start()
        await eng.wait_ready()
    eng.close()
    (ready,) = [e for e in logs if e["event"] == "engine.ready"]
    assert ready["path"] == "eager"
    assert ready["conv"] == "package"  # the Triton convolutions are for GPUs
    assert ready["attention"] == "sdpa"  # so is cuDNN's padding mask
    assert ready["kernels"] == "eager/package/mask"
    assert "graphs_s" not in ready  # no graphs on this path
    phases = [ready[k] for k in ("load_s", "first_line_s", "second_line_s")]
    assert all(isinstance(p, float) and p > 0 for p in phases)
    assert isinstance(ready["setup_s"], float) and ready["setup_s"] >= 0
    parts = ready["setup_s"] + ready["first_line_s"] + ready["second_line_s"]
    assert parts <= ready["warmup_s"] + 0.03


def test_engine_threads_take_the_configured_gpu_as_their_current_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Graph capture streams and Triton launches follow the thread's current
    # device, so an engine on cuda:1 must make it current on its own threads.
    from engine import startup

    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    for device in ("cuda:1", "cuda", "cpu", "cuda:0"):
        startup.bind_device(device)
    assert chosen == [1, 0]


async def test_a_compiler_that_cannot_build_costs_a_warning_not_the_start(
    tiny_files: Path, voices_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Triton installed without a C compiler (a fresh Ubuntu desktop) fails at the
    # first compile. The engine drops what fails and keeps going down: on this
    # CPU-only machine the graphs fail first (no CUDA stream to record on), then
    # the compile in the eager steps.
    from engine import dit
    from engine.config import EngineConfig
    from engine.voices import VoiceLibrary
    from tests.engine.tiny import TINY_ARCH

    def no_compiler(gm: object, example_inputs: object) -> object:
        raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")

    def compile_regions(transformer: object) -> None:
        for block in dit.blocks(transformer):
            block.compile(backend=no_compiler, dynamic=True)

    monkeypatch.setattr(dit, "compile_regions", compile_regions)
    everything = Kernels(compiled=True, graphs=True, conv="package", attention="column")
    config = EngineConfig(arch=TINY_ARCH, nfe_steps=4)
    eng = Engine(config, VoiceLibrary(voices_dir), tiny_files, kernels=everything)  # type: ignore[arg-type]
    with capture_logs() as logs:
        eng.start()
        await eng.wait_ready()
    try:
        warnings = [e for e in logs if e["log_level"] == "warning"]
        assert [e["event"] for e in warnings] == [
            "engine.graphs_unavailable",
            "engine.compile_failed",
        ]
        assert warnings[1]["fallback"] == "eager"
        assert "C compiler" in warnings[1]["error"]
        assert [e["path"] for e in logs if e["event"] == "engine.ready"] == ["eager"]
        assert all(b._compiled_call_impl is None for b in dit.blocks(eng._model.transformer))
        assert len(await collect(eng, "Still speaking without the compiler.")) == 1
    finally:
        eng.close()


def test_fall_back_order_on_a_gpu_compile_then_graphs_then_nothing(
    tiny_files: Path, voices_dir: Path
) -> None:
    # On a GPU the compile fails inside the first graph's recording: the graphs
    # are kept (recorded afresh, uncompiled); only a later failure drops them.
    from torch._dynamo.exc import TorchDynamoException

    from engine import dit, graphs, kernels, sampler
    from engine.checkpoints import load_f5
    from engine.config import EngineConfig
    from engine.voices import VoiceLibrary
    from tests.engine.tiny import TINY_ARCH

    eng = Engine(EngineConfig(arch=TINY_ARCH, nfe_steps=4), VoiceLibrary(voices_dir), tiny_files)  # type: ignore[arg-type]
    eng._model = load_f5(tiny_files, TINY_ARCH, "cpu", torch.float32)  # type: ignore[arg-type]
    eng._vocoder = eng._decoder = object()
    dit.compile_regions(eng._model.transformer)
    eng._use(Kernels(compiled=True, graphs=True, conv="package", attention="column"))
    first = eng._runner
    with capture_logs() as logs:
        assert eng._fall_back(TorchDynamoException("Failed to find C compiler"))
        assert isinstance(eng._runner, graphs.GraphSteps) and eng._runner is not first
        assert eng.kernels == Kernels(compiled=False, graphs=True, conv="package", attention="mask")
        assert all(b._compiled_call_impl is None for b in dit.blocks(eng._model.transformer))
        assert eng._fall_back(RuntimeError("CUDA graphs unsupported"))
        assert isinstance(eng._runner, sampler.EagerSteps)
        assert eng.kernels == kernels.EAGER
        assert not eng._fall_back(RuntimeError("the model itself is broken"))
    assert [(e["event"], e["fallback"]) for e in logs] == [
        ("engine.compile_failed", "cuda graphs"),
        ("engine.graphs_unavailable", "no graphs"),
    ]
