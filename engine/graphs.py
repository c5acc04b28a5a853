"""CUDA graphs of a request's text embedding and of one sampling step, per padded length.

A guided DiT step launches hundreds of small kernels; launched one by one
from Python the GPU mostly waits. Captured once as a CUDA graph and replayed,
the step costs what its kernels cost. Graphs need fixed shapes, so lengths
are padded up to a multiple of `bucket` frames (the padding is masked out,
see `engine.dit`) and one graph is captured per bucket, on first use; batches
of several requests are padded likewise to a few sizes (`sampler.padded_rows`),
with graphs of their own. Works
with or without torch.compile underneath, and needs no Triton. The request's
text embedding (eight small ConvNeXt blocks, twice) is a graph of its own:
launched op by op it costs the host several times what the GPU needs.

All graphs share one memory pool: they replay one at a time on the engine
thread, and nothing they allocate outlives a replay except the text
embedding graph's outputs, which its step graph reads (inputs and the step's
result live in each graph's own static tensors).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
import torch

from engine import dit
from engine.sampler import EagerSteps, StepInputs, padded_rows

log = structlog.get_logger()

#: 128 mel frames = 1.37 s of audio: a few percent of padding on a chat line,
#: and about 20 graphs cover everything up to 30 s. Finer buckets step no
#: faster (bench/FINDINGS.md).
BUCKET_FRAMES = 128

#: Untimed runs before a capture (they also trigger any torch.compile work).
WARMUP_RUNS = 2

T = TypeVar("T")


class Recorder:
    """Records CUDA graphs: untimed runs on one side stream, then the capture.

    One side stream for every capture: cuBLAS keeps a workspace per stream, and
    a stream per capture cost about 30 MB a graph. One memory pool for every
    graph: they replay one at a time, and nothing they allocate outlives a
    replay except the outputs the caller keeps.
    """

    def __init__(self) -> None:
        self._stream: Any = None
        self._pool: Any = None

    def record(self, fn: Callable[[], T], cudnn: bool = True) -> tuple[torch.cuda.CUDAGraph, T]:
        """`fn`'s work as a graph, and `fn`'s result (its tensors are rewritten by
        every replay). With `cudnn` False, convolutions are recorded with
        PyTorch's own kernels: cuDNN builds a plan for every new length, which
        made recording a length's depthwise convolutions take a quarter of a
        second (cuDNN is a global switch: this is for the one engine thread)."""
        if self._stream is None:
            self._stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
            self._pool = torch.cuda.graph_pool_handle()
        side = self._stream
        with torch.backends.cudnn.flags(enabled=cudnn):
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS):
                    fn()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                out = fn()
        return graph, out


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

    def __init__(self, bucket: int = BUCKET_FRAMES, max_rows: int = 1) -> None:
        """`max_rows`: the largest batch of requests (`engine.batch.max_size`)."""
        self._bucket = bucket
        self._max_rows = max_rows
        #: By (batch, length, guidance).
        self._graphs: dict[tuple[int, int, float], _Graph | None] = {}
        self._recorder = Recorder()
        #: The calling thread's graph in use (see EagerSteps on why per thread).
        self._local = threading.local()
        #: Lengths whose capture failed run eagerly (padded and masked all the same).
        self._eager = EagerSteps(bucket)

    @property
    def bucket(self) -> int:
        return self._bucket

    @property
    def batch_sizes(self) -> list[int]:
        """Every batch size `rows` pads to, each with graphs of its own."""
        return sorted({self.rows(n) for n in range(1, self._max_rows + 1)})

    def length(self, frames: int) -> int:
        return self._eager.length(frames)

    def rows(self, lines: int) -> int:
        return padded_rows(lines, self._max_rows)

    def embed(self, transformer: Any, text: torch.Tensor, cfg_strength: float) -> None:
        graph = self._graphs.get((text.shape[0], text.shape[1], cfg_strength))
        if graph is None:  # not recorded yet (start records it), or eager
            self._local.embedded = None
            return
        graph.ids.copy_(text)
        graph.embed.replay()
        self._local.embedded = text

    def start(self, inputs: StepInputs) -> None:
        key = (inputs.x.shape[0], inputs.x.shape[1], inputs.cfg_strength)
        if key not in self._graphs:
            self._graphs[key] = self._try_capture(inputs)
        graph = self._graphs[key]
        embedded = getattr(self._local, "embedded", None) is inputs.text
        self._local.embedded = None
        self._local.graph = graph
        self._local.inputs = inputs
        if graph is None:
            self._eager.start(inputs)
            return
        if not embedded:
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
        transformer = dit.prepare(inputs.transformer)
        x, cfg_strength, kernels = inputs.x, inputs.cfg_strength, inputs.kernels
        scalar = torch.zeros((), device=x.device, dtype=x.dtype)
        ids = inputs.text.clone()
        x_in, cond = torch.zeros_like(x), torch.zeros_like(inputs.cond)
        mask = torch.ones(x.shape[:2], device=x.device, dtype=torch.bool)
        mod, dt = torch.zeros_like(inputs.mods[:1]), scalar
        # The step graph reads the embedding graph's own outputs, which every
        # embedding replay rewrites in place.
        embed_graph, text = self._recorder.record(
            lambda: dit.text_embeds(transformer, ids), cudnn=False
        )

        def step() -> None:
            v = dit.velocity(transformer, x_in, cond, text, mask, mod, cfg_strength, kernels)
            x_in.copy_((x_in + dt * v) * mask[..., None])

        step_graph, _ = self._recorder.record(step)
        static = _Graph(embed_graph, step_graph, x_in, cond, ids, text, mask, mod, dt)
        log.info(
            "engine.graph_captured",
            frames=x.shape[1],
            batch=x.shape[0],
            capture_ms=round((time.perf_counter() - started) * 1000, 1),
            graphs=len(self._graphs) + 1,
        )
        return static
