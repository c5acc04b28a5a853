from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine.checkpoints import ModelFiles, load_vocos
from engine.vocoder import masked_backbone, masked_decode, samples, tf32_matmuls
from tests.engine.tiny import VOCOS_CONFIG, write_vocos


def test_padded_and_masked_backbone_equals_the_unpadded_one(tiny_files: ModelFiles) -> None:
    # The graph path pads the mel to its bucket; the real frames must decode
    # exactly as an unpadded decode gives them.
    vocos = load_vocos(tiny_files, "cpu")
    torch.manual_seed(8)
    frames, length = 75, 128
    mel = torch.randn(1, 100, frames)
    padded = F.pad(mel, (0, length - frames))
    keep = (torch.arange(length) < frames).float()[None, None]
    with torch.inference_mode():
        theirs = vocos.backbone(mel)
        ours = masked_backbone(vocos.backbone, padded, keep)[:, :frames]
        unmasked = vocos.backbone(padded)[:, :frames]
        audio = vocos.head(ours)
    assert torch.allclose(ours, theirs, atol=1e-5)
    # Without the mask the last frames see the padding: the mask is doing work.
    assert not torch.allclose(unmasked[:, -3:], theirs[:, -3:], atol=1e-3)
    assert torch.allclose(audio, vocos.decode(mel), atol=1e-5)


def test_a_length_without_a_graph_decodes_eagerly_and_says_so(tiny_files: ModelFiles) -> None:
    # Where a graph cannot be recorded (here: no CUDA at all) the line is still
    # spoken, decoded the ordinary way, and the failure is logged once per length.
    from structlog.testing import capture_logs

    from engine.vocoder import GraphVocoder

    vocos = load_vocos(tiny_files, "cpu")
    decoder = GraphVocoder(vocos)
    mel = torch.randn(1, 100, 40)
    with capture_logs() as logs:
        first = decoder.decode(mel)
        again = decoder.decode(torch.randn(1, 100, 50))  # the same 128-frame bucket
    with torch.inference_mode():
        assert torch.equal(first, vocos.decode(mel))
    assert again.shape[-1] > first.shape[-1]
    failures = [e for e in logs if e["event"] == "engine.vocoder_graph_failed"]
    assert len(failures) == 1 and failures[0]["frames"] == 128


@pytest.mark.parametrize("padding", ["center", "same"])
def test_the_graphs_whole_decode_equals_vocos_decode_at_the_true_length(
    padding: str, tmp_path: Path
) -> None:
    # The graph decodes a bucket's worth of frames, head and inverse STFT
    # included: the real samples must be what Vocos gives the unpadded mel,
    # with either of Vocos's paddings (the published model uses "same").
    head = {
        **VOCOS_CONFIG["head"],
        "init_args": {**VOCOS_CONFIG["head"]["init_args"], "padding": padding},
    }  # type: ignore[dict-item]
    directory = write_vocos(tmp_path, config_doc={**VOCOS_CONFIG, "head": head})
    vocos = load_vocos(
        ModelFiles(tmp_path / "none", tmp_path / "none", directory / "config.yaml",
                   directory / "pytorch_model.bin"), "cpu",
    )  # fmt: skip
    assert samples(vocos.head, 0) == 0  # never a negative slice of the graph's audio
    torch.manual_seed(9)
    length = 128
    for frames in (75, 2, 128):
        mel = torch.randn(1, 100, frames)
        padded = F.pad(mel, (0, length - frames), value=3.0)  # stale values in the padding
        with torch.inference_mode():
            theirs = vocos.decode(mel)
            ours = masked_decode(vocos, padded, torch.tensor(frames))
            unmasked = vocos.decode(padded)
        n = samples(vocos.head, frames)
        assert theirs.shape[-1] == n
        assert torch.allclose(ours[:, :n], theirs, atol=1e-5)
        assert torch.isfinite(ours).all()
        if frames < length:  # the padding would reach the last real samples
            assert not torch.allclose(unmasked[:, n - 200 : n], theirs[:, -200:], atol=1e-3)


def test_tf32_is_on_only_while_a_decode_graph_is_recorded() -> None:
    # The switch is process-wide: it must come back as it was, error or not.
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    with pytest.raises(RuntimeError), tf32_matmuls():
        assert matmul.fp32_precision == "tf32"
        raise RuntimeError("recording failed")
    assert matmul.fp32_precision == before != "tf32"
