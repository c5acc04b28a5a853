"""The engine's settings (`engine` in the config file) and the model's shape."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

#: A path from the config: `~` means the user's home, as in a shell.
UserPath = Annotated[Path, AfterValidator(Path.expanduser)]

#: A voice is a file stem in voices/: no separators, so no path can escape it.
VOICE_NAME = re.compile(r"[\w-]{1,64}")

#: Where an engine server (`ishowtts serve`) takes its WebSocket, when engine.url names no path.
SERVE_PATH = "/ws"


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
    #: An engine server (`ishowtts serve`) to speak through instead of loading the
    #: model here: ws://host:port or wss://… (http:// and https:// mean the same).
    url: str | None = None
    #: The engine server's token (serve.token on that machine).
    token: SecretStr = SecretStr("")
    #: How the server sends audio: float32 (exact, 96 KB a second of speech) or
    #: int16 (half of that, for a thin link).
    wire_format: Literal["float32", "int16"] = "float32"

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

    @field_validator("url")
    @classmethod
    def _server_url(cls, value: str | None) -> str | None:
        return None if value is None else engine_endpoint(value)


def engine_endpoint(url: str) -> str:
    """An engine server's address as the WebSocket to open: ws:// or wss://, its
    path (SERVE_PATH when it names none); ValueError says what is wrong."""
    problem = f"must be an engine server address like ws://gpu-box:8766, got {url!r}"
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # ValueError when it is not a number 0-65535
    except ValueError:
        raise ValueError(problem) from None
    scheme = {"ws": "ws", "http": "ws", "wss": "wss", "https": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.hostname or parts.username or parts.password:
        raise ValueError(problem)
    if parts.query or parts.fragment or port == 0 or re.search(r"\s", url.strip()):
        raise ValueError(problem)
    path = parts.path if parts.path not in ("", "/") else SERVE_PATH
    return f"{scheme}://{parts.netloc}{path}"


def is_loopback(host: str) -> bool:
    """Whether an address to listen on is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AutoscalingConfig(_Section):
    """Ray Serve's replicas by ongoing requests: each connected bot holds one (its
    WebSocket), so `target_ongoing_requests` is the bots a replica serves before
    another is started."""

    min_replicas: int = Field(1, ge=0, le=1000)
    max_replicas: int = Field(2, ge=1, le=1000)
    target_ongoing_requests: float = Field(4.0, gt=0, le=10_000)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas: {self.min_replicas} is more than max_replicas ({self.max_replicas})"
            )
        return self


class RayConfig(_Section):
    """`ishowtts serve --ray`: the engine as a Ray Serve deployment
    (engine/ray_deployment.py), one replica per GPU."""

    #: The Ray cluster to join: null starts one on this machine; "auto" joins the
    #: one this machine belongs to (`ray start`); ray://head:10001 a remote one.
    address: str | None = None
    #: Replicas, each loading the engine once (unless `autoscaling` is set).
    replicas: int = Field(1, ge=1, le=1000)
    autoscaling: AutoscalingConfig | None = None
    #: GPUs each replica holds: auto is 1 where the engine runs on CUDA (engine.device
    #: cuda, or auto on a cluster with GPUs), else 0.
    num_gpus_per_replica: Literal["auto"] | float = "auto"
    #: Logical CPUs each replica holds (Ray's scheduling, not a thread limit).
    num_cpus_per_replica: float = Field(1.0, ge=0, le=1024)

    @model_validator(mode="after")
    def _one_way_to_scale(self) -> RayConfig:
        if self.autoscaling is not None and "replicas" in self.model_fields_set:
            raise ValueError("replicas: set replicas or autoscaling, not both")
        return self

    @field_validator("num_gpus_per_replica", mode="before")
    @classmethod
    def _gpus(cls, value: object) -> object:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 64:
            raise ValueError(f"must be auto or a number of GPUs from 0 to 64, got {value!r}")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"auto|(ray://)?[\w.\-\[\]:]+", value):
            raise ValueError(
                f"must be auto, a head node's host:port or ray://host:port, got {value!r}"
            )
        return value


class ServeConfig(_Section):
    """`ishowtts serve`: the engine as a network service (engine/serve.py)."""

    host: str = "127.0.0.1"
    port: int = Field(8766, ge=1, le=65535)
    #: Required where the server listens beyond this machine.
    token: SecretStr = SecretStr("")
    #: Connections at once; more are refused (`busy`).
    max_clients: int = Field(16, ge=1, le=10_000)
    #: Requests (lines, voice lists, uploads) per minute from one client address,
    #: with `burst` of them at once.
    requests_per_minute: int = Field(120, ge=1, le=1_000_000)
    burst: int = Field(20, ge=1, le=100_000)
    #: The longest line a client may ask for, in characters.
    max_text_chars: int = Field(1000, ge=1, le=100_000)
    #: The largest voice clip a client may upload, in bytes.
    max_upload_bytes: int = Field(10_000_000, ge=1024, le=1_000_000_000)
    #: Whether an upload may replace a voice the server has (the client must ask too).
    allow_replace: bool = False
    #: `ishowtts serve --ray` only: the Ray cluster and the replicas.
    ray: RayConfig = RayConfig()

    @model_validator(mode="after")
    def _token_off_loopback(self) -> ServeConfig:
        if not is_loopback(self.host) and not self.token.get_secret_value():
            raise ValueError(
                f"token: listening on {self.host} (not loopback) needs a token "
                "(set serve.token or ISHOWTTS_SERVE_TOKEN)"
            )
        return self
