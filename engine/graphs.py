"""CUDA graphs of a request's text embedding and of one sampling step, per padded length.

A guided DiT step launches hundreds of small kernels; launched one by one
from Python the GPU mostly waits. Captured once as a CUDA graph and replayed,
the step costs what its kernels cost. Graphs need fixed shapes, so lengths
are padded up to a multiple of `bucket` frames (the padding is masked out,
see `engine.dit`) and one graph is captured per bucket, on first use. Works
with or without torch.compile underneath, and needs no Triton. The request's
text embedding (eight small ConvNeXt blocks, twice) is a graph of its own:
launched op by op it cost about 6 ms of host time per request on the bench's
H100 host, replayed 0.64 ms.

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
from engine.sampler import EagerSteps, StepInputs

log = structlog.get_logger()

#: 128 mel frames = 1.37 s of audio: a few percent of padding on a chat line,
#: and about 20 graphs cover everything up to 30 s.
BUCKET_FRAMES = 128

#: Untimed runs before a capture (they also trigger any torch.compile work).
WARMUP_RUNS = 2


@dataclass
class _Graph:
    embed: torch.cuda.CUDAGraph  # the request's text embeddings
    step: torch.cuda.CUDAGraph  # one Euler step
    x: torch.Tensor
    cond: torch.Tensor
    ids: torch.Tensor
    embeds: dit.TextEmbeds
    mask: torch.Tensor
    mod: torch.Tensor  # this step's row of dit.modulations
    dt: torch.Tensor


class GraphSteps:
    """Replays captured graphs: the text embedding once per request, then one
    graph per sampling step (see module docstring)."""

    def __init__(self, bucket: int = BUCKET_FRAMES) -> None:
        self._bucket = bucket
        #: By (batch, length, guidance).
        self._graphs: dict[tuple[int, int, float], _Graph | None] = {}
        self._pool: Any = None
        #: One side stream for every capture's warm-up runs: cuBLAS keeps a
        #: workspace per stream, so a stream per capture cost ~30 MB each.
        self._stream: Any = None
        #: The calling thread's graph in use (see EagerSteps on why per thread).
        self._local = threading.local()
        #: Lengths whose capture failed run eagerly (padded and masked all the same).
        self._eager = EagerSteps(bucket)

    @property
    def bucket(self) -> int:
        return self._bucket

    def length(self, frames: int) -> int:
        return self._eager.length(frames)

    def start(self, inputs: StepInputs) -> None:
        key = (inputs.x.shape[0], inputs.x.shape[1], inputs.cfg_strength)
        if key not in self._graphs:
            self._graphs[key] = self._try_capture(inputs)
        graph = self._graphs[key]
        self._local.graph = graph
        self._local.inputs = inputs
        if graph is None:
            self._eager.start(inputs)
            return
        graph.ids.copy_(inputs.text)
        graph.embed.replay()
        graph.x.copy_(inputs.x)
        graph.cond.copy_(inputs.cond)
        if inputs.mask is None:
            graph.mask.fill_(True)
        else:
            graph.mask.copy_(inputs.mask)

    def step(self, i: int) -> None:
        graph: _Graph | None = self._local.graph
        if graph is None:
            self._eager.step(i)
            return
        inputs: StepInputs = self._local.inputs
        graph.mod.copy_(inputs.mods[i : i + 1])
        graph.dt.copy_(inputs.dts[i])
        graph.step.replay()

    def result(self) -> torch.Tensor:
        graph: _Graph | None = self._local.graph
        self._local.graph = self._local.inputs = None
        if graph is None:
            return self._eager.result()
        return graph.x.clone()

    def _try_capture(self, inputs: StepInputs) -> _Graph | None:
        """A capture that fails costs this length its graph, never the request."""
        try:
            return self._capture(inputs)
        except Exception as exc:
            if not self._graphs:  # the first capture's failure is the engine's to handle
                raise
            log.warning("engine.graph_capture_failed", frames=inputs.x.shape[1], error=str(exc))
            return None

    def _capture(self, inputs: StepInputs) -> _Graph:
        started = time.perf_counter()
        transformer, x, cfg_strength = inputs.transformer, inputs.x, inputs.cfg_strength
        dit.prepare(transformer)
        scalar = torch.zeros((), device=x.device, dtype=x.dtype)
        ids = inputs.text.clone()
        embeds = dit.text_embeds(transformer, ids)
        static = _Graph(
            embed=torch.cuda.CUDAGraph(),
            step=torch.cuda.CUDAGraph(),
            x=torch.zeros_like(x),
            cond=torch.zeros_like(inputs.cond),
            ids=ids,
            embeds=dit.TextEmbeds(torch.zeros_like(embeds.cond), torch.zeros_like(embeds.uncond)),
            mask=torch.ones(x.shape[:2], device=x.device, dtype=torch.bool),
            mod=torch.zeros_like(inputs.mods[:1]),
            dt=scalar,
        )

        def embed() -> None:
            out = dit.text_embeds(transformer, static.ids)
            static.embeds.cond.copy_(out.cond)
            static.embeds.uncond.copy_(out.uncond)

        def step() -> None:
            v = dit.velocity(transformer, static.x, static.cond, static.embeds, static.mask,
                             static.mod, cfg_strength)  # fmt: skip
            static.x.copy_((static.x + static.dt * v) * static.mask[..., None])

        if self._stream is None:
            self._stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side = self._stream
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                embed()
                step()
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(static.embed, pool=self._pool):
            embed()
        with torch.cuda.graph(static.step, pool=self._pool):
            step()
        log.info(
            "engine.graph_captured",
            frames=x.shape[1],
            batch=x.shape[0],
            capture_ms=round((time.perf_counter() - started) * 1000, 1),
            graphs=len(self._graphs) + 1,
        )
        return static
