"""`ishowtts run`: build the parts from the config and run them until a signal."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog

from adapters.bilibili.client import BilibiliClient
from adapters.bilibili.open_client import BilibiliOpenClient
from adapters.events import ChatEvent, ChatMessage, Disconnected, Platform
from adapters.reconnect import Backoff, describe
from adapters.twitch.client import TwitchClient
from bot.chat import outcomes
from bot.chat.policy import SpeechPolicy
from bot.chat.queue import SpeechQueue
from bot.chat.router import Router
from bot.config import NO_DEVICE, Config, WebConfig
from bot.control import Control, Reply
from bot.instance import AlreadyRunning, ChannelLocks, bind_panel
from bot.lag import LagProbe
from bot.logs import progress, tell_user
from bot.remote_engine import EngineRefused, RemoteEngine, RemoteVoices
from bot.signals import StopOnSignal
from bot.threads import in_daemon_thread, unless_stopped
from bot.voice_checks import VoiceChecks
from engine.voices import VoiceError, VoiceLibrary

if TYPE_CHECKING:  # imported where it starts: a bot with engine.url never loads torch
    from engine.synth import Engine

log = structlog.get_logger()

EXIT_STARTUP = 2

T = TypeVar("T")

#: How long a stop waits for the engine's current sampling step (a step of the
#: full model on a CPU can take seconds; the process ends without it).
ENGINE_STOP_WAIT_S = 2.0

NO_PLATFORM = (
    "no chat platform is on yet (run with --twitch CHANNEL or --bilibili ROOM_ID, "
    "or set platforms.twitch.enabled or platforms.bilibili.enabled to true in the config)"
)

#: Bounded so a flood waits in the adapters' sockets rather than in memory.
EVENT_QUEUE_SIZE = 1000

#: Restarting an adapter whose task crashed: 1 s, doubling to a minute apart
#: while it keeps crashing; back to quick once a run lasted a minute.
ADAPTER_BACKOFF = Backoff(base_s=1.0, cap_s=60.0, jitter_s=1.0, stable_s=60.0)


class Bot:
    """The wired core: everything between the adapters and the speaker."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.events: asyncio.Queue[ChatEvent] = asyncio.Queue(maxsize=EVENT_QUEUE_SIZE)
        self.queue = SpeechQueue(config.queue)
        self.lag = LagProbe()
        #: The voices to speak with: the folder's, or an engine server's (engine.url).
        self.voices: VoiceLibrary | RemoteVoices = (
            RemoteVoices() if config.engine.url else VoiceLibrary(config.engine.voices_dir)
        )
        self.voice_checks = VoiceChecks(self.voices)
        self.control = Control(
            config, self.queue, self.voices.names, voice_problem=self.voice_checks.problem
        )
        own = [config.platforms.twitch.nick] if config.platforms.twitch.nick else []
        self.policy = SpeechPolicy(
            config.policy, own_logins=own, rewards=config.platforms.twitch.reward_rules()
        )
        self.control.follow_blocked_words(self.policy.set_blocked_words)
        self.router = Router(
            self.policy, self.control, self.queue, config.commands, reply=self.reply
        )
        # Third-party emote names are only fetched to be stripped.
        stripped = config.policy.third_party_emotes if config.policy.emotes == "strip" else []
        self.twitch = (
            TwitchClient(config.platforms.twitch, self.events, emote_services=stripped)
            if config.platforms.twitch.enabled
            else None
        )
        bilibili = config.platforms.bilibili
        self.bilibili: BilibiliClient | BilibiliOpenClient | None = None
        if bilibili.enabled:
            client = BilibiliOpenClient if bilibili.mode == "open" else BilibiliClient
            self.bilibili = client(bilibili, self.events)

    def reply(self, message: ChatMessage, reply: Reply) -> None:
        """Answer a chat command in the chat it came from, where that is possible."""
        if message.platform is Platform.TWITCH and self.twitch is not None:
            self.twitch.reply(message, reply.text)

    def adapters(self) -> dict[str, TwitchClient | BilibiliClient | BilibiliOpenClient]:
        """The configured platform clients, by platform name."""
        clients: dict[str, TwitchClient | BilibiliClient | BilibiliOpenClient] = {}
        if self.twitch is not None:
            clients["twitch"] = self.twitch
        if self.bilibili is not None:
            clients["bilibili"] = self.bilibili
        return clients


def panel_url(config: WebConfig) -> str:
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"http://{host}:{config.port}/"


async def _start_web(
    config: Config,
    bot: Bot,
    speaker: Any,
    engine: Any,
    sock: socket.socket | None,
) -> Any:
    """The panel is a convenience: if it cannot start, the bot still speaks."""
    if sock is None:
        return None
    from bot.panel.web import create_app, serve

    try:
        app = create_app(config.web, bot, speaker, engine)
        return await serve(config.web, app, sock)
    except OSError as exc:
        log.error("web.cannot_start", error=str(exc), port=config.web.port)
        return None


def _panel_progress(panel: Any, text: str) -> None:
    """The panel's status while starting (from the engine's thread too: one attribute set)."""
    if panel is not None:
        from bot.panel.web import set_progress

        set_progress(panel.app, text)


def _tell_progress(panel: Any) -> Callable[[str], None]:
    """Start-up progress for the person at the terminal and for the panel."""

    def tell(text: str) -> None:
        progress(text)
        _panel_progress(panel, text)

    return tell


async def _restarting(name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """A bug in the speaker loop is logged and the loop restarted, not fatal on air."""
    while True:
        try:
            await run()
        except Exception:
            log.exception("bot.task_crashed", task=name)
            await asyncio.sleep(1.0)


class Adapter(Protocol):
    async def run(self) -> None: ...

    def down(self, reason: str) -> list[Disconnected]: ...


async def _guarded(
    platform: Platform,
    client: Adapter,
    events: asyncio.Queue[ChatEvent],
    *,
    on_crash: Callable[[Platform], None] | None = None,
    backoff: Backoff = ADAPTER_BACKOFF,
    rand: Callable[[], float] = random.random,
) -> None:
    """One adapter failing must not take the others (or the bot) down, nor stop
    its chat being read: whatever escapes its run() is logged (`adapter.crashed`),
    the bot is told it is down (Disconnected: the status and the metrics show it),
    and it is restarted with backoff (`adapter.restarted`). A run() that returns
    by itself (a refused login) stays ended: retrying would not help."""
    attempt = 0
    while True:
        started = time.monotonic()
        try:
            await client.run()
            return
        except Exception as exc:
            crash: Exception = exc
        error = describe(crash)
        attempt = backoff.next_attempt(attempt, time.monotonic() - started)
        delay = round(backoff.delay(attempt - 1, rand()), 3)
        for event in client.down(f"crashed: {error}"):
            await events.put(event)
        if on_crash is not None:
            on_crash(platform)
        log.error(
            "adapter.crashed",
            platform=platform.value,
            error=error,
            restart_in_s=delay,
            exc_info=crash,
        )
        del crash  # its traceback holds the dead run's frames
        await asyncio.sleep(delay)
        log.info("adapter.restarted", platform=platform.value, attempt=attempt)


def default_voice(config: Config, voices: VoiceLibrary) -> tuple[str, str | None]:
    """engine.default_voice, or what stands in for an unset one (and why): the
    only voice in voices/, else the built-in voice in the chat's language."""
    from engine.voices import choose_default_voice

    platforms = config.platforms
    chinese = platforms.bilibili.enabled and not platforms.twitch.enabled
    return choose_default_voice(voices, config.engine.default_voice, "zh" if chinese else "en")


def start_up_problems(config: Config, voices: VoiceLibrary | RemoteVoices) -> list[str]:
    """What `ishowtts run` refuses to start with that can be seen before the model
    is fetched: the voice (an engine server's are checked once it answers) and the
    output device (none: no device to look for)."""
    from bot.audio.player import AudioDeviceError, find_output_device

    problems: list[str] = []
    try:
        if isinstance(voices, VoiceLibrary) and config.engine.url is None:
            default_voice(config, voices)
    except (VoiceError, OSError) as exc:
        problems.append(str(exc))
    if config.audio.output_device == NO_DEVICE:  # the browser pages' audio only
        if not config.web.enabled:
            problems.append(
                "audio.output_device is none but web.enabled is false: the speech would go "
                "nowhere (the overlay's browser audio needs the panel)"
            )
        return problems
    try:
        find_output_device(config.audio.output_device)
    except (AudioDeviceError, OSError) as exc:
        problems.append(str(exc))
    return problems


def _refuse(problems: list[str], bot: Bot) -> int:
    for problem in problems:
        log.error("bot.cannot_start", error=problem)
        tell_user(f"start-up error: {problem}")
    if not bot.adapters():
        tell_user(f"also: {NO_PLATFORM}")
    return EXIT_STARTUP


async def run_bot(config: Config) -> int:
    """Run until Ctrl-C (or SIGTERM/SIGBREAK); 0 on a clean stop, 2 when start-up
    cannot go on. A second Ctrl-C exits at once."""
    stop = asyncio.Event()
    signals = StopOnSignal(asyncio.get_running_loop(), stop)
    signals.install()
    locks = ChannelLocks(config.platforms)
    try:
        return await _run(config, stop, locks)
    finally:
        locks.release()
        signals.uninstall()


async def _start_engine(
    config: Config, bot: Bot, voices: VoiceLibrary, stop: asyncio.Event, panel: Any
) -> Engine | int:
    """The model loaded here and warmed up: the engine, or the exit code."""
    from engine.checkpoints import CheckpointError, resolve_files
    from engine.synth import Engine

    _panel_progress(panel, "checking the model files (a first run downloads them)…")
    try:
        # The model files last: a first run downloads them.
        finished, files = await unless_stopped(
            stop, in_daemon_thread(lambda: resolve_files(config.engine), "ishowtts-start-up")
        )
    except (CheckpointError, OSError) as exc:
        return _refuse([str(exc)], bot)
    if not finished or files is None:
        return 0

    engine = Engine(config.engine, voices, files, progress=_tell_progress(panel))
    engine.start()
    log.info("bot.warming_up", device=engine.device)
    try:
        finished, _ = await unless_stopped(stop, engine.wait_ready())
    except Exception as exc:  # a bad checkpoint, or the GPU failing at warm-up
        log.error("bot.cannot_start", error=str(exc))
        tell_user(f"start-up error: {exc}")
        await asyncio.to_thread(engine.close, ENGINE_STOP_WAIT_S)
        return EXIT_STARTUP
    if not finished:
        await asyncio.to_thread(engine.close, ENGINE_STOP_WAIT_S)
        return 0
    return engine


async def _connect_engine(
    config: Config, bot: Bot, voices: RemoteVoices, stop: asyncio.Event, panel: Any
) -> RemoteEngine | int:
    """No model here: an engine server's client, once the server has answered (it
    is waited for while it cannot be reached), with the default voice chosen from
    the server's; or the exit code."""
    local = VoiceLibrary(config.engine.voices_dir, builtins=False)
    engine = RemoteEngine(config.engine, voices, local_voices=local)
    engine.start()
    log.info("bot.connecting_engine", url=engine.url)
    _tell_progress(panel)(f"connecting to the engine server at {engine.url}…")
    try:
        finished, _ = await unless_stopped(stop, engine.wait_ready())
        if finished:
            bot.control.voice, why = voices.choose_default(config.engine.default_voice)
            if why is not None:
                log.info("bot.default_voice", voice=bot.control.voice, reason=why)
    except (EngineRefused, VoiceError) as exc:
        await engine.aclose()
        return _refuse([f"engine server {engine.url}: {exc}"], bot)
    if not finished:
        await engine.aclose()
        return 0
    return engine


async def _run(config: Config, stop: asyncio.Event, locks: ChannelLocks) -> int:
    started = time.perf_counter()
    bot = Bot(config)
    # Every problem that can be seen before the model is fetched is told at once,
    # so that a streamer setting up fixes them in one go, not one per restart.
    problems = start_up_problems(config, bot.voices)
    if not problems and isinstance(bot.voices, VoiceLibrary):
        bot.control.voice, why = default_voice(config, bot.voices)
        if why is not None:
            log.info("bot.default_voice", voice=bot.control.voice, reason=why)
    panel_socket = None
    if config.web.enabled:
        try:
            panel_socket = bind_panel(config.web)
        except (AlreadyRunning, OSError) as exc:
            problems.append(f"web panel: {exc}" if isinstance(exc, OSError) else str(exc))
    try:
        locks.acquire()
    except AlreadyRunning as exc:
        problems.append(str(exc))
    if problems:
        if panel_socket is not None:
            panel_socket.close()
        return _refuse(problems, bot)
    # The panel serves from here on: "starting", with the latest progress line.
    panel = await _start_web(config, bot, None, None, panel_socket)
    checks = asyncio.create_task(bot.voice_checks.run())
    engine: Engine | RemoteEngine | None = None
    try:
        started_engine = (
            await _connect_engine(config, bot, bot.voices, stop, panel)
            if isinstance(bot.voices, RemoteVoices)
            else await _start_engine(config, bot, bot.voices, stop, panel)
        )
        if isinstance(started_engine, int):
            return started_engine
        engine = started_engine
        if isinstance(bot.voices, RemoteVoices):  # the server's voices, usable at once
            await bot.voice_checks.refresh()
        _panel_progress(panel, "the voice engine is ready; opening the audio output…")
        await _live(config, bot, engine, panel, stop, started)
    finally:
        # Every way out, a refused start-up too: what the panel queued while the
        # bot was starting gets its end, and mod changes of the last second are written.
        checks.cancel()
        if panel is not None and panel.server is not None:
            await panel.cleanup()
        elif panel is None and panel_socket is not None:
            panel_socket.close()
        if engine is not None:
            await asyncio.to_thread(engine.close, ENGINE_STOP_WAIT_S)
        await bot.control.close()
        unrouted = bot.router.drain(bot.events)
        dropped = bot.queue.remove_where(lambda _: True, outcomes.SKIPPED, "shutdown")
        if engine is not None:
            log.info("bot.stopped", pending=len(dropped) + unrouted)
    return 0


async def _live(
    config: Config,
    bot: Bot,
    engine: Engine | RemoteEngine,
    panel: Any,
    stop: asyncio.Event,
    started: float,
) -> None:
    """On air until `stop`: the player, the speaker, the router and the platforms."""
    from bot.audio.player import Player
    from bot.audio.speaker import Speaker

    player = Player(config.audio)
    speaker = Speaker(bot.queue, engine, player, bot.control)
    enabled = list(bot.adapters())
    async with asyncio.TaskGroup() as tasks:
        player_task = tasks.create_task(player.run())
        # Going live needs a device; a stop meanwhile must still be honoured.
        await unless_stopped(stop, player.opened.wait())
        if panel is not None:  # live from here: the panel leaves "starting"
            from bot.panel.web import attach

            attach(panel.app, speaker, engine, player.broadcast)
        running = [
            tasks.create_task(bot.lag.run()),
            tasks.create_task(bot.router.run(bot.events)),
            tasks.create_task(_restarting("speaker", speaker.run)),
            *(
                tasks.create_task(
                    _guarded(Platform(n), c, bot.events, on_crash=bot.control.adapter_crashed)
                )
                for n, c in bot.adapters().items()
            ),
        ]
        log.info(
            "bot.started",
            platforms=enabled,
            voices=bot.voices.names(),
            voice=bot.control.voice,
            device=player.device_name,
        )
        where = f" — panel at {panel_url(config.web)}" if panel is not None else ""
        progress(f"ready in {time.perf_counter() - started:.1f} s{where} (Ctrl-C stops)")
        if not enabled:
            log.warning("bot.no_platforms", hint="enable platforms.twitch or platforms.bilibili")
        await stop.wait()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if panel is not None:
            await panel.cleanup()
        await player.close()
        player_task.cancel()
