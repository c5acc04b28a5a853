"""The blocks as torch.compile builds them (inductor, here on the CPU) against
the same blocks run op by op: the compiled region takes other paths (the
padding as a penalty column in the attention), and must give the same."""

from __future__ import annotations

import torch

from engine import dit
from engine.checkpoints import ModelFiles, load_f5
from engine.kernels import Kernels
from tests.engine.tiny import TINY_ARCH


def test_compiled_blocks_give_what_the_eager_ones_give(tiny_files: ModelFiles) -> None:
    model = load_f5(tiny_files, TINY_ARCH, "cpu", torch.float32)
    transformer = model.transformer
    torch.manual_seed(3)
    length, frames = 64, (50, 37)  # a batch of two lines, padded differently
    x, cond = torch.randn(2, length, 100), torch.randn(2, length, 100)
    mask = torch.arange(length)[None] < torch.tensor(frames)[:, None]
    ids = dit.pad_ids([torch.randint(0, 50, (1, 20)), torch.randint(0, 50, (1, 9))], length)
    mods = dit.modulations(transformer, torch.full((1,), 0.5))
    try:
        with torch.inference_mode():
            embeds = dit.text_embeds(transformer, ids)
            eager = dit.velocity(transformer, x, cond, embeds, mask, mods, 2.0)
            unmasked = dit.velocity(transformer, x, cond, embeds, None, mods, 2.0)
            dit.compile_regions(transformer)
            on_cpu = Kernels(compiled=True, graphs=False, conv="package", attention="column")
            compiled = dit.velocity(transformer, x, cond, embeds, mask, mods, 2.0, on_cpu)
    finally:
        dit.uncompile_regions(transformer)
        torch._dynamo.reset()
    for row, n in enumerate(frames):
        assert torch.allclose(compiled[row, :n], eager[row, :n], atol=1e-4, rtol=1e-4)
        # The padding does change the real frames: the mask is doing work.
        assert not torch.allclose(unmasked[row, :n], eager[row, :n], atol=1e-3)
