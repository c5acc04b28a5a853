"""CUDA graphs of one sampling step, one per padded length.

A guided DiT step launches hundreds of small kernels; launched one by one
from Python the GPU mostly waits. Captured once as a CUDA graph and replayed,
the step costs what its kernels cost. Graphs need fixed shapes, so lengths
are padded up to a multiple of `bucket` frames (the padding is masked out,
see `engine.dit`) and one graph is captured per bucket, on first use. Works
with or without torch.compile underneath, and needs no Triton.

All graphs share one memory pool: they replay one at a time on the engine
thread, and nothing they allocate outlives a replay (inputs and the step's
result live in each graph's own static tensors).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog
import torch

from engine import dit
from engine.sampler import EagerSteps

log = structlog.get_logger()

#: 128 mel frames = 1.37 s of audio: a few percent of padding on a chat line,
#: and about 20 graphs cover everything up to 30 s.
BUCKET_FRAMES = 128

#: Untimed runs before a capture (they also trigger any torch.compile work).
WARMUP_RUNS = 2


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    x: torch.Tensor
    cond: torch.Tensor
    text: torch.Tensor
    null_text: torch.Tensor
    mask: torch.Tensor
    t: torch.Tensor
    dt: torch.Tensor


class GraphSteps:
    """Replays a captured step graph for each sampling step (see module docstring)."""

    def __init__(self, bucket: int = BUCKET_FRAMES) -> None:
        self._bucket = bucket
        #: By (batch, length, guidance).
        self._graphs: dict[tuple[int, int, float], _Graph | None] = {}
        self._pool: Any = None
        #: The calling thread's graph in use (see EagerSteps on why per thread).
        self._local = threading.local()
        #: Lengths whose capture failed run eagerly (padded and masked all the same).
        self._eager = EagerSteps(bucket)

    @property
    def bucket(self) -> int:
        return self._bucket

    def length(self, frames: int) -> int:
        return self._eager.length(frames)

    def start(
        self,
        transformer: Any,
        x: torch.Tensor,
        cond: torch.Tensor,
        embeds: dit.TextEmbeds,
        mask: torch.Tensor | None,
        cfg_strength: float,
    ) -> None:
        key = (x.shape[0], x.shape[1], cfg_strength)
        if key not in self._graphs:
            self._graphs[key] = self._try_capture(transformer, x, cond, embeds, cfg_strength)
        graph = self._graphs[key]
        self._local.graph = graph
        if graph is None:
            self._eager.start(transformer, x, cond, embeds, mask, cfg_strength)
            return
        graph.x.copy_(x)
        graph.cond.copy_(cond)
        graph.text.copy_(embeds.cond)
        graph.null_text.copy_(embeds.uncond)
        if mask is None:
            graph.mask.fill_(True)
        else:
            graph.mask.copy_(mask)

    def step(self, t: torch.Tensor, dt: torch.Tensor) -> None:
        graph: _Graph | None = self._local.graph
        if graph is None:
            self._eager.step(t, dt)
            return
        graph.t.copy_(t)
        graph.dt.copy_(dt)
        graph.graph.replay()

    def result(self) -> torch.Tensor:
        graph: _Graph | None = self._local.graph
        self._local.graph = None
        if graph is None:
            return self._eager.result()
        return graph.x.clone()

    def _try_capture(
        self,
        transformer: Any,
        x: torch.Tensor,
        cond: torch.Tensor,
        embeds: dit.TextEmbeds,
        cfg_strength: float,
    ) -> _Graph | None:
        """A capture that fails costs this length its graph, never the request."""
        try:
            return self._capture(transformer, x, cond, embeds, cfg_strength)
        except Exception as exc:
            if not self._graphs:  # the first capture's failure is the engine's to handle
                raise
            log.warning("engine.graph_capture_failed", frames=x.shape[1], error=str(exc))
            return None

    def _capture(
        self,
        transformer: Any,
        x: torch.Tensor,
        cond: torch.Tensor,
        embeds: dit.TextEmbeds,
        cfg_strength: float,
    ) -> _Graph:
        started = time.perf_counter()
        dit.allow_padding(transformer)
        scalar = torch.zeros((), device=x.device, dtype=x.dtype)
        static = _Graph(
            graph=torch.cuda.CUDAGraph(),
            x=torch.zeros_like(x),
            cond=torch.zeros_like(cond),
            text=torch.zeros_like(embeds.cond),
            null_text=torch.zeros_like(embeds.uncond),
            mask=torch.ones(x.shape[:2], device=x.device, dtype=torch.bool),
            t=scalar.clone(),
            dt=scalar.clone(),
        )
        embeds_in = dit.TextEmbeds(static.text, static.null_text)

        def step() -> None:
            v = dit.velocity(
                transformer, static.x, static.cond, embeds_in, static.mask, static.t, cfg_strength
            )
            static.x.copy_((static.x + static.dt * v) * static.mask[..., None])

        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                step()
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(static.graph, pool=self._pool):
            step()
        log.info(
            "engine.graph_captured",
            frames=x.shape[1],
            batch=x.shape[0],
            capture_ms=round((time.perf_counter() - started) * 1000, 1),
            graphs=len(self._graphs) + 1,
        )
        return static
