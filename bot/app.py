"""`ishowtts run`: build the parts from the config and run them until a signal."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from adapters.bilibili.client import BilibiliClient
from adapters.events import ChatEvent, ChatMessage, Platform
from adapters.twitch.client import TwitchClient
from bot import outcomes
from bot.config import Config
from bot.control import Control, Reply
from bot.lag import LagProbe
from bot.logs import tell_user
from bot.policy import SpeechPolicy
from bot.queue import SpeechQueue
from bot.router import Router
from engine.voices import VoiceLibrary

log = structlog.get_logger()

EXIT_STARTUP = 2

#: Bounded so a flood waits in the adapters' sockets rather than in memory.
EVENT_QUEUE_SIZE = 1000


class Bot:
    """The wired core: everything between the adapters and the speaker."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.events: asyncio.Queue[ChatEvent] = asyncio.Queue(maxsize=EVENT_QUEUE_SIZE)
        self.queue = SpeechQueue(config.queue)
        self.lag = LagProbe()
        self.voices = VoiceLibrary(config.engine.voices_dir)
        self.control = Control(config, self.queue, self.voices.names)
        own = [config.platforms.twitch.nick] if config.platforms.twitch.nick else []
        self.policy = SpeechPolicy(config.policy, own_logins=own)
        self.router = Router(
            self.policy, self.control, self.queue, config.commands, reply=self.reply
        )
        self.twitch = (
            TwitchClient(config.platforms.twitch, self.events)
            if config.platforms.twitch.enabled
            else None
        )
        self.bilibili = (
            BilibiliClient(config.platforms.bilibili, self.events)
            if config.platforms.bilibili.enabled
            else None
        )

    def reply(self, message: ChatMessage, reply: Reply) -> None:
        """Answer a chat command in the chat it came from, where that is possible."""
        if message.platform is Platform.TWITCH and self.twitch is not None:
            self.twitch.reply(message, reply.text)

    def adapters(self) -> dict[str, TwitchClient | BilibiliClient]:
        """The configured platform clients, by platform name."""
        clients: dict[str, TwitchClient | BilibiliClient] = {}
        if self.twitch is not None:
            clients["twitch"] = self.twitch
        if self.bilibili is not None:
            clients["bilibili"] = self.bilibili
        return clients


async def _start_web(config: Config, bot: Bot, speaker: Any, engine: Any) -> Any:
    """The panel is a convenience: if it cannot start, the bot still speaks."""
    if not config.web.enabled:
        return None
    from bot.web import create_app, serve

    try:
        return await serve(config.web, create_app(config.web, bot, speaker, engine))
    except OSError as exc:
        log.error("web.cannot_start", error=str(exc), port=config.web.port)
        return None


async def _restarting(name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """A bug in the speaker loop is logged and the loop restarted, not fatal on air."""
    while True:
        try:
            await run()
        except Exception:
            log.exception("bot.task_crashed", task=name)
            await asyncio.sleep(1.0)


async def _guarded(name: str, run: Coroutine[Any, Any, None]) -> None:
    """One adapter failing must not take the others (or the bot) down."""
    try:
        await run
    except Exception:
        log.exception("adapter.crashed", platform=name)


async def run_bot(config: Config) -> int:
    """Run until SIGINT/SIGTERM; 0 on a clean stop, 2 when start-up cannot go on."""
    from bot.player import AudioDeviceError, Player, find_output_device
    from bot.speaker import Speaker
    from engine.checkpoints import CheckpointError, resolve_files
    from engine.synth import Engine
    from engine.voices import VoiceError

    bot = Bot(config)
    # Every problem that can be seen before the model is fetched is told at once,
    # so that a streamer setting up fixes them in one go, not one per restart.
    problems: list[str] = []
    try:
        bot.voices.get(config.engine.default_voice)
    except (VoiceError, OSError) as exc:
        problems.append(str(exc))
    try:
        find_output_device(config.audio.output_device)
    except (AudioDeviceError, OSError) as exc:
        problems.append(str(exc))
    if not problems:  # the model files last: a first run downloads them
        try:
            files = resolve_files(config.engine)
        except (CheckpointError, OSError) as exc:
            problems.append(str(exc))
    if problems:
        for problem in problems:
            log.error("bot.cannot_start", error=problem)
            tell_user(f"start-up error: {problem}")
        if not bot.adapters():
            tell_user(
                "also: no chat platform is on yet (set platforms.twitch.enabled or "
                "platforms.bilibili.enabled to true in the config)"
            )
        return EXIT_STARTUP

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    engine = Engine(config.engine, bot.voices, files)
    engine.start()
    log.info("bot.warming_up", device=engine.device)
    try:
        ready = asyncio.ensure_future(engine.wait_ready())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            engine.close()
            return 0
        stopped.cancel()
        ready.result()
    except Exception as exc:  # a bad checkpoint, or the GPU failing at warm-up
        log.error("bot.cannot_start", error=str(exc))
        tell_user(f"start-up error: {exc}")
        engine.close()
        return EXIT_STARTUP

    player = Player(config.audio)
    speaker = Speaker(bot.queue, engine, player, bot.control)
    enabled = list(bot.adapters())
    panel = await _start_web(config, bot, speaker, engine)
    async with asyncio.TaskGroup() as tasks:
        player_task = tasks.create_task(player.run())
        # Going live needs a device; a stop meanwhile must still be honoured.
        opened = asyncio.ensure_future(player.opened.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({opened, stopping}, return_when=asyncio.FIRST_COMPLETED)
        opened.cancel()
        stopping.cancel()
        running = [
            tasks.create_task(bot.lag.run()),
            tasks.create_task(bot.router.run(bot.events)),
            tasks.create_task(_restarting("speaker", speaker.run)),
            *(tasks.create_task(_guarded(n, c.run())) for n, c in bot.adapters().items()),
        ]
        log.info(
            "bot.started",
            platforms=enabled,
            voices=bot.voices.names(),
            voice=bot.control.voice,
            device=player.device_name,
        )
        if not enabled:
            log.warning("bot.no_platforms", hint="enable platforms.twitch or platforms.bilibili")
        await stop.wait()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await player.close()
        player_task.cancel()
    if panel is not None:
        await panel.cleanup()
    engine.close()
    # Whatever was still waiting gets its end logged: nothing vanishes silently.
    unrouted = bot.router.drain(bot.events)
    dropped = bot.queue.remove_where(lambda _: True, outcomes.SKIPPED, "shutdown")
    log.info("bot.stopped", pending=len(dropped) + unrouted)
    return 0
