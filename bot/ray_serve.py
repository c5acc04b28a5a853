"""`ishowtts serve --ray`: the engine served by Ray Serve (engine/ray_deployment.py)
on a cluster of GPU machines, or on the several GPUs of one, under the same
WebSocket and wire protocol as `ishowtts serve`, so a bot's engine.url may name
either. Ray's HTTP proxy listens on serve.host and serve.port.

With serve.ray.address unset this starts a Ray cluster of this machine alone and
stops it at the end; with one set it joins that cluster, deploys, and at the end
removes its application only. `build` is the same application for Ray's own
`serve run bot.ray_serve:build config=PATH`.

The entry lives in bot/, not engine/: it reads the bot's config file and sets
the bot's logging up in each replica; engine/ray_deployment.py takes the
engine's settings as they are.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from bot.app import _unless_stopped
from bot.config import Config, ConfigError, load_config
from bot.instance import AlreadyRunning, bind_port
from bot.logs import configure_logging, progress
from bot.serve import bots_config_problem, cannot_start
from bot.signals import StopOnSignal
from bot.threads import settling

log = structlog.get_logger()
T = TypeVar("T")

#: The Ray Serve application's name (`serve status`, `serve shutdown`).
APP = "ishowtts"
#: Given to Ray unless the environment says otherwise: no usage reports sent to
#: Ray's makers, and every replica's log line passed on whole (Ray's
#: de-duplication would hold back lines that differ only in their numbers).
RAY_ENVIRONMENT = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
#: How long the stop waits for Ray Serve and the cluster to shut down.
SHUT_DOWN_WAIT_S = 30.0
INSTALL_HINT = "Ray is not installed here: pip install 'ishowtts[serve]' (or pip install .[serve])"


async def serve_on_ray(config: Config) -> int:
    """0 on a clean stop, 2 when start-up cannot go on."""
    stop = asyncio.Event()
    signals = StopOnSignal(asyncio.get_running_loop(), stop)
    signals.install()
    try:
        return await _serve(config, stop, signals)
    finally:
        signals.uninstall()


async def _serve(config: Config, stop: asyncio.Event, signals: StopOnSignal) -> int:
    from engine.checkpoints import CheckpointError, resolve_files

    started = time.perf_counter()
    problem = bots_config_problem(config)
    if problem is not None:
        return cannot_start(problem)
    if importlib.util.find_spec("ray") is None:
        return cannot_start(INSTALL_HINT)
    serve, local = config.serve, config.serve.ray.address is None
    if local:
        # What a cluster of this machine alone can tell before Ray starts: the port,
        # and the model files (on a cluster they are each machine's own).
        try:
            bind_port(
                serve.host,
                serve.port,
                f"port {serve.port} on {serve.host} is already in use: is another ishowtts "
                "serve running? Stop it, or set serve.port (or --port) to a free port",
            ).close()
        except (AlreadyRunning, OSError) as exc:
            return cannot_start(str(exc))
        try:
            await asyncio.to_thread(resolve_files, config.engine)
        except (CheckpointError, OSError) as exc:
            return cannot_start(str(exc))
    ray_thread = RayThread()
    try:
        try:
            connecting = ray_thread.call(lambda: _connect(config, local))
            finished, _ = await _unless_stopped(stop, connecting)
            # Ray's start puts its own SIGTERM handler (a stack dump, then death) over
            # ours: ours again, so that SIGTERM stops the server cleanly.
            signals.uninstall()
            signals.install()
            url = None
            if finished:
                deploying = ray_thread.call(lambda: _deploy(config))
                finished, url = await _unless_stopped(stop, deploying)
        except Exception as exc:  # Ray's own errors: a replica that cannot start, no cluster
            return cannot_start(f"Ray Serve: {exc}")
        if not finished or url is None:
            return 0
        ray = serve.ray
        log.info(
            "serve.started",
            url=url,
            ray=True,
            address=ray.address or "local",
            replicas=ray.replicas if ray.autoscaling is None else None,
            autoscaling=ray.autoscaling.model_dump() if ray.autoscaling else None,
            token=bool(serve.token.get_secret_value()),
            seconds=round(time.perf_counter() - started, 1),
        )
        progress(f"serving the engine on Ray at {url} in {time.perf_counter() - started:.1f} s")
        progress("(bots connect with engine.url; Ctrl-C stops)")
        await stop.wait()
        return 0
    finally:
        stopping = ray_thread.call(lambda: _shut_down(local))
        try:
            await asyncio.wait_for(stopping, SHUT_DOWN_WAIT_S)
        except TimeoutError:
            # A start still under way holds the thread: the cluster of this machine
            # ends with this process (Ray kills it when its thread ends).
            log.warning("serve.ray_shutdown_slow", waited_s=SHUT_DOWN_WAIT_S)
        except Exception as exc:
            log.warning("serve.ray_shutdown_failed", error=str(exc))
        ray_thread.close()
        log.info("serve.stopped")


class RayThread:
    """One thread for every Ray call, alive as long as the server: the processes of
    a cluster that Ray starts are killed when the thread that started them ends."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ray", daemon=True)
        self._thread.start()

    def call(self, work: Callable[[], T]) -> asyncio.Future[T]:
        """`work` on the thread, after what is before it; its result, awaitable."""
        done, job = settling(work)
        self._jobs.put(job)
        return done

    def close(self) -> None:
        """The thread ends after the calls before this."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()


def _connect(config: Config, local: bool) -> None:
    """Start a Ray cluster of this machine, or join serve.ray.address."""
    for name, value in RAY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    import ray

    settings = config.serve.ray
    if local:
        # Enough logical CPUs for the replicas asked for, on a machine of fewer cores.
        most = settings.autoscaling.max_replicas if settings.autoscaling else settings.replicas
        cpus = max(os.cpu_count() or 1, math.ceil(most * settings.num_cpus_per_replica))
        ray.init(num_cpus=cpus, include_dashboard=False)
    else:
        ray.init(address=settings.address)


def _deploy(config: Config) -> str:
    """Deploy and wait for every replica; the WebSocket's URL."""
    import ray
    from ray import serve

    from engine.ray_deployment import gpus_per_replica

    settings = config.serve.ray
    gpus = gpus_per_replica(config.engine, settings, ray.cluster_resources().get("GPU", 0.0))
    host, port = config.serve.host, config.serve.port
    serve.start(http_options={"host": host, "port": port})
    serve.run(_application(config, gpus), name=APP, route_prefix="/")
    shown = f"[{host}]" if ":" in host else host
    return f"ws://{shown}:{port}/ws"


def _application(config: Config, gpus: float) -> Any:
    from engine.ray_deployment import application

    return application(
        config.engine,
        config.serve,
        default_voice=config.engine.default_voice,
        num_gpus=gpus,
        setup_logging=functools.partial(
            configure_logging, config.logging.level, config.logging.format
        ),
    )


def _shut_down(local: bool) -> None:
    """Ray Serve and the cluster of this machine stopped; on a cluster joined, only
    this application removed."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    try:
        if local:
            serve.shutdown()
        else:
            serve.delete(APP)
    finally:
        ray.shutdown()


def build(args: dict[str, str]) -> Any:
    """The application for Ray's `serve run bot.ray_serve:build config=ishowtts.yaml`
    (Ray's HTTP options, not serve.host/port, say where it listens then). Built
    before Ray is reached: num_gpus_per_replica auto goes by this machine's GPU."""
    import torch

    from engine.ray_deployment import gpus_per_replica

    path = args.get("config")
    try:
        config = load_config(Path(path) if path else None)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    problem = bots_config_problem(config)
    if problem is not None:
        raise ValueError(problem)
    here = float(torch.cuda.device_count())
    return _application(config, gpus_per_replica(config.engine, config.serve.ray, here))
