from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.checkpoints import ModelFiles, load_vocos
from engine.vocoder import masked_backbone


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
