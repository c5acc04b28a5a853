"""bench.rope_keys, the candidate rotation + penalty-column kernel for the GPU:
in Triton's interpreter on the CPU, against the engine's own rotation and
columns (which the sampler tests hold to f5-tts's)."""

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
from engine import dit
from x_transformers.x_transformers import RotaryEmbedding

torch.manual_seed(0)
heads, dim, frames = 2, 64, 70
qkv = torch.randn(2, frames, 3 * heads * dim)
tables = dit.rotary(*RotaryEmbedding(dim).forward_from_seq_len(frames))
mask = torch.arange(frames)[None] < torch.tensor([[55], [70]])
q, k = rope_keys.launch(qkv, tables.cos, tables.sin, mask, heads)
want_q, want_k = rope_keys.reference(qkv, tables.cos, tables.sin, mask, heads)
print("kernel_diff", max(float((q - want_q).abs().max()), float((k - want_k).abs().max())))
print("penalty", float(k[0, 60, 1, dim]), float(k[1, 60, 1, dim]), float(q[0, 3, 1, dim]))
plain = qkv[..., : heads * dim].reshape(2, frames, heads, dim)
print("rotated", float((q[..., :dim] - plain).abs().max()))
fits = rope_keys.fits
xpos = dit.rotary(*RotaryEmbedding(dim, use_xpos=True).forward_from_seq_len(frames))
print("fits", int(fits(tables, heads, dim)), int(fits((1, 2), heads, dim)),
      int(fits(xpos, heads, dim)),
      int(fits(tables, 3, dim)), int(rope_keys.usable(qkv, tables, heads)))
"""


def test_the_fused_rotation_and_columns_equal_the_engines() -> None:
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
    assert figures["rotated"][0] > 0.1  # the rotation did something
    # The package's tuple, xpos, 3 heads (not a power of two); CPU tensors never.
    assert figures["fits"] == [1.0, 0.0, 0.0, 0.0, 0.0]
