"""`ishowtts serve`: the engine loaded once, as `ishowtts run` loads it (the same
config keys, start-up, warm-up and `engine.ready`), and served to bots on other
machines (engine/serve.py) until Ctrl-C (or SIGTERM/SIGBREAK)."""

from __future__ import annotations

import asyncio
import socket
import time

import structlog

from bot.app import ENGINE_STOP_WAIT_S, EXIT_STARTUP
from bot.config import Config
from bot.instance import AlreadyRunning, bind_port
from bot.logs import progress, tell_user
from bot.signals import StopOnSignal
from bot.threads import in_daemon_thread, unless_stopped
from engine.config import ServeConfig
from engine.serve import server_default_voice
from engine.voices import VoiceError, VoiceLibrary

log = structlog.get_logger()


async def serve_engine(config: Config) -> int:
    """0 on a clean stop, 2 when start-up cannot go on."""
    stop = asyncio.Event()
    signals = StopOnSignal(asyncio.get_running_loop(), stop)
    signals.install()
    try:
        return await _serve(config, stop)
    finally:
        signals.uninstall()


def cannot_start(problem: str) -> int:
    log.error("serve.cannot_start", error=problem)
    tell_user(f"start-up error: {problem}")
    return EXIT_STARTUP


def bots_config_problem(config: Config) -> str | None:
    """Why `config` cannot be a server's: it speaks through one itself."""
    if config.engine.url is None:
        return None
    return (
        f"engine.url is set ({config.engine.url}): that config is a bot's, which "
        "speaks through a server; the server loads the model itself (leave engine.url unset)"
    )


def bind_serve_port(serve: ServeConfig) -> socket.socket:
    """A listening socket on serve.host:serve.port, or AlreadyRunning / OSError."""
    return bind_port(
        serve.host,
        serve.port,
        f"port {serve.port} on {serve.host} is already in use: is another ishowtts serve "
        "running? Stop it, or set serve.port (or --port) to a free port",
    )


async def _serve(config: Config, stop: asyncio.Event) -> int:
    from engine.checkpoints import CheckpointError, resolve_files
    from engine.serve import EngineServer
    from engine.synth import Engine

    started = time.perf_counter()
    problem = bots_config_problem(config)
    if problem is not None:
        return cannot_start(problem)
    voices = VoiceLibrary(config.engine.voices_dir)
    try:
        default = server_default_voice(voices, config.engine.default_voice)
    except (VoiceError, OSError) as exc:
        return cannot_start(str(exc))
    serve = config.serve
    try:
        # Held from the first second, so a second server is told before it loads a model.
        sock = bind_serve_port(serve)
    except (AlreadyRunning, OSError) as exc:
        return cannot_start(str(exc))
    try:
        try:
            finished, files = await unless_stopped(
                stop, in_daemon_thread(lambda: resolve_files(config.engine), "ishowtts-start-up")
            )
        except (CheckpointError, OSError) as exc:
            return cannot_start(str(exc))
        if not finished or files is None:
            return 0
        engine = Engine(config.engine, voices, files, progress=progress)
        engine.start()
        try:
            try:
                finished, _ = await unless_stopped(stop, engine.wait_ready())
            except Exception as exc:  # a bad checkpoint, or the GPU failing at warm-up
                return cannot_start(str(exc))
            if not finished:
                return 0
            server = EngineServer(engine, voices, serve, default_voice=default)
            url = await server.start(sock)
            progress(f"serving the engine at {url} in {time.perf_counter() - started:.1f} s")
            progress("(bots connect with engine.url; Ctrl-C stops)")
            await stop.wait()
            await server.close()
            log.info("serve.stopped")
            return 0
        finally:
            await asyncio.to_thread(engine.close, ENGINE_STOP_WAIT_S)
    finally:
        sock.close()
