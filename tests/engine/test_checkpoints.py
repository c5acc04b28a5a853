from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from engine.checkpoints import CheckpointError, ModelFiles, load_f5, load_vocos, resolve_files
from engine.config import ArchConfig, EngineConfig
from tests.engine.tiny import TINY_ARCH


def test_our_loader_and_f5_tts_loader_agree(tiny_files: ModelFiles) -> None:
    from f5_tts.infer.utils_infer import load_checkpoint, load_vocoder

    ours = load_f5(tiny_files, TINY_ARCH, "cpu", torch.float32)
    from engine.checkpoints import build_f5, read_vocab

    theirs = load_checkpoint(
        build_f5(TINY_ARCH, read_vocab(tiny_files.vocab)),
        str(tiny_files.model),
        "cpu",
        dtype=torch.float32,
        use_ema=True,
    )
    mine, other = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == other.keys()
    assert all(torch.equal(mine[k], other[k]) for k in mine)
    # Ours builds the DiT without drawing weights (meta tensors, then the file's);
    # what no file holds (the text embedding's position table) is computed alike.
    buffers, their_buffers = dict(ours.named_buffers()), dict(theirs.named_buffers())
    assert "transformer.text_embed.freqs_cis" in buffers.keys() - mine.keys()
    assert buffers.keys() == their_buffers.keys()
    assert all(torch.equal(buffers[k], their_buffers[k]) for k in buffers)
    assert not any(p.is_meta for p in ours.parameters())

    vocoder = load_vocos(tiny_files, "cpu")
    reference = load_vocoder(
        "vocos", is_local=True, local_path=str(tiny_files.vocoder_config.parent), device="cpu"
    )
    mel = torch.randn(1, 100, 20)
    assert torch.allclose(vocoder.decode(mel), reference.decode(mel))


def test_published_shape_is_the_default() -> None:
    arch = ArchConfig()
    assert (arch.dim, arch.depth, arch.heads, arch.ff_mult, arch.text_dim, arch.conv_layers) == (
        1024,
        22,
        16,
        2,
        512,
        4,
    )


def test_config_paths_are_used(tiny_files: ModelFiles) -> None:
    config = EngineConfig(
        model_path=tiny_files.model, vocoder_path=tiny_files.vocoder_config.parent
    )
    files = resolve_files(config, allow_download=False)
    assert files == tiny_files  # vocab.txt found next to the model


def test_missing_files_offline_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(CheckpointError) as info:
        resolve_files(EngineConfig(), allow_download=False)
    message = str(info.value)
    assert message.startswith(
        "model files not found: SWivid/F5-TTS/F5TTS_v1_Base/model_1250000.safetensors"
    )
    assert "charactr/vocos-mel-24khz/pytorch_model.bin" in message
    assert "engine.model_path" in message


def test_configured_path_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=str(tmp_path / "nope.safetensors")):
        resolve_files(
            EngineConfig(model_path=tmp_path / "nope.safetensors", vocoder_path=tmp_path),
            allow_download=False,
        )


def test_corrupt_model_file_named(tiny_files: ModelFiles, tmp_path: Path) -> None:
    bad = tmp_path / "model_1250000.safetensors"
    bad.write_bytes(b"\x00\x01 definitely not safetensors")
    files = ModelFiles(bad, tiny_files.vocab, tiny_files.vocoder_config, tiny_files.vocoder_weights)
    with pytest.raises(CheckpointError, match=f"model file {bad}: not a readable safetensors file"):
        load_f5(files, TINY_ARCH, "cpu", torch.float32)


def test_mismatched_architecture_names_keys_and_shapes(tiny_files: ModelFiles) -> None:
    wrong = ArchConfig(dim=64, depth=3, heads=2, ff_mult=2, text_dim=48, conv_layers=1)
    with pytest.raises(CheckpointError) as info:
        load_f5(tiny_files, wrong, "cpu", torch.float32)
    message = str(info.value)
    assert message.startswith(f"{tiny_files.model} does not fit the model:")
    assert "missing key(s), e.g. transformer.transformer_blocks.2." in message
    assert (
        "wrong shape(s), e.g. transformer.input_embed.proj.weight (file (64, 232), model (64, 248))"
        in message
    )
    assert "engine.arch differs from the published" in message


def test_vocab_must_start_with_space(tmp_path: Path, tiny_files: ModelFiles) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\n")
    files = ModelFiles(
        tiny_files.model, vocab, tiny_files.vocoder_config, tiny_files.vocoder_weights
    )
    with pytest.raises(CheckpointError, match="first entry must be a space"):
        load_f5(files, TINY_ARCH, "cpu", torch.float32)


def test_bad_vocoder_files(tiny_files: ModelFiles, tmp_path: Path) -> None:
    shutil.copy(tiny_files.vocoder_config, tmp_path / "config.yaml")
    (tmp_path / "pytorch_model.bin").write_bytes(b"garbage")
    files = ModelFiles(
        tiny_files.model, tiny_files.vocab, tmp_path / "config.yaml", tmp_path / "pytorch_model.bin"
    )
    with pytest.raises(CheckpointError, match=r"vocoder weights .*pytorch_model\.bin: cannot read"):
        load_vocos(files, "cpu")
    torch.save({"backbone.embed.weight": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin does not fit the model"):
        load_vocos(files, "cpu")


RESOLVE = (
    "import sys, time\n"
    "from bot.logs import configure_logging, flush_logs\n"
    "from engine.config import EngineConfig\n"
    "from engine.checkpoints import CheckpointError, resolve_files\n"
    "configure_logging('info', 'json')\n"
    "started = time.monotonic()\n"
    "try:\n"
    "    resolve_files(EngineConfig(), probe_timeout_s=float(sys.argv[1]))\n"
    "except CheckpointError as exc:\n"
    "    flush_logs()\n"
    "    print(round(time.monotonic() - started, 2), exc)\n"
)


@pytest.mark.parametrize("server", ["refuses", "never_answers"])
def test_offline_the_first_failed_download_ends_the_wait(tmp_path: Path, server: str) -> None:
    # Offline, a first run used to retry every file five times (95 s) before
    # saying anything; now the first failure ends it with the full message.
    import json
    import socket
    import subprocess
    import sys

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if server == "never_answers":
        listener.listen()  # connections are accepted by the OS and never answered
    else:
        listener.close()  # nothing listens: connections are refused
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": f"http://127.0.0.1:{port}",
        "HF_HUB_OFFLINE": "0",
    }
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", RESOLVE, "1.0"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    listener.close()
    took, _, message = result.stdout.partition(" ")
    assert float(took) < 5, result.stdout
    assert message.startswith("model files not found: SWivid/F5-TTS/F5TTS_v1_Base/model_")
    assert f"cannot reach 127.0.0.1:{port}" in message
    assert "engine.model_path" in message and "engine.vocoder_path" in message
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    failed = [e for e in events if e["event"] == "engine.download_failed"]
    assert len(failed) == 1, events
