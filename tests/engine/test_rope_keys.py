"""bench.rope_keys, the fused rotary + penalty-column candidate for the GPU
(measured slower than inductor's, kept for `step_profile --attention`): its
kernel, in Triton's interpreter on the CPU, against f5-tts's rotary function."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.botprocess import ROOT

# The interpreter is switched on by an environment variable read at import,
# hence a process of its own.
INTERPRETED = """
import torch
from bench import rope_keys

torch.manual_seed(0)
heads, dim, frames = 2, 64, 70
qkv = torch.randn(2, frames, 3 * heads * dim)
from x_transformers.x_transformers import RotaryEmbedding
freqs, _ = RotaryEmbedding(dim).forward_from_seq_len(frames)
mask = torch.arange(frames)[None] < torch.tensor([[55], [70]])
q, k = rope_keys.launch(qkv, freqs, mask, heads)
want_q, want_k = rope_keys.reference(qkv, freqs, mask, heads)
print("kernel_diff", max(float((q - want_q).abs().max()), float((k - want_k).abs().max())))
print("penalty", float(k[0, 1, 60, dim]), float(k[1, 1, 60, dim]), float(q[0, 1, 3, dim]))

"""


def test_the_fused_rotary_keys_equal_the_packages_rotation() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", INTERPRETED],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = dict(
        (line.split(" ", 1)[0], [float(v) for v in line.split()[1:]])
        for line in done.stdout.splitlines()
    )
    assert figures["kernel_diff"][0] < 1e-5
    assert figures["penalty"] == [-30000.0, 0.0, 1.0]  # padded key, real key, query column
