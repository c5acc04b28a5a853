"""Routes adapter events: commands to control, chat through the policy into the
queue, retractions to the queue (and the speaker, for what is in flight)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import structlog

from adapters.events import (
    ChatEvent,
    ChatMessage,
    Connected,
    Disconnected,
    Platform,
    Retraction,
    Role,
)
from bot.chat import outcomes
from bot.chat.commands import is_command, run_command
from bot.chat.policy import Drop, SpeakableItem, SpeechPolicy
from bot.chat.queue import RetractResult, SpeechQueue
from bot.config import CommandsConfig
from bot.control import Control, Reply

log = structlog.get_logger()

#: Sends a command's reply back to the chat it came from, where the adapter can.
ReplySink = Callable[[ChatMessage, Reply], None]


#: Why the streamer's own line was not queued when the queue had no room.
QUEUE_FULL = "the queue is full"


class Router:
    def __init__(
        self,
        policy: SpeechPolicy,
        control: Control,
        queue: SpeechQueue,
        commands: CommandsConfig,
        reply: ReplySink | None = None,
    ) -> None:
        self._policy = policy
        self._control = control
        self._queue = queue
        self._commands = commands
        self._reply = reply

    async def run(self, events: asyncio.Queue[ChatEvent]) -> None:
        while True:
            event = await events.get()
            try:
                self.handle(event)
            except Exception:
                # One bad event must never stop the bot reading chat.
                log.exception("router.error", event_type=type(event).__name__)
                if isinstance(event, ChatMessage):
                    outcomes.log_outcome(outcomes.FILTERED, event, reason="internal_error")

    def drain(self, events: asyncio.Queue[ChatEvent]) -> int:
        """At shutdown, end the messages still waiting to be routed: nothing vanishes."""
        ended = 0
        while not events.empty():
            event = events.get_nowait()
            if isinstance(event, ChatMessage):
                outcomes.log_outcome(outcomes.SKIPPED, event, reason="shutdown")
                ended += 1
        return ended

    def say(self, text: str, voice: str) -> Reply:
        """The streamer's own line (the panel's "say"): read at broadcaster priority,
        as typed, no announcement, through the same clean-up as chat. The reply's
        text is the queued item's id, or why nothing was queued."""
        message = ChatMessage(
            platform=Platform.LOCAL,
            channel="panel",
            message_id=uuid.uuid4().hex,
            user_id="streamer",
            user_name="streamer",
            text=text,
            roles=frozenset({Role.BROADCASTER}),
        )
        cleaned = self._policy.clean_text(text)
        if isinstance(cleaned, Drop) or not cleaned:
            reason = cleaned.reason if isinstance(cleaned, Drop) else "empty"
            outcomes.log_outcome(outcomes.FILTERED, message, reason=reason)
            return Reply(False, f"nothing to say after filtering ({reason})")
        item = SpeakableItem(
            message=message,
            text=cleaned,
            spoken=cleaned,
            spoken_plain=cleaned,
            priority=float(self._policy.config.priorities.privileged),
            voice=voice,
        )
        if not self._queue.push(item):
            return Reply(False, QUEUE_FULL)
        return Reply(True, f"local:{message.message_id}")

    def handle(self, event: ChatEvent) -> None:
        match event:
            case ChatMessage():
                self._message(event)
            case Retraction():
                self._retract(event)
            case Connected():
                self._control.set_connection(event.platform, True)
            case Disconnected():
                self._control.set_connection(event.platform, False)

    def _message(self, message: ChatMessage) -> None:
        if is_command(message.text, self._commands.prefix):
            reply = run_command(message, self._control, self._commands)
            outcomes.log_outcome(outcomes.FILTERED, message, reason="command")
            if self._reply is not None and reply.public:
                self._reply(message, reply)
            return
        decision = self._policy.evaluate(message, self._control.policy_state)
        if isinstance(decision, Drop):
            outcomes.log_outcome(outcomes.FILTERED, message, reason=decision.reason)
            return
        if self._queue.push(decision):
            self._control.policy_state.record_accepted(decision, self._policy.config.cooldown_s)

    def _retract(self, event: Retraction) -> None:
        result: RetractResult
        if event.message_ids:
            result = self._queue.retract(event.platform, event.message_ids)
        elif event.user_id is not None:
            result = self._queue.retract_user(event.platform, event.user_id)
        else:
            result = self._queue.retract_channel(event.platform, event.channel)
        if result.in_flight:
            self._control.cut(result.in_flight, outcomes.RETRACTED)
