"""The DiT's guided velocity, an inference-only forward over `f5-tts`'s modules.

It computes what `DiT.forward(..., cfg_infer=True)` computes, with two
differences that the fast paths need: the text embeddings are passed in (one
per request, owned by the caller, instead of cached on the module where a
CUDA-graph replay would overwrite them), and the sequence may be padded to a
fixed length, with a mask that keeps the padding out of every result, so that
one compiled or captured graph serves all lengths up to it.

Text ids come padded with PAD_ID to the sequence length. The model masks its
filler tokens (`text_mask_padding`, which our loader always sets), so
embedding at the padded length gives exactly what f5-tts's zero-padded batch
gives, at a shape that does not depend on the line: the embedding too can be
a captured graph.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from engine import conv_pos
from engine.attention import Padding, Rotary, rotary
from engine.kernels import EAGER, Kernels
from engine.model import Inference, ModulatedBlock

#: Below this, guidance is off and one unguided forward is run (as f5-tts does).
NO_GUIDANCE = 1e-5

#: Text padding, as f5-tts pads a batch (the model reads it as its filler token).
PAD_ID = -1


@dataclass(frozen=True, slots=True)
class TextEmbeds:
    """The conditioned and the dropped-text ("null") embeddings of one request,
    stacked as guidance reads them: `both` (2 * batch, length, text_dim)."""

    both: torch.Tensor

    @property
    def cond(self) -> torch.Tensor:
        return self.both[: self.both.shape[0] // 2]

    @property
    def uncond(self) -> torch.Tensor:
        return self.both[self.both.shape[0] // 2 :]


def pad_ids(texts: list[torch.Tensor], length: int) -> torch.Tensor:
    """Text ids (1, n) of each line → (lines, length), padded with PAD_ID."""
    out = torch.full((len(texts), length), PAD_ID, dtype=torch.long, device=texts[0].device)
    for row, text in enumerate(texts):
        out[row, : text.shape[1]] = text[0]
    return out


def text_embeds(dit: Any, ids: torch.Tensor) -> TextEmbeds:
    """Embeddings of ids (batch, length) padded with PAD_ID, at that length.

    f5-tts's `TextEmbedding.forward` at `seq_len` = length, for the text and for
    the dropped text at once, in one batch: the dropped text is all filler
    tokens under the text's own padding mask. One pass of the ConvNeXt blocks
    at batch 2 costs about what one at batch 1 does (small kernels)."""
    embed = prepare(dit).text_embed
    tokens = ids + 1  # 0 is the filler token
    filler = (tokens == 0).repeat(2, 1)[..., None]
    h = embed.text_embed(torch.cat((tokens, torch.zeros_like(tokens))))
    if embed.extra_modeling:
        h = (h + embed.freqs_cis[: ids.shape[1]]).masked_fill(filler, 0.0)
        for block in embed.text_blocks:
            h = block(h).masked_fill(filler, 0.0)
    return TextEmbeds(h)


def compile_regions(dit: Any) -> None:
    """Regional compilation: the DiT's blocks share one compiled graph, so the
    compile costs one block's time, not the whole model's."""
    for block in blocks(dit):
        block.compile(dynamic=True)


def uncompile_regions(dit: Any) -> None:
    """Undo `compile_regions` (the engine's fallback when the compiler cannot build)."""
    for block in blocks(dit):
        block._compiled_call_impl = None


#: Our module per package DiT, for callers that hold the package's (the
#: benchmark's comparison with the stock sampler, tests): built once, and gone
#: with the DiT.
_built: weakref.WeakKeyDictionary[Any, Inference] = weakref.WeakKeyDictionary()


def prepare(dit: Any) -> Inference:
    """Our `Inference` module for `dit`: itself, or the one built once for the
    package's DiT (which is left as it is: its own forward still works)."""
    if isinstance(dit, Inference):
        return dit
    built = _built.get(dit)
    if built is None:
        built = _built[dit] = Inference(dit)
    return built


def blocks(dit: Any) -> list[ModulatedBlock]:
    """The blocks as our forward runs them."""
    out: list[ModulatedBlock] = list(prepare(dit).blocks)  # type: ignore[arg-type]
    return out


def modulations(dit: Any, times: torch.Tensor) -> torch.Tensor:
    """Every block's AdaLN shift/scale/gate and the output norm's scale/shift at
    each time in `times` (steps,): (steps, depth * 6 * dim + 2 * dim).

    They depend on the time alone, so a request computes them for all its steps
    at once (one small matmul per block), instead of 23 matrix-vector products
    inside every step."""
    model = prepare(dit)
    emb = F.silu(model.time_embed(times))
    parts = [block.attn_norm.linear(emb) for block in blocks(model)]
    parts.append(model.norm_out.linear(emb))
    return torch.cat(parts, dim=-1)


#: Positions the rotary tables are first made for (43.7 s of audio; lines are
#: cut at 30 s, reference included). Longer requests make longer tables.
ROTARY_POSITIONS = 4096


def rotary_tables(dit: Any, length: int) -> Rotary:
    """The blocks' rotary embedding at `length` frames, as `Rotary` tables.

    Without xpos a position's angles do not depend on the length, so the tables
    are made once and sliced (views: a captured graph reads them in place, no
    kernels per step). Tables once made stay alive: graphs may read them."""
    model = prepare(dit)
    embed = model.rotary_embed
    if embed.scale is not None:  # xpos: the scales depend on the length
        return rotary(*embed.forward_from_seq_len(length))
    made = model.rotary_tables
    if not made or made[-1].cos.shape[1] < length:
        made.append(rotary(*embed.forward_from_seq_len(max(length, ROTARY_POSITIONS))))
    cos, sin, q_scale, k_scale = made[-1]
    return Rotary(cos[:, :length], sin[:, :length], q_scale, k_scale)


def velocity(
    dit: Any,
    x: torch.Tensor,
    cond: torch.Tensor,
    embeds: TextEmbeds,
    mask: torch.Tensor | None,
    mod: torch.Tensor,
    cfg_strength: float,
    kernels: Kernels = EAGER,
) -> torch.Tensor:
    """The guided flow velocity at `x` (batch, length, n_mels); `mask` (batch, length)
    marks real frames, None when nothing is padded; `mod` (1, width) is this
    step's row of `modulations`; `kernels` says which convolutions and attention
    run (compiling and graphs are the caller's). Guidance doubles the batch in one forward
    rather than running two."""
    guided = cfg_strength >= NO_GUIDANCE
    text = embeds.cond
    if guided:
        # The dropped-condition rows are the same input embedding with the audio
        # condition zeroed: one call for both halves runs the position
        # convolutions once at batch 2 rather than twice at batch 1.
        x = torch.cat((x, x), dim=0)
        cond = torch.cat((cond, torch.zeros_like(cond)), dim=0)
        text = embeds.both
        mask = torch.cat((mask, mask), dim=0) if mask is not None else None
    # f5-tts's InputEmbedding (drop_audio_cond=False), with h left row-major: the
    # blocks read it across the grain otherwise.
    model = prepare(dit)
    h = model.input_proj(torch.cat((x, cond, text), dim=-1))
    h = conv_pos.position_embedding(model.conv_pos, h, mask, kernels.conv)
    rope = rotary_tables(model, x.shape[1])
    padding = Padding.of(mask) if mask is not None else None
    residual = h
    width = 6 * h.shape[-1]
    for i, block in enumerate(model.blocks):
        h = block(h, mod[:, i * width : (i + 1) * width], padding, rope, kernels.attention)
    if model.long_skip_connection is not None:
        h = model.long_skip_connection(torch.cat((h, residual), dim=-1))
    scale, shift = torch.chunk(mod[:, len(model.blocks) * width :], 2, dim=1)
    h = model.norm_out.norm(h) * (1 + scale)[:, None, :] + shift[:, None, :]
    out: torch.Tensor = model.proj_out(h)
    if not guided:
        return out
    pred, null_pred = torch.chunk(out, 2, dim=0)
    return pred + (pred - null_pred) * cfg_strength
