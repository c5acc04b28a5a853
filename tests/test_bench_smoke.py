"""The benchmarks run, so they cannot rot: `python -m bench.engine --tiny` end to end on
the CPU (tiny random model, stock and our eager path), and the chat benchmarks'
--quick`, as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.step_profile import category

ROOT = Path(__file__).resolve().parent.parent


def run_bench(
    cwd: Path, *args: str, module: str = "bench.engine"
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,  # about 15 s alone; 2 busy cores
    )


def test_tiny_run_measures_stock_and_ours_and_writes_nothing(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = run_bench(cwd, "--tiny")
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    paths = {r["path"] for r in records if r["event"] == "result"}
    assert paths == {"stock", "ours_eager"}
    ours = next(r for r in records if r["event"] == "result" and r["path"] == "ours_eager")
    assert ours["ttfa_ms_median"] > 0 and ours["audio_s"] > 0
    assert next(r for r in records if r["event"] == "equivalence")["ok"]
    assert list(cwd.iterdir()) == []  # no bench/results/ unless --out asks


def test_help_lists_the_options(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--out", "--runs", "--tiny", "--paths"):
        assert option in result.stdout


def test_profile_categories_read_kernel_names() -> None:
    assert category("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16") == "attention"
    assert category("nvjet_sm90_hsh_128x128_64x6_2x1_v_bz_bias_TNT") == "gemm"
    assert category("conv_mish") == "conv"
    assert category("triton_poi_fused_add_mul_0") == "triton"
    assert category("elementwise_kernel") == "other"


def test_emote_strip_bench_runs_and_prints_its_figure(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "bench.emote_strip", "--quick", "--names", "500"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("500 emote names")
    assert "worst remove_words:" in result.stdout.splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


def test_speech_text_bench_runs_quick(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "bench.speech_text", "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "en: money and count" in result.stdout
    assert "zh: ordinal, mixed" in result.stdout
    assert '"9" x 1,600' in result.stdout


def test_pacing_quick_run_prints_both_rows(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "--quick", module="bench.pacing")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.lstrip().startswith("3x")]
    assert [r[1] for r in rows] == ["off", "on"]
    assert all(r[-1] == "yes" for r in rows)  # every message ended exactly once
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("over_server", [False, True], ids=["in_process", "over_server"])
def test_serve_load_tiny_run_prints_each_load_and_the_ceiling(
    tmp_path: Path, over_server: bool
) -> None:
    flags = ["--tiny", "--over-server"] if over_server else ["--tiny"]
    result = run_bench(tmp_path, *flags, module="bench.serve_load")
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    loads = [r for r in records if r["event"] == "load"]
    assert [(r["batch"], r["load"], r["n"]) for r in loads] == [(2, "paced", 2), (2, "flood", 2)]
    for r in loads:
        assert r["lines"] > 0 and r["errors"] == 0 and r["lines_per_s"] > 0
        assert 0 < r["first_ms_p50"] <= r["first_ms_p99"]
        assert 1 <= r["batch_mean"] <= r["batch_max"] <= 2
        assert r["over_server"] is over_server
    ceilings = [r for r in records if r["event"] == "ceiling"]
    assert [r["lines"] for r in ceilings] == ["flood", "chat"]
    via = "server " if over_server else "in-proc"
    assert f"{via} B=2   flood N=2 " in result.stdout.split("summary:")[1]


def test_serve_latency_tiny_run_prints_its_figures(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "--tiny", "--runs", "2", module="bench.serve_latency")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = next(json.loads(line) for line in result.stdout.splitlines() if '"summary"' in line)
    assert summary["runs"] == 2 and summary["same_audio"] is True
    assert 0 < summary["wire_ms_median"] < summary["remote_ms_median"]
    last = result.stdout.splitlines()[-1]
    assert last.startswith("first audio, cpu (eager), short line, 2 runs: in-process ")
    assert "the wire's own share: median" in last
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("ray") is None, reason="Ray is not installed"
)
def test_serve_deploy_tiny_run_starts_measures_and_stops_each_deployment(tmp_path: Path) -> None:
    result = run_bench(tmp_path, "--tiny", "--plain", "--out", str(tmp_path / "out"),
                       module="bench.serve_deploy")  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    loads = [(r["deployment"], r["load"]) for r in records if r["event"] == "load"]
    assert loads == [
        ("plain", "paced"),
        ("plain", "flood"),
        ("ray x1", "paced"),
        ("ray x1", "flood"),
    ]
    assert all(r["errors"] == 0 and r["lines"] > 0 for r in records if r["event"] == "load")
    stopped = [(r["label"], r["exit"]) for r in records if r["event"] == "stopped"]
    assert stopped == [("plain", 0), ("ray x1", 0)]
