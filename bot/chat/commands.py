"""`!tts …` chat commands: parse them, check who may run them, hand them to control.

Permission comes from the platform's role data on the message, never from a
display name, which anyone can choose. It is checked before anything is said:
someone who may run no command gets no answer at all, so chat cannot make the
bot talk. Replies never repeat what was typed (a link or a slur would be posted
by the bot): they name only what the bot itself knows, such as its voices.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from adapters.events import ChatMessage, Role
from bot.config import COMMAND_NAMES, CommandsConfig
from bot.control import NOT_SEEN, READ_MODES, UNUSABLE_VOICE, Control, Reply
from engine.config import VOICE_NAME

log = structlog.get_logger()

_NO_ARGS = frozenset({"voices", "skip", "clear", "pause", "resume", "status"})
_USAGE = {
    "voice": "voice NAME",
    "mute": "mute USER",
    "unmute": "unmute USER",
    "volume": "volume 0-100",
    "mode": "mode all|command|paid|reward",
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


#: Commands whose replies from control name only what the bot knows (its voices,
#: numbers, modes, state): passed on as they are. The others' replies would
#: repeat a user name or nickname as typed, so chat gets a fixed text instead.
_OWN_WORDS = frozenset({"voices", "skip", "clear", "pause", "resume", "volume", "mode", "status"})


def parse_command(
    text: str, prefix: str, names: tuple[str, ...] = COMMAND_NAMES
) -> Command | CommandError:
    """Parse a line that `is_command`; arguments are checked, not yet applied.

    `names` are the commands an error's hint lists (those the sender may run).
    """
    words = text.split()[1:]
    listing = "|".join(names)
    if not words:
        return CommandError("", f"usage: {prefix} {listing}")
    name, args = words[0].casefold(), words[1:]
    if name not in COMMAND_NAMES:
        return CommandError(name, f"unknown command; try {prefix} {listing}")
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
    if name == "mode" and args[0].casefold() not in READ_MODES:
        return usage
    if name == "voice" and not VOICE_NAME.fullmatch(args[0]):
        return usage
    return Command(name, (args[0],))


def _is_volume(word: str) -> bool:
    return word.isascii() and word.isdigit() and 0 <= int(word) <= 100


def may_run(name: str, roles: frozenset[Role], config: CommandsConfig) -> bool:
    allowed = config.allowed_roles(name)
    return allowed is None or bool(roles & allowed)


def runnable(roles: frozenset[Role], config: CommandsConfig) -> tuple[str, ...]:
    """The commands these roles may run; none means chat gets no reply at all."""
    return tuple(name for name in COMMAND_NAMES if may_run(name, roles, config))


def run_command(message: ChatMessage, control: Control, config: CommandsConfig) -> Reply:
    """Authorise, parse and apply one command line; refusals are logged, never raised.

    Refusals to those who may not run the command are not public; the logs keep
    what was typed, the reply (said in chat) never does.
    """
    allowed = runnable(message.roles, config)
    parsed = parse_command(message.text, config.prefix, allowed)
    fields = {
        "msg_id": message.message_id,
        "platform": message.platform.value,
        "user": message.user_name,
        "user_id": message.user_id,
    }
    known = parsed.name in COMMAND_NAMES
    if (known and parsed.name not in allowed) or not allowed:
        log.info("tts.command_refused", command=parsed.name, reason="not_allowed", **fields)
        return Reply(False, "not allowed", public=False)
    if isinstance(parsed, CommandError):
        log.info(
            "tts.command_refused",
            command=parsed.name,
            reason="bad_command",
            detail=parsed.reason,
            **fields,
        )
        return Reply(False, parsed.reason)
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
    return _for_chat(parsed, reply, control, config.prefix)


def _for_chat(command: Command, reply: Reply, control: Control, prefix: str) -> Reply:
    """The reply as said in chat: control's own words where they echo nothing typed."""
    if command.name in _OWN_WORDS:
        return reply
    if not reply.ok and reply.text.startswith(NOT_SEEN):
        return Reply(False, "that user has not chatted since the bot started")
    match command.name, reply.ok:
        case "voice", True:
            return reply  # names the voice now in use, one of the bot's own
        case (("voice" | "uservoice"), False) if reply.text.startswith(UNUSABLE_VOICE):
            return Reply(False, f"that voice's files are broken; {control.list_voices().text}")
        case (("voice" | "uservoice"), False):
            return Reply(False, f"unknown voice; {control.list_voices().text}")
        case "uservoice", True:
            off = command.args[1] == "off"
            voice = "the current voice again" if off else f"the voice {command.args[1]}"
            return Reply(True, f"that user now speaks with {voice}")
        case "mute", True:
            return Reply(True, "muted that user; their waiting messages are removed")
        case "unmute", True:
            return Reply(True, "unmuted that user")
        case "unmute", False:
            return Reply(False, "that user is not muted")
        case "nick", True:
            return Reply(True, "nickname saved")
    return Reply(reply.ok, f"usage: {prefix} {_USAGE[command.name]}")


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
