"""Routes adapter events: commands to control, chat through the policy into the
queue, retractions to the queue (and the speaker, for what is in flight)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import structlog

from adapters.events import (
    ChatEvent,
    ChatMessage,
    Connected,
    Disconnected,
    EmoteNames,
    Platform,
    Retraction,
    Role,
)
from bot.chat import outcomes
from bot.chat.commands import is_command, run_command
from bot.chat.gifts import GiftMerger
from bot.chat.policy import Drop, SpeakableItem, SpeechPolicy
from bot.chat.queue import RetractResult, SpeechQueue
from bot.chat.users import same_account
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy
        self._control = control
        self._queue = queue
        self._commands = commands
        self._reply = reply
        self._clock = clock
        self.gifts = GiftMerger(policy.config.gift_merge_s, clock)
        self._gift_timer: asyncio.TimerHandle | None = None

    async def run(self, events: asyncio.Queue[ChatEvent]) -> None:
        while True:
            event = await events.get()
            self._guarded(self.handle, event)

    def _guarded(self, handle: Callable[[ChatEvent], None], event: ChatEvent) -> None:
        try:
            handle(event)
        except Exception:
            # One bad event must never stop the bot reading chat.
            log.exception("router.error", event_type=type(event).__name__)
            if isinstance(event, ChatMessage):
                outcomes.log_outcome(outcomes.FILTERED, event, reason="internal_error")

    def flush_gifts(self) -> None:
        """Route the gift combos whose window has closed (from the loop timer, and
        before each event), then set the timer for the next one."""
        for message in self.gifts.due():
            self._guarded(self._route, message)
        self._arm_gift_timer()

    def _arm_gift_timer(self) -> None:
        if self._gift_timer is not None:
            self._gift_timer.cancel()
            self._gift_timer = None
        deadline = self.gifts.next_deadline()
        if deadline is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): flushed on the next event
            return
        self._gift_timer = loop.call_later(max(0.0, deadline - self._clock()), self.flush_gifts)

    def drain(self, events: asyncio.Queue[ChatEvent]) -> int:
        """At shutdown, end the messages still waiting to be routed, and the gift
        combos still held: nothing vanishes."""
        if self._gift_timer is not None:
            self._gift_timer.cancel()
            self._gift_timer = None
        ended = 0
        for message in self.gifts.drain():
            outcomes.log_outcome(outcomes.SKIPPED, message, reason="shutdown")
            ended += 1
        while not events.empty():
            event = events.get_nowait()
            if isinstance(event, ChatMessage):
                outcomes.log_outcome(outcomes.SKIPPED, event, reason="shutdown")
                ended += 1
        return ended

    def say(self, text: str, voice: str, *, as_said: bool = False) -> Reply:
        """The streamer's own line (the panel's "say"): read at broadcaster priority,
        as typed, no announcement, through the same clean-up as chat. The reply's
        text is the queued item's id, or why nothing was queued. `as_said`: a line
        said before (the panel's replay), whose numbers and chat words are words
        already: only cleaned up, not read as chat again."""
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
        language = self._policy.language(message, cleaned)
        said = cleaned if as_said else self._policy.spoken_text(cleaned, language) or cleaned
        item = SpeakableItem(
            message=message,
            text=cleaned,
            spoken=said,
            spoken_plain=said,
            priority=float(self._policy.config.priorities.privileged),
            voice=voice,
            language=language,
        )
        if not self._queue.push(item):
            return Reply(False, QUEUE_FULL)
        return Reply(True, f"local:{message.message_id}")

    def handle(self, event: ChatEvent) -> None:
        if len(self.gifts):
            self.flush_gifts()
        match event:
            case ChatMessage():
                ready = self.gifts.offer(event)
                for message in ready:
                    if message is event:
                        self._message(message)
                    else:
                        self._guarded(self._route, message)
                if all(message is not event for message in ready):
                    self._arm_gift_timer()  # held: its window may close first
            case Retraction():
                self._retract(event)
            case Connected():
                self._control.set_connection(event.platform, True)
            case Disconnected():
                self._control.set_connection(event.platform, False)
            case EmoteNames():
                key = (event.platform, event.channel)
                self._control.policy_state.emote_words[key] = event.names

    def _route(self, event: ChatEvent) -> None:
        if isinstance(event, ChatMessage):
            self._message(event)

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
        platform = event.platform
        if event.message_ids:
            result = self._queue.retract(platform, event.message_ids)
            reason = "message_deleted"
        elif event.user_id is not None:
            result = self._queue.retract_user(platform, event.user_id)
            reason = "user_cleared"
        else:
            result = self._queue.retract_channel(platform, event.channel)
            reason = "chat_cleared"
        # A held gift combo is retracted whole when its first gift matches (the
        # others have ended as merged already).
        for message in self.gifts.remove_where(lambda m: _matches(event, m)):
            outcomes.log_outcome(outcomes.RETRACTED, message, reason=reason)
        if result.in_flight:
            self._control.cut(result.in_flight, outcomes.RETRACTED)


def _matches(event: Retraction, message: ChatMessage) -> bool:
    """Whether a retraction takes back a message, as the queue's retractions decide."""
    if message.platform != event.platform:
        return False
    if event.message_ids:
        return message.message_id in event.message_ids
    if event.user_id is not None:
        return same_account(event.platform, event.user_id, message.user_id)
    return message.channel == event.channel
