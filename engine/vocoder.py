"""Vocos decoding replayed from a CUDA graph, backbone and head together.

Vocos is ~60 small kernels; launched one by one they cost more host time than
the GPU needs for them, in the head as in the backbone. Graphs need fixed
shapes, so the mel is padded to a multiple of `bucket` frames and the padding
zeroed before every convolution, which is what the convolutions' own zero
padding does at the true length. The head's inverse STFT is Vocos's own overlap-add,
with the padded frames' spectra zeroed and the window envelope summed over
real frames only: the real samples come out as an unpadded decode gives them.
Vocos checks that envelope on the host (a sync a graph cannot hold); here it
is checked once, when a length's graph is recorded.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import structlog
import torch
import torch.nn.functional as F

from engine.graphs import BUCKET_FRAMES, Recorder
from engine.sampler import padded_length

log = structlog.get_logger()


def masked_backbone(backbone: Any, mel: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """`VocosBackbone.forward` on a padded mel (batch, n_mels, length); `keep`
    (batch, 1, length) is 1 on real frames. Real frames equal the unpadded run."""
    x = backbone.embed(mel * keep)
    x = backbone.norm(x.transpose(1, 2)).transpose(1, 2)
    for block in backbone.convnext:
        x = block(x * keep)
    out: torch.Tensor = backbone.final_layer_norm(x.transpose(1, 2))
    return out


def masked_head(head: Any, hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Vocos's `ISTFTHead` on padded frames (batch, length, dim), `keep` (batch, length)
    1 on real ones: audio (batch, samples at `length` frames), whose first
    `samples(head, frames)` samples equal the head's output at the true length."""
    istft = head.istft
    x = head.out(hidden).transpose(1, 2)
    mag, phase = x.chunk(2, dim=1)
    mag = torch.clip(torch.exp(mag), max=1e2)
    spec = mag * (torch.cos(phase) + 1j * torch.sin(phase)) * keep[:, None, :]
    frames = torch.fft.irfft(spec, istft.n_fft, dim=1, norm="backward")
    norm = _envelope(istft, keep)
    # Past the real samples the envelope is 0: leave silence there, not NaN.
    audio = _overlap_add(istft, frames * istft.window[None, :, None]) / norm
    return torch.where(norm > ENVELOPE_FLOOR, audio, 0.0)


#: Vocos's own bound: a sample whose window envelope is below it has no inverse STFT.
ENVELOPE_FLOOR = 1e-11


def _envelope(istft: Any, keep: torch.Tensor) -> torch.Tensor:
    """The squared window overlapped and added over the frames `keep` (batch, n)
    marks: what the inverse STFT divides by."""
    return _overlap_add(istft, istft.window[None, :, None].square() * keep[:, None, :])


def samples(head: Any, frames: int) -> int:
    """How many samples Vocos's head makes of `frames` frames."""
    istft = head.istft
    return max(0, int((frames - 1) * istft.hop_length + istft.win_length - 2 * _trim(istft)))


def _trim(istft: Any) -> int:
    if istft.padding == "center":  # torch.istft(center=True)
        return int(istft.n_fft // 2)
    return int((istft.win_length - istft.hop_length) // 2)


def _overlap_add(istft: Any, frames: torch.Tensor) -> torch.Tensor:
    """Windowed frames (batch, win_length, n) overlapped and added, padding trimmed."""
    size = (frames.shape[-1] - 1) * istft.hop_length + istft.win_length
    out = F.fold(frames, (1, size), (1, istft.win_length), stride=(1, istft.hop_length))
    return out[:, 0, 0, _trim(istft) : size - _trim(istft)]


def masked_decode(vocos: Any, mel: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """`Vocos.decode` of a mel (batch, n_mels, length) whose first `frames` (a 0-d
    tensor, so that a graph reads it) frames are real."""
    keep = (torch.arange(mel.shape[-1], device=mel.device) < frames).to(mel.dtype)[None]
    hidden = masked_backbone(vocos.backbone, mel, keep[:, None])
    return masked_head(vocos.head, hidden, keep)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    mel: torch.Tensor
    frames: torch.Tensor
    audio: torch.Tensor


class GraphVocoder:
    """`Vocos.decode` for one mel (1, n_mels, frames), as a graph per bucket."""

    def __init__(self, vocos: Any, bucket: int = BUCKET_FRAMES) -> None:
        self.vocos = vocos
        self.bucket = bucket
        self._graphs: dict[int, _Graph | None] = {}
        self._recorder = Recorder()
        #: One decode at a time (the graphs' static tensors are shared).
        self._lock = threading.Lock()

    @torch.inference_mode()
    def decode(self, mel: torch.Tensor) -> torch.Tensor:
        frames = mel.shape[-1]
        length = padded_length(frames, self.bucket)
        with self._lock:
            graph = self._graph(length, mel)
            if graph is None:
                return self.vocos.decode(mel)  # type: ignore[no-any-return]
            graph.mel.zero_()
            graph.mel[..., :frames] = mel
            graph.frames.fill_(frames)
            graph.graph.replay()
            return graph.audio[:, : samples(self.vocos.head, frames)].clone()

    @torch.inference_mode()
    def capture(self, frames: int, device: str) -> None:
        """Records the graph that `frames` frames use (at warm-up, so none is on air)."""
        length = padded_length(frames, self.bucket)
        channels = self.vocos.backbone.input_channels
        with self._lock:
            self._graph(length, torch.zeros(1, channels, 1, device=device))

    def _graph(self, length: int, like: torch.Tensor) -> _Graph | None:
        if length not in self._graphs:
            try:
                self._graphs[length] = self._record(length, like)
            except Exception as exc:  # an eager decode still works
                log.warning("engine.vocoder_graph_failed", frames=length, error=str(exc))
                self._graphs[length] = None
        return self._graphs[length]

    def _record(self, length: int, like: torch.Tensor) -> _Graph:
        from vocos.heads import ISTFTHead

        if getattr(self.vocos.backbone, "adanorm", False):
            raise ValueError("conditioned Vocos backbones are decoded eagerly")
        if type(self.vocos.head) is not ISTFTHead:
            raise ValueError(f"{type(self.vocos.head).__name__} heads are decoded eagerly")
        _check_envelope(self.vocos.head, length)
        mel = torch.zeros(1, like.shape[1], length, device=like.device, dtype=like.dtype)
        frames = torch.tensor(length, device=like.device)
        with tf32_matmuls():
            graph, audio = self._recorder.record(
                lambda: masked_decode(self.vocos, mel, frames), cudnn=False
            )
        return _Graph(graph, mel, frames, audio)


@contextlib.contextmanager
def tf32_matmuls() -> Iterator[None]:
    """fp32 matmuls on TF32 tensor cores while a decode graph is recorded (the graph
    keeps the kernels chosen then). Vocos's weights stay fp32; its matmuls have a
    few hundred rows, where cuBLAS's plain fp32 kernels took about half a chat
    line's decode; TF32 halves the decode and moves the samples about as little
    as the fp32 graph does (bench/FINDINGS.md). The switch is process-wide; the
    engine's thread is the only one recording."""
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    matmul.fp32_precision = "tf32"
    try:
        yield
    finally:
        matmul.fp32_precision = before


def _check_envelope(head: Any, length: int) -> None:
    """Vocos's own check, once per length instead of once per decode: every
    sample is under some window (hop and window allow an inverse STFT)."""
    window = head.istft.window
    keep = torch.ones(1, length, device=window.device, dtype=window.dtype)
    if not bool((_envelope(head.istft, keep) > ENVELOPE_FLOOR).all()):
        raise ValueError("the vocoder's window does not cover every sample (NOLA)")
