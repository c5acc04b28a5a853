from __future__ import annotations

import pytest
import torch

from engine import attention, sampler
from engine.checkpoints import ModelFiles, load_f5, read_vocab
from tests.engine.tiny import TINY_ARCH


@pytest.fixture(scope="module")
def model(tiny_files: ModelFiles) -> object:
    return load_f5(tiny_files, TINY_ARCH, "cpu", torch.float32)


@pytest.fixture(scope="module")
def stock(tiny_files: ModelFiles) -> object:
    """The same weights, never touched by our code (`dit.prepare` rewires attention)."""
    return load_f5(tiny_files, TINY_ARCH, "cpu", torch.float32)


@pytest.mark.parametrize(
    "text",
    [
        "This is the reference clip. Hello from chat, how are you?",
        "这是参考音频。大家好，欢迎来到直播间！",
        "This is the reference. 主播好 good game 666!",
    ],
)
@pytest.mark.parametrize(("steps", "cfg", "sway"), [(8, 2.0, -1.0), (7, 2.0, 0.0), (9, 0.0, -1.0)])
# bucket 64: the sequence is padded to a multiple of 64 and the padding masked
# out, as the compiled and CUDA-graph paths run it; the result must not change.
@pytest.mark.parametrize("bucket", [1, 64])
def test_our_sampler_equals_cfm_sample(
    model: object,
    stock: object,
    tiny_files: ModelFiles,
    text: str,
    steps: int,
    cfg: float,
    sway: float,
    bucket: int,
) -> None:
    vocab = read_vocab(tiny_files.vocab)
    torch.manual_seed(3)
    audio = torch.randn(1, 24000 * 2) * 0.1
    cond = model.mel_spec(audio).permute(0, 2, 1)  # type: ignore[attr-defined]
    ids = sampler.text_ids(text, vocab, torch.device("cpu"))
    duration = cond.shape[1] + 120
    runner = sampler.EagerSteps(bucket=bucket)
    assert (runner.length(duration) > duration) == (bucket > 1)
    ours = sampler.sample(
        model,
        cond,
        ids,
        duration,
        seed=42,
        steps=steps,
        cfg_strength=cfg,
        sway=sway,
        runner=runner,
    )
    theirs, _ = stock.sample(  # type: ignore[attr-defined]
        cond=cond,
        text=ids,
        duration=duration,
        steps=steps,
        cfg_strength=cfg,
        sway_sampling_coef=sway if sway else None,
        seed=42,
    )
    assert ours.shape == theirs.shape == (1, duration, 100)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-4)
    # And it is not trivially equal: the generated part differs from the noise-free cond.
    assert ours[:, cond.shape[1] :].abs().mean() > 1e-3


def test_chinese_becomes_pinyin_and_unknown_characters_are_skipped(tiny_files: ModelFiles) -> None:
    vocab = read_vocab(tiny_files.vocab)
    ids = sampler.text_ids("你好☃", vocab, torch.device("cpu"))[0].tolist()
    inverse = {i: t for t, i in vocab.items()}
    # Tone sandhi as f5-tts applies it: ni3 hao3 is said ni2 hao3.
    assert [inverse[i] for i in ids] == [" ", "ni2", " ", "hao3"]


def test_velocity_equals_dit_forward(model: object, stock: object, tiny_files: ModelFiles) -> None:
    from engine import dit

    transformer = model.transformer  # type: ignore[attr-defined]
    dit.prepare(transformer)
    vocab = read_vocab(tiny_files.vocab)
    torch.manual_seed(5)
    x, cond = torch.randn(1, 90, 100), torch.randn(1, 90, 100)
    ids = sampler.text_ids("Velocity check, one two three.", vocab, torch.device("cpu"))
    t = torch.tensor(0.3)
    with torch.inference_mode():
        both = stock.transformer(  # type: ignore[attr-defined]
            x=x, cond=cond, text=ids, time=t, mask=None, cfg_infer=True
        )
        pred, null = torch.chunk(both, 2, dim=0)
        theirs = pred + (pred - null) * 2.0
        embeds = dit.text_embeds(transformer, dit.pad_ids([ids], 90))
        mod = dit.modulations(transformer, t.reshape(1))
        ours = dit.velocity(transformer, x, cond, embeds, None, mod, 2.0)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-4)
    assert theirs.abs().mean() > 1e-2


def test_every_block_gets_its_hidden_state_row_major(model: object) -> None:
    """The input embedding leaves its result channels-first in memory; blocks fed
    that layout keep it, and on a GPU read it across the grain (10 % of a step)."""
    from engine import dit

    transformer = model.transformer  # type: ignore[attr-defined]
    layouts: list[bool] = []
    hooks = [
        block.register_forward_pre_hook(lambda _m, args: layouts.append(args[0].is_contiguous()))
        for block in dit.blocks(transformer)
    ]
    torch.manual_seed(2)
    x, cond = torch.randn(1, 64, 100), torch.randn(1, 64, 100)
    mask = torch.arange(64)[None] < 50
    try:
        with torch.inference_mode():
            embeds = dit.text_embeds(transformer, dit.pad_ids([torch.tensor([[3, 4, 5]])], 64))
            mod = dit.modulations(transformer, torch.tensor([0.3]))
            dit.velocity(transformer, x, cond, embeds, mask, mod, 2.0)
            raw = transformer.input_embed(x, cond, embeds.cond, audio_mask=mask)
    finally:
        for hook in hooks:
            hook.remove()
    assert not raw.is_contiguous()  # what the package's embedding gives
    assert layouts == [True] * len(transformer.transformer_blocks)


def test_fused_feed_forward_keeps_the_packages_layers(model: object) -> None:
    """The GPU's feed-forward (bias and GELU in the matmul), run on the CPU, where
    the op applies the exact GELU: equal to the package's layers with that GELU."""
    import copy

    from engine import model as model_mod

    ff = model.transformer.transformer_blocks[0].ff  # type: ignore[attr-defined]
    exact = copy.deepcopy(ff)
    exact.ff[0][1].approximate = "none"
    torch.manual_seed(3)
    x = torch.randn(2, 37, ff.ff[0][0].in_features)
    with torch.inference_mode():
        fused, expected = model_mod.fused_feed_forward(ff, x), exact(x)
        on_cpu = model_mod.feed_forward(ff, x)
    assert fused.shape == expected.shape == (2, 37, ff.ff[2].out_features)
    assert torch.allclose(fused, expected, atol=1e-6, rtol=1e-5)
    assert expected.abs().mean() > 1e-2
    # On the CPU the engine keeps the package's tanh GELU.
    assert ff.ff[0][1].approximate == "tanh"
    assert torch.equal(on_cpu, ff(x))


def test_text_embedded_at_the_padded_length_equals_the_packages_zero_padding(
    stock: object, tiny_files: ModelFiles
) -> None:
    # f5-tts embeds a line's text at its frame count and zero-pads the batch; we
    # embed at the padded length (a fixed shape a graph can replay): the same.
    import torch.nn.functional as F

    from engine import dit

    transformer = stock.transformer  # type: ignore[attr-defined]
    vocab = read_vocab(tiny_files.vocab)
    short = sampler.text_ids("Short line.", vocab, torch.device("cpu"))
    long = sampler.text_ids("A rather longer line of chat, with more words.", vocab,
                            torch.device("cpu"))  # fmt: skip
    frames, length = (60, 90), 128
    with torch.inference_mode():
        ours = dit.text_embeds(transformer, dit.pad_ids([short, long], length))
        for row, (ids, n) in enumerate(zip((short, long), frames, strict=True)):
            for drop, got in ((False, ours.cond), (True, ours.uncond)):
                theirs = F.pad(transformer.text_embed(ids, seq_len=n, drop_text=drop),
                               (0, 0, 0, length - n))  # fmt: skip
                # Equal up to float rounding: GRN's norm over positions sums the
                # masked zeros in a different order.
                assert torch.allclose(got[row : row + 1], theirs, atol=1e-4, rtol=1e-4)
        assert ours.cond[1, : long.shape[1]].abs().mean() > 1e-2
        assert not torch.allclose(ours.cond, ours.uncond)


def test_padded_attention_equals_the_packages_masked_attention(
    model: object, stock: object
) -> None:
    from f5_tts.model.modules import AttnProcessor

    transformer = model.transformer  # type: ignore[attr-defined]
    attn = transformer.transformer_blocks[0].attn
    stock_attn = stock.transformer.transformer_blocks[0].attn  # type: ignore[attr-defined]
    torch.manual_seed(6)
    x = torch.randn(2, 70, attn.dim)
    mask = torch.ones(2, 70, dtype=torch.bool)
    mask[:, 55:] = False
    rope = transformer.rotary_embed.forward_from_seq_len(70)
    with torch.inference_mode(), pytest.warns(UserWarning):
        theirs = AttnProcessor(attn_mask_enabled=True)(stock_attn, x, mask=mask, rope=rope)
    with torch.inference_mode():
        tables = attention.rotary(*rope)
        ours = attention.PaddedAttention(attn)(x, attention.Padding.of(mask), tables)
        unmasked = attention.PaddedAttention(attn)(x, None, tables)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-4)
    assert ours[:, 55:].abs().max() == 0
    # The mask does change the real frames' attention: this compares something.
    assert not torch.allclose(ours[:, :55], unmasked[:, :55], atol=1e-4)


@pytest.mark.parametrize("xpos", [False, True])
def test_rotary_tables_rotate_as_the_package_does(xpos: bool) -> None:
    # The tables are made once per step; the rotation from them must be
    # x_transformers' own, xpos scales and partly rotated heads included.
    from x_transformers.x_transformers import RotaryEmbedding, apply_rotary_pos_emb

    torch.manual_seed(9)
    freqs, scale = RotaryEmbedding(16, use_xpos=xpos).forward_from_seq_len(30)
    t = torch.randn(2, 3, 30, 24)  # (batch, heads, length, dim), 16 of 24 dims rotated
    tables = attention.rotary(freqs, scale)
    k_scale = scale**-1.0 if xpos else 1.0
    # Ours rotates the projection's (batch, length, heads, dim) order.
    query = attention.rotate(t.transpose(1, 2), tables.cos, tables.sin, tables.q_scale).transpose(
        1, 2
    )
    key = attention.rotate(t.transpose(1, 2), tables.cos, tables.sin, tables.k_scale).transpose(
        1, 2
    )
    assert torch.allclose(query, apply_rotary_pos_emb(t, freqs, scale), atol=1e-6)
    assert torch.allclose(key, apply_rotary_pos_emb(t, freqs, k_scale), atol=1e-6)
    assert torch.equal(query[..., 16:], t[..., 16:])
    assert not torch.allclose(query[..., :16], t[..., :16], atol=1e-3)
    assert xpos == (not torch.allclose(query, key))


def test_rotary_tables_are_made_once_and_sliced(
    monkeypatch: pytest.MonkeyPatch, tiny_files: ModelFiles
) -> None:
    # Each step reads the tables in place (no kernels, and a graph may hold them):
    # slices of one table equal the tables made at that length, and a longer
    # request makes a longer table without freeing the one in use.
    from x_transformers.x_transformers import RotaryEmbedding

    from engine import dit

    monkeypatch.setattr(dit, "ROTARY_POSITIONS", 100)
    holder = dit.prepare(load_f5(tiny_files, TINY_ARCH, "cpu", torch.float32).transformer)
    holder.rotary_embed = RotaryEmbedding(16)
    first = dit.rotary_tables(holder, 70)
    again = dit.rotary_tables(holder, 50)
    want = attention.rotary(*holder.rotary_embed.forward_from_seq_len(50))
    assert torch.equal(again.cos, want.cos) and torch.equal(again.sin, want.sin)
    assert first.cos.shape[1] == 70 and again.cos.data_ptr() == first.cos.data_ptr()
    longer = dit.rotary_tables(holder, 130)
    want = attention.rotary(*holder.rotary_embed.forward_from_seq_len(130))
    assert torch.equal(longer.cos, want.cos) and longer.cos.data_ptr() != first.cos.data_ptr()
    assert len(holder.rotary_tables) == 2  # the first kept
    assert dit.rotary_tables(holder, 90).cos.data_ptr() == longer.cos.data_ptr()


def test_the_penalty_column_leaves_padding_out_as_the_additive_mask_does() -> None:
    # The compiled blocks' way (no mask tensor: an extra column carries it) and
    # the eager way must leave the padded keys out alike.

    torch.manual_seed(8)
    q, k, v = (torch.randn(2, 70, 4, 16) * 3 for _ in range(3))  # (batch, length, heads, dim)
    mask = torch.arange(70)[None] < torch.tensor([[55], [70]])
    with torch.inference_mode():
        additive = attention.additive_mask_attention(q, k, v, mask)
        ours = attention.penalty_column_attention(q, k, v, mask)
        unmasked = attention.attention(q, k, v)
        # Only the real keys, by SDPA itself in its own (batch, heads, length, dim).
        first = torch.nn.functional.scaled_dot_product_attention(
            *(t[:1, :55].transpose(1, 2) for t in (q, k)), v[:1, :55].transpose(1, 2)
        )
    assert ours.shape == additive.shape == q.shape
    assert torch.allclose(ours, additive, atol=1e-5, rtol=1e-4)
    assert torch.allclose(ours[:1, :55], first.transpose(1, 2), atol=1e-5, rtol=1e-4)
    assert torch.allclose(ours[1], unmasked[1], atol=1e-5, rtol=1e-4)  # nothing padded
    assert not torch.allclose(ours[0], unmasked[0], atol=1e-3)


def test_prepare_joins_qkv_and_leaves_the_package_as_it_is(tiny_files: ModelFiles) -> None:
    from engine import dit, model

    fresh = load_f5(tiny_files, TINY_ARCH, "cpu", torch.float32)
    before = {k: (v.clone(), v.data_ptr()) for k, v in fresh.state_dict().items()}
    processors = [b.attn.processor for b in fresh.transformer.transformer_blocks]
    ours = dit.prepare(fresh.transformer)
    assert dit.prepare(fresh.transformer) is ours  # built once
    assert dit.prepare(ours) is ours
    # The package's modules: same processors, same parameters, nothing added.
    assert [b.attn.processor for b in fresh.transformer.transformer_blocks] == processors
    after = fresh.state_dict()
    assert after.keys() == before.keys()
    for k, (v, ptr) in before.items():
        assert torch.equal(v, after[k]) and ptr == after[k].data_ptr()
    assert not any(k.startswith("_ishowtts") for m in fresh.modules() for k in vars(m))
    # Ours: one fused QKV per block, equal to the three, and none of the three held.
    attn = fresh.transformer.transformer_blocks[0].attn
    joined = ours.blocks[0].attn.qkv.weight
    assert torch.equal(joined, torch.cat((attn.to_q.weight, attn.to_k.weight, attn.to_v.weight)))
    held = {p.data_ptr() for p in model.Model(fresh).parameters()}
    assert attn.to_q.weight.data_ptr() not in held and joined.data_ptr() not in held


def test_a_runner_keeps_each_threads_request_apart(model: object, tiny_files: ModelFiles) -> None:
    # The engine's watchdog may hand the runner to a fresh thread while a stuck
    # one still holds a request: neither may see the other's state.
    import threading

    vocab = read_vocab(tiny_files.vocab)
    torch.manual_seed(4)
    cond = model.mel_spec(torch.randn(1, 24000) * 0.1).permute(0, 2, 1)  # type: ignore[attr-defined]
    ids = sampler.text_ids("one request", vocab, torch.device("cpu"))
    other = sampler.text_ids("and another, longer request", vocab, torch.device("cpu"))
    runner = sampler.EagerSteps(bucket=64)

    def run(text: torch.Tensor, seed: int, stop: object = lambda: False) -> torch.Tensor:
        return sampler.sample(model, cond, text, cond.shape[1] + 80, seed=seed, steps=4,
                              cfg_strength=2.0, sway=-1.0, runner=runner,
                              should_stop=stop)  # type: ignore[arg-type]  # fmt: skip

    alone = run(ids, 1)
    other_alone = run(other, 2)
    paused, resume = threading.Event(), threading.Event()
    calls: list[int] = []

    def pause_at_step_two() -> bool:
        calls.append(1)
        if len(calls) == 2:
            paused.set()
            resume.wait(30)
        return False

    out: list[torch.Tensor] = []
    stuck = threading.Thread(target=lambda: out.append(run(ids, 1, pause_at_step_two)))
    stuck.start()
    assert paused.wait(30)
    interleaved = run(other, 2)  # a whole request while the other is mid-way
    resume.set()
    stuck.join(30)
    assert torch.equal(out[0], alone)
    assert torch.equal(interleaved, other_alone)
    assert not torch.equal(alone[:, :100], other_alone[:, :100])


def test_a_runner_uses_an_early_embedding_only_for_the_ids_it_was_made_from(
    model: object, tiny_files: ModelFiles
) -> None:
    # sample_batch starts the text embedding before the noise exists (`embed`);
    # `start` must not take an embedding made for other ids (an abandoned request's).
    from engine import dit

    vocab = read_vocab(tiny_files.vocab)
    transformer = model.transformer  # type: ignore[attr-defined]
    dit.prepare(transformer)
    length = 128
    ids = dit.pad_ids([sampler.text_ids("one line", vocab, torch.device("cpu"))], length)
    other = dit.pad_ids([sampler.text_ids("a different line", vocab, torch.device("cpu"))], length)
    dts, mods = sampler.schedule(transformer, 2, -1.0, torch.device("cpu"), torch.float32)
    torch.manual_seed(5)
    x, cond = torch.randn(1, length, 100), torch.randn(1, length, 100)
    runner = sampler.EagerSteps(bucket=64)

    @torch.inference_mode()  # as sample_batch runs it
    def run(text: torch.Tensor, early: torch.Tensor | None) -> torch.Tensor:
        if early is not None:
            runner.embed(transformer, early, 2.0)
        runner.start(sampler.StepInputs(transformer, x, cond, text, None, 2.0, mods, dts))
        runner.step(0)
        return runner.result()

    plain = run(ids, None)
    assert torch.equal(run(ids, ids), plain)
    assert torch.equal(run(ids, other), plain)
    assert not torch.equal(run(other, None), plain)


def test_a_batch_gives_each_line_what_it_gets_alone(model: object, tiny_files: ModelFiles) -> None:
    vocab = read_vocab(tiny_files.vocab)
    torch.manual_seed(8)
    lines = []
    for seconds, text, extra, seed in [
        (1.0, "Short one.", 40, 1),
        (2.0, "A second line, a little longer than the first.", 150, 2),
        (1.5, "大家好，欢迎！", 90, 3),
    ]:
        audio = torch.randn(1, int(24000 * seconds)) * 0.1
        cond = model.mel_spec(audio).permute(0, 2, 1)  # type: ignore[attr-defined]
        ids = sampler.text_ids(text, vocab, torch.device("cpu"))
        lines.append(sampler.Line(cond, ids, cond.shape[1] + extra, seed))
    kwargs = {"steps": 6, "cfg_strength": 2.0, "sway": -1.0}
    batched = sampler.sample_batch(model, lines, **kwargs)  # type: ignore[arg-type]
    for line, mel in zip(lines, batched, strict=True):
        alone = sampler.sample(model, line.cond, line.text, line.duration, seed=line.seed,
                               **kwargs)  # type: ignore[arg-type]  # fmt: skip
        assert mel.shape == alone.shape == (1, line.duration, 100)
        assert torch.allclose(mel, alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(batched[0][:, -30:], batched[1][:, -30:], atol=1e-3)


def test_cancel_stops_between_steps(model: object, tiny_files: ModelFiles) -> None:
    vocab = read_vocab(tiny_files.vocab)
    cond = torch.zeros(1, 50, 100)
    ids = sampler.text_ids("hello", vocab, torch.device("cpu"))
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(sampler.Cancelled):
        sampler.sample(model, cond, ids, 80, steps=8, cfg_strength=2.0, sway=-1.0, should_stop=stop)
    assert len(calls) == 4
    assert model.transformer.text_cond is None  # type: ignore[attr-defined]


def test_epss_schedule_for_nfe_8_is_not_uniform() -> None:
    t = sampler.timesteps(7, 0.0, torch.device("cpu"), torch.float32)
    assert t.tolist() == pytest.approx([0, 2 / 32, 4 / 32, 6 / 32, 8 / 32, 16 / 32, 24 / 32, 1])
    u = sampler.timesteps(8, 0.0, torch.device("cpu"), torch.float32)
    assert u.tolist() == pytest.approx([i / 8 for i in range(9)])


def test_batches_are_padded_to_a_few_sizes() -> None:
    from engine import graphs

    assert [sampler.padded_rows(n, 16) for n in range(1, 17)] == ([1, 2, 4, 4] + [8] * 4 + [16] * 8)
    assert [sampler.padded_rows(n, 12) for n in (5, 9, 12)] == [8, 12, 12]
    # The sizes the graphs are recorded for at start-up: none beyond one request by default.
    assert graphs.GraphSteps().batch_sizes == [1]
    assert graphs.GraphSteps(max_rows=16).batch_sizes == [1, 2, 4, 8, 16]
    assert graphs.GraphSteps(max_rows=6).batch_sizes == [1, 2, 4, 6]
    assert graphs.GraphSteps(max_rows=6).rows(3) == 4
    assert sampler.EagerSteps().rows(3) == 3


def test_rows_padded_to_the_runners_batch_size_change_no_line(
    model: object, tiny_files: ModelFiles
) -> None:
    # A runner that records graphs runs a batch at one of a few sizes: three lines
    # as four rows, the fourth a copy whose result is dropped.
    sizes: list[int] = []

    class Padded(sampler.EagerSteps):
        def rows(self, lines: int) -> int:
            return sampler.padded_rows(lines, 8)

        def start(self, inputs: sampler.StepInputs) -> None:
            sizes.append(inputs.x.shape[0])
            super().start(inputs)

    vocab = read_vocab(tiny_files.vocab)
    torch.manual_seed(9)
    cond = model.mel_spec(torch.randn(1, 24000) * 0.1).permute(0, 2, 1)  # type: ignore[attr-defined]
    lines = [
        sampler.Line(cond, sampler.text_ids(text, vocab, torch.device("cpu")), frames, seed)
        for text, frames, seed in (("One.", 120, 1), ("Two lines.", 150, 2), ("三", 100, 3))
    ]
    kwargs = {"steps": 4, "cfg_strength": 2.0, "sway": -1.0}
    runner = Padded()
    padded = sampler.sample_batch(model, lines, runner=runner, **kwargs)  # type: ignore[arg-type]
    plain = sampler.sample_batch(model, lines, **kwargs)  # type: ignore[arg-type]
    assert sizes == [4]
    assert len(padded) == 3
    for a, b in zip(padded, plain, strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
