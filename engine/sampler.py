"""The flow-matching sampler, ours, around `f5-tts`'s transformer.

It computes what `CFM.sample` computes (Euler steps over the EPSS or uniform
schedule, sway sampling, classifier-free guidance) so that the hot loop is
code we own and can optimise, and it can stop between any two steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F


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
) -> torch.Tensor:
    """Mel frames (1, duration, n_mels) with the reference `cond` (1, n_ref, n_mels) kept."""
    transformer = model.transformer
    ref_len = cond.shape[1]
    duration = max(duration, max(text.shape[1], ref_len) + 1)
    cond = F.pad(cond, (0, 0, 0, duration - ref_len))
    cond_mask = (torch.arange(duration, device=cond.device) < ref_len)[None, :, None]
    step_cond = torch.where(cond_mask, cond, torch.zeros_like(cond))
    t = timesteps(steps, sway, cond.device, cond.dtype)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=cond.device).manual_seed(seed)
    x = torch.randn(
        duration, cond.shape[-1], generator=generator, device=cond.device, dtype=cond.dtype
    )[None]
    try:
        for i in range(steps):
            if should_stop():
                raise Cancelled
            if cfg_strength < 1e-5:
                v = transformer(x=x, cond=step_cond, text=text, time=t[i], mask=None, cache=True)
            else:
                both = transformer(
                    x=x, cond=step_cond, text=text, time=t[i], mask=None, cfg_infer=True, cache=True
                )
                pred, null = torch.chunk(both, 2, dim=0)
                v = pred + (pred - null) * cfg_strength
            x = x + (t[i + 1] - t[i]) * v
    finally:
        # The text embedding is cached per request on the module: never reuse it.
        transformer.clear_cache()
    return torch.where(cond_mask, cond, x)
