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


@torch.inference_mode()
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
    runner = runner or EagerSteps()
    transformer = model.transformer
    ref_len = cond.shape[1]
    duration = max(duration, max(text.shape[1], ref_len) + 1)
    length = runner.length(duration)
    cond = F.pad(cond, (0, 0, 0, duration - ref_len))
    cond_mask = (torch.arange(duration, device=cond.device) < ref_len)[None, :, None]
    step_cond = torch.where(cond_mask, cond, torch.zeros_like(cond))
    t = timesteps(steps, sway, cond.device, cond.dtype)
    dts = t[1:] - t[:-1]
    generator = None
    if seed is not None:
        generator = torch.Generator(device=cond.device).manual_seed(seed)
    x = torch.randn(
        duration, cond.shape[-1], generator=generator, device=cond.device, dtype=cond.dtype
    )[None]
    mask = None
    if length != duration:
        dit.allow_padding(transformer)
        pad = (0, 0, 0, length - duration)
        x, step_cond = F.pad(x, pad), F.pad(step_cond, pad)
        mask = (torch.arange(length, device=cond.device) < duration)[None]
    embeds = dit.text_embeds(transformer, text, duration, length)
    runner.start(transformer, x, step_cond, embeds, mask, cfg_strength)
    try:
        for i in range(steps):
            if should_stop():
                raise Cancelled
            runner.step(t[i], dts[i])
    finally:
        x = runner.result()
    return torch.where(cond_mask, cond, x[:, :duration])
