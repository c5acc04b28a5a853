"""Find and load the published weights: F5-TTS (safetensors + vocab.txt) and Vocos.

The model is built with the `f5-tts` package's own classes, so a checkpoint
that loads here loads there too, and vice versa. Mistakes in the files are
reported by file name with what is wrong (missing keys, unexpected keys,
wrong shapes), never as a bare stack trace.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch

from engine.audio import SAMPLE_RATE
from engine.config import ArchConfig, EngineConfig

log = structlog.get_logger()

F5_REPO = "SWivid/F5-TTS"
F5_MODEL_FILE = "F5TTS_v1_Base/model_1250000.safetensors"
F5_VOCAB_FILE = "F5TTS_v1_Base/vocab.txt"
VOCOS_REPO = "charactr/vocos-mel-24khz"
VOCOS_CONFIG_FILE = "config.yaml"
VOCOS_WEIGHTS_FILE = "pytorch_model.bin"

# The mel front end the published model and vocoder share.
N_MELS = 100
HOP_LENGTH = 256
WIN_LENGTH = 1024
N_FFT = 1024

#: Keys in the published EMA checkpoint that are bookkeeping, not weights.
_EMA_PREFIX = "ema_model."
_NOT_WEIGHTS = frozenset({"initted", "step"})
#: Buffers older checkpoints saved; the model recomputes them.
_RECOMPUTED = frozenset({"mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window"})


class CheckpointError(Exception):
    """A model file is missing, unreadable, or does not fit the architecture."""


@dataclass(frozen=True, slots=True)
class ModelFiles:
    model: Path
    vocab: Path
    vocoder_config: Path
    vocoder_weights: Path


def resolve_files(
    config: EngineConfig, allow_download: bool | None = None, probe_timeout_s: float = 10.0
) -> ModelFiles:
    """Config paths first, then the Hugging Face cache, then (online) a download.
    The first failed download ends the search: offline, nothing else is tried."""
    if allow_download is None:
        allow_download = os.environ.get("HF_HUB_OFFLINE", "") not in ("1", "true", "True")
    wanted: dict[str, tuple[Path | None, str, str]] = {
        "model": (config.model_path, F5_REPO, F5_MODEL_FILE),
        "vocab": (
            config.vocab_path
            or (config.model_path.parent / "vocab.txt" if config.model_path else None),
            F5_REPO,
            F5_VOCAB_FILE,
        ),
        "vocoder_config": (
            config.vocoder_path / VOCOS_CONFIG_FILE if config.vocoder_path else None,
            VOCOS_REPO,
            VOCOS_CONFIG_FILE,
        ),
        "vocoder_weights": (
            config.vocoder_path / VOCOS_WEIGHTS_FILE if config.vocoder_path else None,
            VOCOS_REPO,
            VOCOS_WEIGHTS_FILE,
        ),
    }
    found: dict[str, Path] = {}
    missing: list[str] = []
    #: Why downloading stopped; after the first failure no other file is tried.
    offline: str | None = None if allow_download else "downloads are off (HF_HUB_OFFLINE)"
    for role, (configured, repo, filename) in wanted.items():
        path = None
        if configured is not None:
            path = configured if configured.is_file() else None
        else:
            path = _cached(repo, filename)
            if path is None and offline is None:
                path, offline = _download(repo, filename, probe_timeout_s)
        if path is None:
            missing.append(str(configured) if configured else f"{repo}/{filename}")
        else:
            found[role] = path
    if missing:
        why = f" ({offline})" if offline and allow_download else ""
        raise CheckpointError(
            "model files not found: "
            + ", ".join(missing)
            + why
            + ". Put them where engine.model_path / engine.vocab_path / engine.vocoder_path "
            "point (the F5TTS_v1_Base model_1250000.safetensors and vocab.txt from "
            f"huggingface.co/{F5_REPO}, and config.yaml + pytorch_model.bin from "
            f"huggingface.co/{VOCOS_REPO}), or run once with internet access to download them."
        )
    return ModelFiles(**found)


def _cached(repo: str, filename: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cached = try_to_load_from_cache(repo, filename)
    return Path(cached) if isinstance(cached, str) else None


def _download(repo: str, filename: str, probe_timeout_s: float) -> tuple[Path | None, str | None]:
    """The file from the Hub, with the Hub's own progress bar on a terminal; else
    None and why. One quick request first: unreachable, the Hub client would retry
    each file for about 25 s before saying so."""
    from huggingface_hub import hf_hub_download, hf_hub_url

    url = hf_hub_url(repo, filename)
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=probe_timeout_s):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            return _download_failed(repo, filename, f"the Hub answered {exc.code}")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return _download_failed(repo, filename, f"cannot reach {url.split('/')[2]}: {reason}")
    try:
        log.info("engine.downloading", repo=repo, file=filename)
        return Path(hf_hub_download(repo, filename)), None
    except Exception as exc:
        return _download_failed(repo, filename, str(exc))


def _download_failed(repo: str, filename: str, error: str) -> tuple[None, str]:
    log.warning("engine.download_failed", repo=repo, file=filename, error=error)
    return None, error


def read_vocab(path: Path) -> dict[str, int]:
    """vocab.txt: one token per line, its index is its line number (space is 0)."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"vocab file {path}: cannot read ({exc})") from None
    if lines and lines[-1] == "":
        lines.pop()
    vocab = {token: i for i, token in enumerate(lines)}
    if not vocab or vocab.get(" ") != 0:
        raise CheckpointError(f"vocab file {path}: first entry must be a space (index 0)")
    return vocab


def build_f5(arch: ArchConfig, vocab: dict[str, int], init: bool = True) -> Any:
    """An untrained CFM(DiT) of the given shape, from `f5-tts`'s own classes.

    With `init` False the DiT's weights are left unset (on the meta device) for a
    checkpoint to fill: drawing random values for 336 M weights only to
    overwrite them took 2-4.5 s of every start."""
    from f5_tts.model.backbones.dit import DiT
    from f5_tts.model.cfm import CFM

    with contextlib.nullcontext() if init else torch.device("meta"):
        transformer = DiT(
            dim=arch.dim,
            depth=arch.depth,
            heads=arch.heads,
            ff_mult=arch.ff_mult,
            text_dim=arch.text_dim,
            conv_layers=arch.conv_layers,
            text_mask_padding=True,
            qk_norm=None,
            pe_attn_head=None,
            text_num_embeds=len(vocab),
            mel_dim=N_MELS,
        )
    return CFM(
        transformer=transformer,
        mel_spec_kwargs={
            "n_fft": N_FFT,
            "hop_length": HOP_LENGTH,
            "win_length": WIN_LENGTH,
            "n_mel_channels": N_MELS,
            "target_sample_rate": SAMPLE_RATE,
            "mel_spec_type": "vocos",
        },
        odeint_kwargs={"method": "euler"},
        vocab_char_map=vocab,
    )


def load_f5(files: ModelFiles, arch: ArchConfig, device: str, dtype: torch.dtype) -> Any:
    """The F5-TTS model with the checkpoint's EMA weights, ready for inference."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    vocab = read_vocab(files.vocab)
    model = build_f5(arch, vocab, init=False)
    try:
        raw = load_file(str(files.model), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"model file {files.model}: not a readable safetensors file ({exc})"
        ) from None
    weights = {
        k.removeprefix(_EMA_PREFIX): v
        for k, v in raw.items()
        if k not in _NOT_WEIGHTS and k.removeprefix(_EMA_PREFIX) not in _RECOMPUTED
    }
    _check_fits(files.model, model.state_dict(), weights, hint=_arch_hint(arch))
    model.load_state_dict(weights, assign=True)
    _recompute_buffers(model.transformer)
    return model.to(device=device, dtype=dtype).eval()


def _recompute_buffers(dit: Any) -> None:
    """The DiT's state that checkpoints do not hold, computed as its constructor
    does (the rest came from the file, in place of the meta tensors)."""
    from f5_tts.model.modules import precompute_freqs_cis

    text = dit.text_embed
    if getattr(text, "extra_modeling", False):
        dim = text.text_embed.embedding_dim
        text.freqs_cis = precompute_freqs_cis(dim, text.precompute_max_pos)
    tensors = itertools.chain(dit.named_parameters(), dit.named_buffers())
    unset = [name for name, t in tensors if t.is_meta]
    if unset:  # an f5-tts release with state of a kind this loader does not know
        raise CheckpointError(f"the model's {', '.join(unset)} not loaded")


def load_vocos(files: ModelFiles, device: str) -> Any:
    """The Vocos vocoder (kept in float32: it is cheap and fp16 costs quality)."""
    from vocos import Vocos

    try:
        vocoder = Vocos.from_hparams(str(files.vocoder_config))
    except Exception as exc:
        raise CheckpointError(f"vocoder config {files.vocoder_config}: {exc}") from None
    try:
        state = torch.load(files.vocoder_weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"vocoder weights {files.vocoder_weights}: cannot read ({exc})"
        ) from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"vocoder weights {files.vocoder_weights}: not a state dict")
    _check_fits(files.vocoder_weights, vocoder.state_dict(), state, hint="")
    vocoder.load_state_dict(state)
    return vocoder.to(device).eval()


def _check_fits(
    path: Path, expected: Mapping[str, torch.Tensor], given: Mapping[str, Any], hint: str
) -> None:
    missing = sorted(expected.keys() - given.keys())
    unexpected = sorted(given.keys() - expected.keys())
    shapes = [
        f"{k} (file {tuple(given[k].shape)}, model {tuple(expected[k].shape)})"
        for k in sorted(expected.keys() & given.keys())
        if tuple(getattr(given[k], "shape", ())) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:3])}")
    if shapes:
        problems.append(f"{len(shapes)} wrong shape(s), e.g. {'; '.join(shapes[:2])}")
    if problems:
        raise CheckpointError(f"{path} does not fit the model: " + "; ".join(problems) + hint)


def _arch_hint(arch: ArchConfig) -> str:
    if arch == ArchConfig():
        return ""
    return " (engine.arch differs from the published F5TTS_v1_Base values: is that intended?)"
