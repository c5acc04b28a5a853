from __future__ import annotations

import pytest
import torch

from engine import sampler
from engine.checkpoints import ModelFiles, load_f5, read_vocab
from tests.engine.tiny import TINY_ARCH


@pytest.fixture(scope="module")
def model(tiny_files: ModelFiles) -> object:
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
def test_our_sampler_equals_cfm_sample(
    model: object, tiny_files: ModelFiles, text: str, steps: int, cfg: float, sway: float
) -> None:
    vocab = read_vocab(tiny_files.vocab)
    torch.manual_seed(3)
    audio = torch.randn(1, 24000 * 2) * 0.1
    cond = model.mel_spec(audio).permute(0, 2, 1)  # type: ignore[attr-defined]
    ids = sampler.text_ids(text, vocab, torch.device("cpu"))
    duration = cond.shape[1] + 120
    ours = sampler.sample(
        model, cond, ids, duration, seed=42, steps=steps, cfg_strength=cfg, sway=sway
    )
    theirs, _ = model.sample(  # type: ignore[attr-defined]
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
