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


class Steps(Protocol):
    """Runs the Euler steps of one request: eagerly, or by replaying a captured graph."""

    def length(self, frames: int) -> int:
        """The (padded) sequence length this runner computes `frames` frames at."""
        ...

    def start(
        self,
        transformer: Any,
        x: torch.Tensor,
        cond: torch.Tensor,
        embeds: dit.TextEmbeds,
        mask: torch.Tensor | None,
        cfg_strength: float,
    ) -> None: ...

    def step(self, t: torch.Tensor, dt: torch.Tensor) -> None: ...

    def result(self) -> torch.Tensor: ...


@dataclass
class _Request:
    transformer: Any
    x: torch.Tensor
    cond: torch.Tensor
    embeds: dit.TextEmbeds
    mask: torch.Tensor | None
    cfg_strength: float


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
        return -(-frames // self._bucket) * self._bucket

    def start(
        self,
        transformer: Any,
        x: torch.Tensor,
        cond: torch.Tensor,
        embeds: dit.TextEmbeds,
        mask: torch.Tensor | None,
        cfg_strength: float,
    ) -> None:
        self._local.request = _Request(transformer, x, cond, embeds, mask, cfg_strength)

    def step(self, t: torch.Tensor, dt: torch.Tensor) -> None:
        r: _Request = self._local.request
        v = dit.velocity(r.transformer, r.x, r.cond, r.embeds, r.mask, t, r.cfg_strength)
        x = r.x + dt * v
        r.x = x if r.mask is None else x * r.mask[..., None]

    def result(self) -> torch.Tensor:
        r: _Request = self._local.request
        self._local.request = None
        return r.x


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
) -> list[torch.Tensor]:
    """Several lines in one batch, padded to a common length (the padding masked
    out): each result equals that line sampled alone."""
    runner = runner or EagerSteps()
    transformer = model.transformer
    durations = [max(ln.duration, max(ln.text.shape[1], ln.cond.shape[1]) + 1) for ln in lines]
    length = runner.length(max(durations))
    conds, cond_masks, xs, step_conds, embeds = [], [], [], [], []
    for line, duration in zip(lines, durations, strict=True):
        ref_len, device = line.cond.shape[1], line.cond.device
        cond = F.pad(line.cond, (0, 0, 0, duration - ref_len))
        cond_mask = (torch.arange(duration, device=device) < ref_len)[None, :, None]
        generator = None
        if line.seed is not None:
            generator = torch.Generator(device=device).manual_seed(line.seed)
        x = torch.randn(
            duration, cond.shape[-1], generator=generator, device=device, dtype=cond.dtype
        )[None]
        pad = (0, 0, 0, length - duration)
        conds.append(cond)
        cond_masks.append(cond_mask)
        xs.append(F.pad(x, pad))
        step_conds.append(F.pad(torch.where(cond_mask, cond, torch.zeros_like(cond)), pad))
        embeds.append(dit.text_embeds(transformer, line.text, duration, length))
    mask = None
    if any(d != length for d in durations):
        dit.allow_padding(transformer)
        positions = torch.arange(length, device=xs[0].device)
        mask = torch.stack([positions < d for d in durations])
    t = timesteps(steps, sway, xs[0].device, xs[0].dtype)
    dts = t[1:] - t[:-1]
    batch_embeds = dit.TextEmbeds(
        torch.cat([e.cond for e in embeds]), torch.cat([e.uncond for e in embeds])
    )
    runner.start(
        transformer, torch.cat(xs), torch.cat(step_conds), batch_embeds, mask, cfg_strength
    )
    try:
        for i in range(steps):
            if should_stop():
                raise Cancelled
            runner.step(t[i], dts[i])
    finally:
        x = runner.result()
    return [
        torch.where(cond_mask, cond, x[row : row + 1, :duration])
        for row, (cond, cond_mask, duration) in enumerate(
            zip(conds, cond_masks, durations, strict=True)
        )
    ]
