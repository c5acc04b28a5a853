"""Our inference modules, built once at load time from f5-tts's.

`Inference` is the DiT as our forward (`engine.dit`) runs it: it holds the
package's submodules that forward reads, our `ModulatedBlock`s with one fused
QKV projection each (a new parameter made once, as gpt-fast fuses its QKV at
load time), and what is computed once and kept: the rotary tables, the
position convolutions' taps, the sampling schedules. The package's modules
are used as they are: nothing is added to them, none of their parameters is
re-pointed, and the package's own forward still runs on them.

`Model` is what the engine keeps of f5-tts's CFM: its mel spectrogram, its
channels and the `Inference` transformer. The package's CFM and DiT are not
kept: their separate Q, K and V projections, which `Inference` does not hold,
are then freed, so the fused weight does not double the model's memory.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.attention import PaddedAttention, Padding, Rotary
from engine.conv_pos import PositionConv
from engine.kernels import Attention


class ModulatedBlock(torch.nn.Module):
    """f5-tts's `DiTBlock.forward`, with the block's AdaLN modulation (its slice of
    `dit.modulations`, shape (1, 6 * dim)) passed in instead of computed from the
    time, and attention through `PaddedAttention`."""

    def __init__(self, block: Any) -> None:
        super().__init__()
        self.attn_norm = block.attn_norm
        self.attn = PaddedAttention(block.attn)
        self.ff_norm = block.ff_norm
        self.ff = block.ff

    def forward(
        self,
        x: torch.Tensor,
        mod: torch.Tensor,
        padding: Padding | None,
        rope: Rotary,
        attention: Attention,
    ) -> torch.Tensor:
        """`attention` is the engine's `Kernels.attention`: a constant to torch.compile."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = torch.chunk(mod, 6, dim=1)
        norm = self.attn_norm.norm(x) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        x = x + gate_msa.unsqueeze(1) * self.attn(norm, padding, rope, attention)
        norm = self.ff_norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        out: torch.Tensor = x + gate_mlp.unsqueeze(1) * feed_forward(self.ff, norm)
        return out


def feed_forward(ff: Any, x: torch.Tensor) -> torch.Tensor:
    """f5-tts's `FeedForward` (inference); on a GPU as `fused_feed_forward`."""
    if x.is_cuda and ff.ff[0][1].approximate == "tanh":
        return fused_feed_forward(ff, x)
    out: torch.Tensor = ff(x)
    return out


def fused_feed_forward(ff: Any, x: torch.Tensor) -> torch.Tensor:
    """The feed-forward with the inner layer's bias and GELU applied by its matmul
    (cuBLASLt's epilogue), not by a kernel of their own that reads and writes the
    whole inner activation again. On a GPU the epilogue's GELU is the tanh one
    that f5-tts uses; the CPU's kernel for the same op applies the exact GELU."""
    proj_in, proj_out = ff.ff[0][0], ff.ff[2]
    inner = torch._addmm_activation(
        proj_in.bias, x.reshape(-1, x.shape[-1]), proj_in.weight.t(), use_gelu=True
    )
    out: torch.Tensor = proj_out(inner)
    return out.reshape(*x.shape[:-1], out.shape[-1])


class Inference(torch.nn.Module):
    """f5-tts's DiT for our forward (`engine.dit`): its submodules, our blocks, and
    the caches our forward keeps."""

    def __init__(self, dit: Any) -> None:
        super().__init__()
        text_embed = dit.text_embed
        if not text_embed.mask_padding:
            raise ValueError("the DiT must mask text padding (text_mask_padding=True)")
        if getattr(text_embed, "average_upsampling", False):
            raise ValueError("text_embedding_average_upsampling is not supported")
        self.time_embed = dit.time_embed
        self.text_embed = text_embed
        self.input_proj = dit.input_embed.proj
        self.conv_pos = PositionConv(dit.input_embed.conv_pos_embed)
        self.rotary_embed = dit.rotary_embed
        self.blocks = torch.nn.ModuleList(ModulatedBlock(b) for b in dit.transformer_blocks)
        self.long_skip_connection = dit.long_skip_connection
        self.norm_out = dit.norm_out
        self.proj_out = dit.proj_out
        #: Rotary tables made so far, longest last (`dit.rotary_tables`); kept
        #: alive: graphs may read them.
        self.rotary_tables: list[Rotary] = []
        #: Each step's dt and modulations, by (steps, sway, dtype, device)
        #: (`sampler.schedule`).
        self.schedules: dict[
            tuple[int, float, torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]
        ] = {}


class Model(torch.nn.Module):
    """What the engine keeps of f5-tts's CFM: the mel spectrogram, the channels and
    the transformer as `Inference`."""

    def __init__(self, cfm: Any) -> None:
        super().__init__()
        self.transformer = Inference(cfm.transformer)
        self.mel_spec = cfm.mel_spec
        self.num_channels: int = cfm.num_channels
