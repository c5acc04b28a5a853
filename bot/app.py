"""`ishowtts run`: build the parts from the config and run them until a signal."""

from __future__ import annotations

import asyncio
import signal

import structlog

from adapters.events import ChatEvent
from bot.config import Config
from bot.control import Control
from bot.policy import SpeechPolicy
from bot.queue import SpeechQueue
from bot.router import Router
from engine.voices import discover_voices

log = structlog.get_logger()

#: Bounded so a flood waits in the adapters' sockets rather than in memory.
EVENT_QUEUE_SIZE = 1000


class Bot:
    """The wired core: everything between the adapters and the speaker."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.events: asyncio.Queue[ChatEvent] = asyncio.Queue(maxsize=EVENT_QUEUE_SIZE)
        self.queue = SpeechQueue(config.queue)
        self.control = Control(config, self.queue, self.voice_names)
        own = [config.platforms.twitch.nick] if config.platforms.twitch.nick else []
        self.policy = SpeechPolicy(config.policy, own_logins=own)
        self.router = Router(self.policy, self.control, self.queue, config.commands)

    def voice_names(self) -> list[str]:
        return [v.name for v in discover_voices(self.config.engine.voices_dir)]


async def run_bot(config: Config) -> int:
    bot = Bot(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    enabled = [
        name
        for name, section in (
            ("twitch", config.platforms.twitch),
            ("bilibili", config.platforms.bilibili),
        )
        if section.enabled
    ]
    log.info("bot.started", platforms=enabled, voices=bot.voice_names(), voice=bot.control.voice)
    if not enabled:
        log.warning("bot.no_platforms", hint="enable platforms.twitch or platforms.bilibili")
    for name in enabled:
        # The chat adapters and the speech engine are separate issues still
        # being built; say so plainly rather than pretend to be connected.
        log.warning("bot.adapter_unavailable", platform=name, reason="not in this release yet")
    async with asyncio.TaskGroup() as tasks:
        router = tasks.create_task(bot.router.run(bot.events))
        await stop.wait()
        router.cancel()
    log.info("bot.stopped", pending=len(bot.queue))
    return 0
