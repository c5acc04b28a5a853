"""Audio shaping for the air: loudness, peak limiting, fades. Pure numpy.

Everything an utterance goes through before it reaches the device buffer,
so each rule can be tested on arrays without a sound card.
"""

from __future__ import annotations

import math

import numpy as np

#: BS.1770 blocks are 400 ms; silence below -70 LUFS does not count.
_BLOCK_S = 0.4
_ABSOLUTE_GATE_LUFS = -70.0
#: The limiter looks this far around each sample for peaks.
_LIMITER_WINDOW_S = 0.002


def db_to_gain(db: float) -> float:
    return float(10 ** (db / 20))


def k_weight(audio: np.ndarray, rate: int) -> np.ndarray:
    """BS.1770 K-weighting (high shelf + high pass), designed for any rate."""
    out = audio.astype(np.float64)
    for b, a in _k_filters(rate):
        out = _biquad(out, b, a)
    return out


def loudness_lufs(audio: np.ndarray, rate: int) -> float:
    """Integrated loudness (BS.1770, absolute gate only); -inf for silence."""
    weighted = k_weight(audio, rate)
    block = max(1, int(_BLOCK_S * rate))
    if len(weighted) < block:
        powers = np.array([np.mean(weighted**2)]) if len(weighted) else np.array([0.0])
    else:
        hop = block // 4
        starts = range(0, len(weighted) - block + 1, hop)
        powers = np.array([np.mean(weighted[s : s + block] ** 2) for s in starts])
    with np.errstate(divide="ignore"):
        levels = -0.691 + 10 * np.log10(powers)
    kept = powers[levels > _ABSOLUTE_GATE_LUFS]
    if not len(kept):
        return -math.inf
    return float(-0.691 + 10 * np.log10(np.mean(kept)))


def normalise(
    audio: np.ndarray, rate: int, target_lufs: float, max_gain_db: float = 24.0
) -> np.ndarray:
    """Bring an utterance to the target loudness (silence stays silence)."""
    level = loudness_lufs(audio, rate)
    if not math.isfinite(level):
        return audio.astype(np.float32)
    gain = db_to_gain(min(target_lufs - level, max_gain_db))
    return (audio * gain).astype(np.float32)


def limit(audio: np.ndarray, rate: int, ceiling_db: float) -> np.ndarray:
    """Keep every sample at or below the ceiling, with smooth gain, not hard clipping
    (the final clip only catches rounding)."""
    ceiling = db_to_gain(ceiling_db)
    peak = np.abs(audio)
    if not len(audio) or peak.max() <= ceiling:
        return audio.astype(np.float32)
    w = max(1, int(_LIMITER_WINDOW_S * rate))
    # Peak envelope over 2w, then a w-long average of the gain: the smoothed gain
    # never exceeds what each sample needs.
    envelope = _max_filter(peak, 2 * w + 1)
    gain = np.minimum(1.0, ceiling / np.maximum(envelope, 1e-12))
    kernel = np.ones(w) / w
    smooth = np.convolve(np.pad(gain, (w, w), mode="edge"), kernel, mode="same")[w:-w]
    out: np.ndarray = np.clip(audio * smooth, -ceiling, ceiling).astype(np.float32)
    return out


def fade_in(audio: np.ndarray, samples: int) -> np.ndarray:
    n = min(samples, len(audio))
    if n <= 0:
        return audio
    out: np.ndarray = audio.copy()
    out[:n] *= np.linspace(0.0, 1.0, n, endpoint=False, dtype=np.float32)
    return out


def _max_filter(x: np.ndarray, size: int) -> np.ndarray:
    half = size // 2
    padded = np.pad(x, (half, half), mode="constant")
    windows = np.lib.stride_tricks.sliding_window_view(padded, size)
    peaks: np.ndarray = windows.max(axis=1)
    return peaks


def _biquad(
    x: np.ndarray, b: tuple[float, float, float], a: tuple[float, float, float]
) -> np.ndarray:
    import torch
    import torchaudio.functional as AF

    tensor = torch.from_numpy(x)[None]
    out = AF.lfilter(
        tensor,
        torch.tensor(a, dtype=torch.float64),
        torch.tensor(b, dtype=torch.float64),
        clamp=False,
    )
    result: np.ndarray = out[0].numpy()
    return result


def _k_filters(rate: int) -> list[tuple[tuple[float, float, float], tuple[float, float, float]]]:
    """The two BS.1770 stages via their analogue prototypes (pyloudnorm's derivation)."""
    # Stage 1: high shelf, +4 dB above ~1.7 kHz.
    g, q, fc = 3.999843853973347, 0.7071752369554196, 1681.974450955533
    k = math.tan(math.pi * fc / rate)
    vh = 10 ** (g / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = (
        ((vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0),
        (1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0),
    )
    # Stage 2: high pass at ~38 Hz.
    q, fc = 0.5003270373238773, 38.13547087602444
    k = math.tan(math.pi * fc / rate)
    a0 = 1 + k / q + k * k
    highpass = (
        (1.0, -2.0, 1.0),
        (1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0),
    )
    return [shelf, highpass]
