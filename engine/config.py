"""The engine's settings (`engine` in the config file) and the model's shape."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

#: A path from the config: `~` means the user's home, as in a shell.
UserPath = Annotated[Path, AfterValidator(Path.expanduser)]

#: A voice is a file stem in voices/: no separators, so no path can escape it.
VOICE_NAME = re.compile(r"[\w-]{1,64}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArchConfig(_Section):
    """The F5-TTS transformer's shape; defaults are the published F5TTS_v1_Base."""

    dim: int = Field(1024, gt=0)
    depth: int = Field(22, gt=0)
    heads: int = Field(16, gt=0)
    ff_mult: int = Field(2, gt=0)
    text_dim: int = Field(512, gt=0)
    conv_layers: int = Field(4, ge=0)


class BatchConfig(_Section):
    """Requests of several clients served as one batch (`ishowtts serve`)."""

    #: At most this many requests in one batch; 1 serves them one at a time.
    max_size: int = Field(1, ge=1, le=64)
    #: How long the first request waits for others to join its batch.
    window_ms: float = Field(3.0, ge=0, le=50)


class EngineConfig(_Section):
    model_path: UserPath | None = None
    vocab_path: UserPath | None = None
    vocoder_path: UserPath | None = None
    device: str = "auto"
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    compile: bool = True
    #: Replay each sampling step as a CUDA graph (GPU only; needs no Triton).
    cuda_graphs: bool = True
    nfe_steps: int = Field(8, ge=1, le=128)
    cfg_strength: float = Field(2.0, ge=0, le=10)
    sway_sampling: float = Field(-1.0, ge=-1, le=1)
    cross_fade_ms: float = Field(50.0, ge=0, le=500)
    voices_dir: UserPath = Path("voices")
    default_voice: str = "default"
    #: A synthesis with no sampling progress for this long is abandoned (its
    #: message skipped) and a fresh inference thread serves the rest.
    stall_timeout_s: float = Field(30.0, ge=0.5, le=3600)
    batch: BatchConfig = BatchConfig()
    #: Test-only: see engine/faults.py. null in real use.
    fault_file: UserPath | None = None
    arch: ArchConfig = ArchConfig()

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError(f"must be auto, cpu, mps, cuda or cuda:N, got {value!r}")
        return value

    @field_validator("default_voice")
    @classmethod
    def _voice_name(cls, value: str) -> str:
        if not VOICE_NAME.fullmatch(value):
            raise ValueError(f"must be a voice file name without extension, got {value!r}")
        return value
