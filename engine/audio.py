"""The engine's audio: mono float32 at 24 kHz, the rate F5-TTS's mel front end
and the Vocos vocoder work at, and resampling to and from it (voice clips in,
output devices' rates out)."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 24_000


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling (torchaudio's), float32 in and out."""
    import torch
    import torchaudio.functional as AF

    tensor = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    out: np.ndarray = AF.resample(tensor, from_rate, to_rate).numpy()
    return out


def to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples (±1 full scale) as 16-bit little-endian PCM, a peak beyond
    full scale clipped: the wire's int16 audio and the browser pages' alike."""
    scaled = np.clip(samples, -1.0, 1.0) * 32767.0
    return bytes(np.rint(scaled).astype("<i2").tobytes())
