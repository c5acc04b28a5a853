"""`ishowtts run`: build the parts from the config and run them until a signal."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

import structlog

from adapters.bilibili.client import BilibiliClient
from adapters.events import ChatEvent, ChatMessage, Platform
from adapters.twitch.client import TwitchClient
from bot import outcomes
from bot.config import Config
from bot.control import Control, Reply
from bot.policy import SpeechPolicy
from bot.queue import SpeechQueue
from bot.router import Router
from engine.voices import VoiceLibrary

log = structlog.get_logger()

#: Bounded so a flood waits in the adapters' sockets rather than in memory.
EVENT_QUEUE_SIZE = 1000


class Bot:
    """The wired core: everything between the adapters and the speaker."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.events: asyncio.Queue[ChatEvent] = asyncio.Queue(maxsize=EVENT_QUEUE_SIZE)
        self.queue = SpeechQueue(config.queue)
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

    def adapters(self) -> dict[str, Coroutine[Any, Any, None]]:
        runs: dict[str, Coroutine[Any, Any, None]] = {}
        if self.twitch is not None:
            runs["twitch"] = self.twitch.run()
        if self.bilibili is not None:
            runs["bilibili"] = self.bilibili.run()
        return runs


async def _guarded(name: str, run: Coroutine[Any, Any, None]) -> None:
    """One adapter failing must not take the others (or the bot) down."""
    try:
        await run
    except Exception:
        log.exception("adapter.crashed", platform=name)


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
    log.info("bot.started", platforms=enabled, voices=bot.voices.names(), voice=bot.control.voice)
    if not enabled:
        log.warning("bot.no_platforms", hint="enable platforms.twitch or platforms.bilibili")
    adapters = bot.adapters()
    async with asyncio.TaskGroup() as tasks:
        running = [tasks.create_task(bot.router.run(bot.events))]
        running += [tasks.create_task(_guarded(n, r)) for n, r in adapters.items()]
        await stop.wait()
        for task in running:
            task.cancel()
    # Whatever was still waiting gets its end logged: nothing vanishes silently.
    dropped = bot.queue.remove_where(lambda _: True, outcomes.SKIPPED, "shutdown")
    log.info("bot.stopped", pending=len(dropped))
    return 0
