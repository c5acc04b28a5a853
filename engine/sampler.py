"""The flow-matching sampler, ours, around `f5-tts`'s transformer.

It computes what `CFM.sample` computes (Euler steps over the EPSS or uniform
schedule, sway sampling, classifier-free guidance) so that the hot loop is
code we own and can optimise, and it can stop between any two steps. How the
steps run (eager, compiled, a replayed CUDA graph) is the `Steps` runner's.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from engine import dit
from engine.kernels import EAGER, Kernels


class Cancelled(Exception):
    """The request was cancelled (a skip); raised between sampling steps."""


def timesteps(steps: int, sway: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The time grid: f5-tts's EPSS schedule where it defines one, else uniform; then sway."""
    from f5_tts.model.utils import get_epss_timesteps

    t: torch.Tensor = get_epss_timesteps(steps, device=device, dtype=dtype)
    if sway:
        t = t + sway * (torch.cos(math.pi / 2 * t) - 1 + t)
    return t


def text_ids(text: str, vocab: dict[str, int], device: torch.device) -> torch.Tensor:
    """Text → token ids the way f5-tts does (pinyin for Chinese); tokens not in the
    vocabulary are skipped rather than read as something else."""
    from f5_tts.model.utils import convert_char_to_pinyin

    tokens = convert_char_to_pinyin([text])[0]
    ids = [vocab[t] for t in tokens if t in vocab]
    return torch.tensor([ids], dtype=torch.long, device=device)


def padded_length(frames: int, bucket: int) -> int:
    """`frames` rounded up to a whole number of buckets (the length graphs run at)."""
    return -(-frames // bucket) * bucket


def padded_rows(lines: int, largest: int) -> int:
    """`lines` rounded up to a power of two, but not past `largest` (the batch
    sizes graphs are recorded at: a few sizes, not one per count of lines)."""
    if lines >= largest:
        return lines
    return min(1 << (lines - 1).bit_length(), largest)


@dataclass
class StepInputs:
    """One request's inputs, padded to the runner's length: noise x (batch, length,
    n_mels), the audio condition (zero past the reference), text ids padded with
    `dit.PAD_ID`, the mask of real frames (None when nothing is padded), per
    step its `dit.modulations` row and its time step dt, and the kernels that
    run the DiT's convolutions and attention."""

    transformer: Any
    x: torch.Tensor
    cond: torch.Tensor
    text: torch.Tensor
    mask: torch.Tensor | None
    cfg_strength: float
    mods: torch.Tensor  # (steps, width)
    dts: torch.Tensor  # (steps,)
    kernels: Kernels = EAGER


def schedule(
    transformer: Any, steps: int, sway: float, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each step's dt (steps,) and its `dit.modulations` row (steps, width): the
    same for every request with these settings, so computed once and kept on
    our module (the time grid alone is a host-to-GPU copy and a few kernels)."""
    cache = dit.prepare(transformer).schedules
    key = (steps, sway, dtype, device)
    if key not in cache:
        t = timesteps(steps, sway, device, dtype)
        cache[key] = (t[1:] - t[:-1], dit.modulations(transformer, t[:steps]))
    return cache[key]


class Steps(Protocol):
    """Runs the Euler steps of one request: eagerly, or by replaying a captured graph."""

    def length(self, frames: int) -> int:
        """The (padded) sequence length this runner computes `frames` frames at."""
        ...

    def rows(self, lines: int) -> int:
        """The (padded) batch size this runner computes `lines` lines at."""
        ...

    def embed(self, transformer: Any, text: torch.Tensor, cfg_strength: float) -> None:
        """Starts embedding the request's text ids (padded to the runner's length),
        before its other inputs exist: the GPU embeds while the host prepares the
        noise and the condition. Optional: `start` embeds what was not."""
        ...

    def start(self, inputs: StepInputs) -> None:
        """Takes the request (and embeds its text, unless `embed` did);
        `inputs.x` is then the runner's."""
        ...

    def step(self, i: int) -> None:
        """Euler step `i` of the request."""
        ...

    def result(self) -> torch.Tensor: ...


@dataclass
class _Request:
    inputs: StepInputs
    embeds: dit.TextEmbeds


class EagerSteps:
    """Each step as ordinary torch calls (the DiT's blocks may be compiled).

    With `bucket` > 1 the sequence is padded up to a multiple of it and the
    padding masked out. The request in progress is the calling thread's own:
    a stuck inference thread that wakes up cannot disturb its replacement's.
    """

    def __init__(self, bucket: int = 1) -> None:
        self._bucket = bucket
        self._local = threading.local()

    def length(self, frames: int) -> int:
        return padded_length(frames, self._bucket)

    def rows(self, lines: int) -> int:
        return lines

    def embed(self, transformer: Any, text: torch.Tensor, cfg_strength: float) -> None:
        self._local.embedded = (text, dit.text_embeds(transformer, text))

    def start(self, inputs: StepInputs) -> None:
        embedded = getattr(self._local, "embedded", None)
        self._local.embedded = None
        if embedded is not None and embedded[0] is inputs.text:
            embeds = embedded[1]
        else:
            embeds = dit.text_embeds(inputs.transformer, inputs.text)
        self._local.request = _Request(inputs, embeds)

    def step(self, i: int) -> None:
        r: _Request = self._local.request
        a = r.inputs
        mod = a.mods[i : i + 1]
        v = dit.velocity(
            a.transformer, a.x, a.cond, r.embeds, a.mask, mod, a.cfg_strength, a.kernels
        )
        x = a.x + a.dts[i] * v
        a.x = x if a.mask is None else x * a.mask[..., None]

    def result(self) -> torch.Tensor:
        r: _Request = self._local.request
        self._local.request = None
        return r.inputs.x


@dataclass(frozen=True, slots=True)
class Line:
    """One request of a batch: reference mel (1, n_ref, n_mels), text ids (1, nt),
    total frames, and the noise seed."""

    cond: torch.Tensor
    text: torch.Tensor
    duration: int
    seed: int | None = None


def sample(
    model: Any,
    cond: torch.Tensor,
    text: torch.Tensor,
    duration: int,
    *,
    seed: int | None = None,
    steps: int,
    cfg_strength: float,
    sway: float,
    should_stop: Callable[[], bool] = lambda: False,
    runner: Steps | None = None,
    kernels: Kernels = EAGER,
) -> torch.Tensor:
    """Mel frames (1, duration, n_mels) with the reference `cond` (1, n_ref, n_mels) kept."""
    (mel,) = sample_batch(
        model,
        [Line(cond, text, duration, seed)],
        steps=steps,
        cfg_strength=cfg_strength,
        sway=sway,
        should_stop=should_stop,
        runner=runner,
        kernels=kernels,
    )
    return mel


@torch.inference_mode()
def sample_batch(
    model: Any,
    lines: list[Line],
    *,
    steps: int,
    cfg_strength: float,
    sway: float,
    should_stop: Callable[[], bool] = lambda: False,
    runner: Steps | None = None,
    kernels: Kernels = EAGER,
) -> list[torch.Tensor]:
    """Several lines in one batch, padded to a common length (the padding masked
    out) and to the runner's batch size (copies of the last line, whose results
    are dropped): each result equals that line sampled alone."""
    runner = runner or EagerSteps()
    transformer = dit.prepare(model.transformer)
    wanted = len(lines)
    lines = lines + [lines[-1]] * (runner.rows(wanted) - wanted)
    durations = [max(ln.duration, max(ln.text.shape[1], ln.cond.shape[1]) + 1) for ln in lines]
    length = runner.length(max(durations))
    # The text first: the GPU embeds it while the host prepares the rest.
    text = dit.pad_ids([line.text for line in lines], length)
    runner.embed(transformer, text, cfg_strength)
    xs, step_conds = [], []
    for line, duration in zip(lines, durations, strict=True):
        generator = None
        if line.seed is not None:
            generator = torch.Generator(device=line.cond.device).manual_seed(line.seed)
        x = torch.randn(
            duration,
            line.cond.shape[-1],
            generator=generator,
            device=line.cond.device,
            dtype=line.cond.dtype,
        )
        xs.append(F.pad(x, (0, 0, 0, length - duration))[None])
        # The condition: the reference, then zeros (the frames to generate, the padding).
        step_conds.append(F.pad(line.cond, (0, 0, 0, length - line.cond.shape[1])))
    mask = None
    if any(d != length for d in durations):
        positions = torch.arange(length, device=xs[0].device)
        mask = torch.stack([positions < d for d in durations])
    dts, mods = schedule(transformer, steps, sway, xs[0].device, xs[0].dtype)
    x, cond = (xs[0], step_conds[0]) if len(lines) == 1 else (torch.cat(xs), torch.cat(step_conds))
    runner.start(StepInputs(transformer, x, cond, text, mask, cfg_strength, mods, dts, kernels))
    try:
        for i in range(steps):
            if should_stop():
                raise Cancelled
            runner.step(i)
    finally:
        x = runner.result()
    return [
        torch.cat((line.cond, x[row : row + 1, line.cond.shape[1] : duration]), dim=1)
        for row, (line, duration) in enumerate(zip(lines[:wanted], durations[:wanted], strict=True))
    ]
