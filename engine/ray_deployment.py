"""The engine as a Ray Serve deployment: replicas (one per GPU) that each load the
engine once, warm it up and serve the same WebSocket as `ishowtts serve` (`/ws`,
wire protocol v1) through Ray's HTTP proxy, so a bot's engine.url may name either.

Each replica is an `EngineServer` (engine/serve.py) whose connections are
Starlette's WebSockets (FastAPI is Ray Serve's ingress) behind a
`StarletteConnection`: the hello, the token, the Origin refusal, the limits,
the uploads and the batching are the server's own, unchanged. A WebSocket is one
request to Ray, pinned to the replica that took it for its whole life; when
that replica dies the proxy drops the connection, and the bot's reconnection
lands on another.

Generic: it takes the engine's and the server's settings (EngineConfig,
ServeConfig) and a callable that sets up logging in each replica. Reading the
bot's config file, and the bot's logging, are bot/ray_serve.py's (engine/ never
imports bot/). Imported only where Ray is installed (`pip install .[serve]`).
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' parameter
# types at run time (a `websocket` annotated by a string it cannot resolve is
# taken for a query parameter, and every connection is refused).
import os
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog
from fastapi import FastAPI, WebSocket
from fastapi.responses import PlainTextResponse
from ray import serve

from engine.checkpoints import resolve_files
from engine.config import EngineConfig, RayConfig, ServeConfig
from engine.serve import ABOUT, Ended, EngineServer, server_default_voice
from engine.synth import Engine
from engine.voices import VoiceLibrary

log = structlog.get_logger()

#: The deployment's name in Ray (its replicas are ServeReplica:<app>:engine).
DEPLOYMENT = "engine"
#: Close codes for a handshake refused before it opens (the proxy answers 403)
#: and for a frame over the size limit.
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
#: A replica's engine gets this long to stop when Ray stops the replica.
ENGINE_STOP_WAIT_S = 2.0

#: No generated API pages: the WebSocket is the whole interface.
app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


class StarletteConnection:
    """`Connection` (engine/serve.py) over Starlette's accepted WebSocket. Frames
    over `max_size` end the connection, as aiohttp's limit does."""

    def __init__(self, ws: WebSocket, max_size: int) -> None:
        self.ws = ws
        self.max_size = max_size
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def send_text(self, text: str) -> None:
        await self._send(self.ws.send_text, text)

    async def send_bytes(self, data: bytes) -> None:
        await self._send(self.ws.send_bytes, data)

    async def _send(self, send: Callable[[Any], Any], data: str | bytes) -> None:
        if self._closed:
            raise ConnectionError("the connection is closed")
        try:
            await send(data)
        except Exception as exc:  # Starlette, uvicorn and Ray each have their own
            self._closed = True
            raise ConnectionError(f"the client has gone ({exc!r})") from exc

    async def receive(self) -> str | bytes | Ended:
        if self._closed:
            return Ended()
        try:
            message: MutableMapping[str, Any] = await self.ws.receive()
        except Exception as exc:  # the ASGI channel broke: the connection is over
            self._closed = True
            return Ended(repr(exc))
        if message["type"] != "websocket.receive":  # websocket.disconnect
            self._closed = True
            return Ended()
        data = message.get("bytes")
        if data is None:
            text: str = message.get("text") or ""
            return text
        if len(data) > self.max_size:
            await self.close(MESSAGE_TOO_BIG, "frame too large")
            return Ended(f"a frame of {len(data)} bytes, over {self.max_size}")
        frame: bytes = data
        return frame

    async def close(self, code: int, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.ws.close(code=code, reason=reason)
        except Exception as exc:  # already gone
            log.debug("serve.close_failed", error=repr(exc))


def _replica_id() -> str:
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # outside a replica (a test constructing one by hand)
        return f"pid-{os.getpid()}"


def _tag_log_lines(replica: str) -> None:
    """Every log line of this replica names it (the driver's stream mixes them all)."""

    def add_replica(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("replica", replica)
        return event

    processors = list(structlog.get_config()["processors"])
    structlog.configure(processors=[add_replica, *processors])


# Everything the replica's methods use is defined above: `serve.ingress` takes a
# copy of the app (and so of these methods) as the module stands at this point.
@serve.ingress(app)
class EngineReplica:
    """One replica: the engine, loaded and warmed up before Ray routes to it."""

    def __init__(
        self,
        engine_config: EngineConfig,
        serve_config: ServeConfig,
        default_voice: str,
        setup_logging: Callable[[], None] | None = None,
    ) -> None:
        started = time.perf_counter()
        if setup_logging is not None:
            setup_logging()
        self.replica = _replica_id()
        _tag_log_lines(self.replica)
        voices = VoiceLibrary(engine_config.voices_dir)
        default = server_default_voice(voices, default_voice)
        self.engine = Engine(engine_config, voices, resolve_files(engine_config))
        self.engine.start()
        self.engine.ready.result()  # a failure here fails the replica's start, with its reason
        self.server = EngineServer(self.engine, voices, serve_config, default_voice=default)
        log.info(
            "serve.replica_ready",
            pid=os.getpid(),
            device=self.engine.device,
            seconds=round(time.perf_counter() - started, 2),
        )

    @app.get("/")  # type: ignore[untyped-decorator]
    async def about(self) -> PlainTextResponse:
        return PlainTextResponse(ABOUT + "\n")

    @app.websocket("/ws")  # type: ignore[untyped-decorator]
    async def connection(self, websocket: WebSocket) -> None:
        peer = websocket.client.host if websocket.client is not None else "unknown"
        refusal = self.server.admit(peer, websocket.headers.get("origin"))
        if refusal is not None:
            # Closed before it is accepted: the proxy answers the handshake with 403.
            await websocket.close(code=POLICY_VIOLATION, reason=refusal.text)
            return
        await websocket.accept()
        await self.server.handle(StarletteConnection(websocket, self.server.max_frame_bytes), peer)

    def __del__(self) -> None:
        # Ray stops a replica (a scale-down, a shutdown) by this; the engine's thread
        # would end with the process anyway, but a step under way is let finish.
        engine: Engine | None = getattr(self, "engine", None)
        if engine is not None:
            engine.close(ENGINE_STOP_WAIT_S)


def gpus_per_replica(engine: EngineConfig, ray: RayConfig, cluster_gpus: float | None) -> float:
    """serve.ray.num_gpus_per_replica, `auto` resolved: 1 where the engine runs on
    CUDA (engine.device cuda, or auto where the cluster has GPUs; `cluster_gpus`
    None: not known, taken as having them), else 0."""
    if ray.num_gpus_per_replica != "auto":
        return float(ray.num_gpus_per_replica)
    if engine.device.startswith("cuda"):
        return 1.0
    if engine.device == "auto" and (cluster_gpus is None or cluster_gpus > 0):
        return 1.0
    return 0.0


def application(
    engine: EngineConfig,
    serve_config: ServeConfig,
    *,
    default_voice: str,
    num_gpus: float,
    setup_logging: Callable[[], None] | None = None,
) -> Any:
    """The Ray Serve application (for `serve.run`): serve.ray's replicas or
    autoscaling, `num_gpus` and serve.ray.num_cpus_per_replica each. A replica takes
    serve.max_clients connections at once (each is one ongoing request)."""
    settings = serve_config.ray
    scaling: dict[str, Any] = {"num_replicas": settings.replicas}
    if settings.autoscaling is not None:
        scaling = {"autoscaling_config": settings.autoscaling.model_dump()}
    deployment = serve.deployment(
        EngineReplica,
        name=DEPLOYMENT,
        ray_actor_options={"num_cpus": settings.num_cpus_per_replica, "num_gpus": num_gpus},
        max_ongoing_requests=serve_config.max_clients,
        # A replica that cannot start (a bad checkpoint) is not tried for ever.
        max_constructor_retry_count=3,
        **scaling,
    )
    return deployment.bind(engine, serve_config, default_voice, setup_logging)
