"""Tiny random-weight checkpoints written in exactly the published formats:
F5-TTS as an EMA safetensors file + vocab.txt, Vocos as config.yaml + pytorch_model.bin.
Their output is noise: they test the code paths, never speech quality."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml
from safetensors.torch import save_file

from engine.checkpoints import ModelFiles, build_f5, read_vocab
from engine.config import ArchConfig

TINY_ARCH = ArchConfig(dim=64, depth=2, heads=2, ff_mult=2, text_dim=32, conv_layers=1)


def published_vocab() -> Path:
    """The F5TTS_v1_Base vocabulary, which f5-tts ships with its examples."""
    import f5_tts

    return Path(next(iter(f5_tts.__path__))) / "infer" / "examples" / "vocab.txt"


def write_f5(directory: Path, arch: ArchConfig = TINY_ARCH, seed: int = 0) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    vocab_path = directory / "vocab.txt"
    shutil.copyfile(published_vocab(), vocab_path)
    torch.manual_seed(seed)
    model = build_f5(arch, read_vocab(vocab_path))
    # Random weights everywhere, including the layers DiT zero-initialises,
    # so the output actually depends on every weight.
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.05)
    state = {
        f"ema_model.{k}": v.contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith("mel_spec.")
    }
    state["initted"] = torch.tensor(True)
    state["step"] = torch.tensor(1_250_000)
    model_path = directory / "model_1250000.safetensors"
    save_file(state, str(model_path))
    return model_path, vocab_path


VOCOS_CONFIG = {
    "feature_extractor": {
        "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
        "init_args": {
            "sample_rate": 24000,
            "n_fft": 1024,
            "hop_length": 256,
            "n_mels": 100,
            "padding": "center",
        },
    },
    "backbone": {
        "class_path": "vocos.models.VocosBackbone",
        "init_args": {"input_channels": 100, "dim": 32, "intermediate_dim": 64, "num_layers": 1},
    },
    "head": {
        "class_path": "vocos.heads.ISTFTHead",
        "init_args": {"dim": 32, "n_fft": 1024, "hop_length": 256, "padding": "center"},
    },
}


#: The published charactr/vocos-mel-24khz shape, for benchmarks with random weights.
PUBLISHED_VOCOS_CONFIG = {
    **VOCOS_CONFIG,
    "backbone": {
        "class_path": "vocos.models.VocosBackbone",
        "init_args": {"input_channels": 100, "dim": 512, "intermediate_dim": 1536, "num_layers": 8},
    },
    "head": {
        "class_path": "vocos.heads.ISTFTHead",
        "init_args": {"dim": 512, "n_fft": 1024, "hop_length": 256, "padding": "same"},
    },
}


def write_vocos(
    directory: Path, seed: int = 0, config_doc: dict[str, object] | None = None
) -> Path:
    from vocos import Vocos

    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.yaml"
    config.write_text(yaml.safe_dump(config_doc or VOCOS_CONFIG))
    torch.manual_seed(seed)
    vocoder = Vocos.from_hparams(str(config))
    torch.save(vocoder.state_dict(), directory / "pytorch_model.bin")
    return directory


def write_all(root: Path) -> ModelFiles:
    model, vocab = write_f5(root / "f5")
    vocos_dir = write_vocos(root / "vocos")
    return ModelFiles(model, vocab, vocos_dir / "config.yaml", vocos_dir / "pytorch_model.bin")


def write_voice(
    directory: Path,
    name: str = "alice",
    text: str = "This is the reference clip.",
    seconds: float = 3.0,
    rate: int = 24000,
    channels: int = 1,
    amplitude: float = 0.3,
    suffix: str = ".wav",
    gaps: bool = True,
) -> Path:
    """A speech-like test clip: a vowel-ish harmonic tone with syllable-rate gaps."""
    directory.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((150, 300, 450, 900)))
    envelope = (np.sin(2 * np.pi * 4 * t) > -0.3).astype(np.float64) if gaps else 1.0
    audio = (tone / np.max(np.abs(tone)) * envelope * amplitude).astype(np.float32)
    if channels > 1:
        audio = np.stack([audio] * channels, axis=1)
    path = directory / f"{name}{suffix}"
    sf.write(str(path), audio, rate)
    (directory / f"{name}.txt").write_text(text, encoding="utf-8")
    return path
