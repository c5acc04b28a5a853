"""Vocos decoding with its backbone replayed from a CUDA graph.

Vocos's backbone is ~40 small kernels; launched one by one they cost more
host time than the GPU needs for them (on the bench's H100: decode 2.8 ms
eager, 1.0 ms with the backbone replayed). Graphs need fixed shapes, so the
mel is padded to a multiple of `bucket` frames and the padding zeroed before
every convolution, which is what the convolutions' own zero padding does at
the true length: the real frames come out as an unpadded decode gives them.
The head (a linear layer and an inverse STFT) runs eagerly on the real
frames; it checks its window on the host, which a graph cannot hold.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import structlog
import torch

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


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    mel: torch.Tensor
    keep: torch.Tensor
    hidden: torch.Tensor


class GraphVocoder:
    """`Vocos.decode` for one mel (1, n_mels, frames), backbone as a graph per bucket."""

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
            graph.keep.copy_((torch.arange(length, device=mel.device) < frames).to(mel.dtype))
            graph.graph.replay()
            hidden = graph.hidden[:, :frames].clone()
        return self.vocos.head(hidden)  # type: ignore[no-any-return]

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
        backbone = self.vocos.backbone
        if getattr(backbone, "adanorm", False):
            raise ValueError("conditioned Vocos backbones are decoded eagerly")
        mel = torch.zeros(1, like.shape[1], length, device=like.device, dtype=like.dtype)
        keep = torch.ones(1, 1, length, device=like.device, dtype=like.dtype)
        graph, hidden = self._recorder.record(
            lambda: masked_backbone(backbone, mel, keep), cudnn=False
        )
        return _Graph(graph, mel, keep, hidden)
