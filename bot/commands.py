"""`!tts …` chat commands: parse them, check who may run them, hand them to control.

Permission comes from the platform's role data on the message, never from a
display name, which anyone can choose.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from adapters.events import ChatMessage, Role
from bot.config import COMMAND_NAMES, CommandsConfig
from bot.control import Control, Reply
from engine.config import VOICE_NAME

log = structlog.get_logger()

_NO_ARGS = frozenset({"voices", "skip", "clear", "pause", "resume", "status"})
_USAGE = {
    "voice": "voice NAME",
    "mute": "mute USER",
    "unmute": "unmute USER",
    "volume": "volume 0-100",
    "mode": "mode all|command|paid",
    "nick": "nick USER NAME",
    "uservoice": "uservoice USER NAME|off",
}


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CommandError:
    name: str
    reason: str


def is_command(text: str, prefix: str) -> bool:
    first = text.split(maxsplit=1)[0] if text.strip() else ""
    return first.casefold() == prefix.casefold()


def parse_command(text: str, prefix: str) -> Command | CommandError:
    """Parse a line that `is_command`; arguments are checked, not yet applied."""
    words = text.split()[1:]
    if not words:
        return CommandError("", f"usage: {prefix} {'|'.join(COMMAND_NAMES)}")
    name, args = words[0].casefold(), words[1:]
    if name not in COMMAND_NAMES:
        listing = "|".join(COMMAND_NAMES)
        return CommandError(name, f"unknown command {name!r}; try {prefix} {listing}")
    if name in _NO_ARGS:
        # Extra words ("!tts skip please") are harmless; ignore them.
        return Command(name)
    usage = CommandError(name, f"usage: {prefix} {_USAGE[name]}")
    if name == "nick":
        return Command(name, (args[0], " ".join(args[1:]))) if len(args) >= 2 else usage
    if name == "uservoice":
        ok = len(args) == 2 and (args[1] == "off" or VOICE_NAME.fullmatch(args[1]))
        return Command(name, (args[0], args[1])) if ok else usage
    if len(args) != 1:
        return usage
    if name == "volume" and not _is_volume(args[0]):
        return usage
    if name == "voice" and not VOICE_NAME.fullmatch(args[0]):
        return usage
    return Command(name, (args[0],))


def _is_volume(word: str) -> bool:
    return word.isascii() and word.isdigit() and 0 <= int(word) <= 100


def may_run(name: str, roles: frozenset[Role], config: CommandsConfig) -> bool:
    allowed = config.allowed_roles(name)
    return allowed is None or bool(roles & allowed)


def run_command(message: ChatMessage, control: Control, config: CommandsConfig) -> Reply:
    """Parse, authorise and apply one command line; refusals are logged, never raised."""
    parsed = parse_command(message.text, config.prefix)
    fields = {
        "msg_id": message.message_id,
        "platform": message.platform.value,
        "user": message.user_name,
        "user_id": message.user_id,
    }
    if isinstance(parsed, CommandError):
        log.info(
            "tts.command_refused",
            command=parsed.name,
            reason="bad_command",
            detail=parsed.reason,
            **fields,
        )
        return Reply(False, parsed.reason)
    if not may_run(parsed.name, message.roles, config):
        log.info("tts.command_refused", command=parsed.name, reason="not_allowed", **fields)
        return Reply(False, f"{parsed.name}: not allowed for you", public=False)
    reply = _apply(parsed, control)
    if reply.ok:
        log.info(
            "tts.command", command=parsed.name, args=list(parsed.args), reply=reply.text, **fields
        )
    else:
        log.info(
            "tts.command_refused",
            command=parsed.name,
            reason="rejected",
            detail=reply.text,
            **fields,
        )
    return reply


def _apply(command: Command, control: Control) -> Reply:
    args = command.args
    match command.name:
        case "voice":
            return control.set_voice(args[0])
        case "voices":
            return control.list_voices()
        case "skip":
            return control.skip()
        case "clear":
            return control.clear()
        case "pause":
            return control.pause()
        case "resume":
            return control.resume()
        case "mute":
            return control.mute(args[0])
        case "unmute":
            return control.unmute(args[0])
        case "volume":
            return control.set_volume(int(args[0]))
        case "mode":
            return control.set_mode(args[0].casefold())
        case "nick":
            return control.set_nick(args[0], args[1])
        case "uservoice":
            return control.set_user_voice(args[0], None if args[1] == "off" else args[1])
        case "status":
            return control.status()
    raise AssertionError(f"unhandled command {command.name}")
