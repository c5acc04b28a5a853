"""The engine server's wire protocol, version 1: messages as values, and their
encoding and strict decoding. No I/O: engine/serve.py (the server) and
bot/remote_engine.py (the bot's client) own the sockets.

Transport: one WebSocket per client (`ws://HOST:8766/ws`, or `wss://` behind a
TLS proxy), many requests multiplexed on it. A WebSocket rather than chunked
HTTP: one long-lived connection carries any number of requests at once, each
cancellable mid-stream with a message instead of a torn-down connection; the
server can push (its voice list after an upload); and the client knows at
every moment whether the engine is reachable (the bot shows it, and keeps
queued lines waiting while it is not).

Control messages are JSON objects in text frames (at most `MAX_TEXT_FRAME`
characters), each with a `type`; a field not listed here is an error, so a
version is exactly what it says. Client to server:

    hello         {version: 1, token?: str, audio?: "float32"|"int16", client?: str}
                  the first frame, within `HELLO_TIMEOUT_S`; a server that does not
                  speak `version` answers error "version" and closes
    synthesize    {id, text, voice, speed?: 1.0, steps?: int, seed?: int, preview?: false}
    cancel        {id}
    voices        {}
    upload_voice  {id, name, transcript, format: "wav"|"flac"|"ogg", size, replace?: false,
                   settings?: {speed?, volume?, nfe_steps?}}
                  followed by one binary CLIP frame with the same id and `size` bytes

Server to client:

    ready     {version, sample_rate, audio, voices, default_voice, engine: {...}, limits: {...}}
    voices    {voices, default_voice}                   (asked for, or after an upload)
    done      {id, audio_s, cancelled?: false}           a request's end
    uploaded  {id, name, voices}
    error     {id?, code, message, retry_after_s?}       a request's end, or the connection's
                                                         refusal (no id) before it closes

Ids are the client's, 1 to 2**32-1, one per request. Binary frames start with a
12-byte little-endian header: kind (u8: 1 audio, 2 clip), format (u8: 1 float32,
2 int16, 0 for a clip), reserved (u16, 0), id (u32), sequence (u32: 0, 1, 2…
within a request). An AUDIO frame's payload is mono samples at `sample_rate`
(24 kHz) in the format the client asked for in its hello: float32 by default,
exactly the engine's output (96 KB per second of speech; the engine makes it
many times faster than real time, so a 3 s sentence arrives as one 288 KB
burst, nothing for a LAN); int16 halves that for a thin link (a rented GPU across the
internet), at 16-bit precision, with any peak beyond full scale clipped. A
CLIP frame's payload is the uploaded file's bytes: binary rather than base64,
which would add a third and a 13 MB JSON string to parse.

Error codes: auth, version, bad_request, too_large, rate_limited, busy,
unknown_voice, bad_voice (an upload the voice checks refuse: their reason),
exists (an upload's name is taken), synthesis (the engine failed the line),
stalled (the engine's watchdog abandoned it).
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError

from engine.audio import SAMPLE_RATE, to_pcm16
from engine.config import VOICE_NAME
from engine.voices import VoiceSettings
from engine.worker import MAX_SPEED, MIN_SPEED

VERSION = 1
#: A client must say hello within this many seconds of connecting.
HELLO_TIMEOUT_S = 10.0
#: The longest control frame, in characters.
MAX_TEXT_FRAME = 64 * 1024
MAX_ID = 2**32 - 1
MAX_SEED = 2**63 - 1
MAX_STEPS = 128
MAX_TRANSCRIPT_CHARS = 2000
MAX_VOICES = 10_000

AudioFormat = Literal["float32", "int16"]
AUDIO_FORMATS: tuple[AudioFormat, ...] = ("float32", "int16")
UploadFormat = Literal["wav", "flac", "ogg"]
UPLOAD_FORMATS: tuple[UploadFormat, ...] = ("wav", "flac", "ogg")

HEADER = struct.Struct("<BBHII")
KIND_AUDIO, KIND_CLIP = 1, 2
_FORMAT_CODES: dict[AudioFormat, int] = {"float32": 1, "int16": 2}
_FORMATS_BY_CODE = {code: name for name, code in _FORMAT_CODES.items()}
_DTYPES: dict[AudioFormat, str] = {"float32": "<f4", "int16": "<i2"}

AUTH = "auth"
VERSION_MISMATCH = "version"
BAD_REQUEST = "bad_request"
TOO_LARGE = "too_large"
RATE_LIMITED = "rate_limited"
BUSY = "busy"
UNKNOWN_VOICE = "unknown_voice"
BAD_VOICE = "bad_voice"
EXISTS = "exists"
SYNTHESIS = "synthesis"
STALLED = "stalled"
CODES = frozenset(
    {
        AUTH,
        VERSION_MISMATCH,
        BAD_REQUEST,
        TOO_LARGE,
        RATE_LIMITED,
        BUSY,
        UNKNOWN_VOICE,
        BAD_VOICE,
        EXISTS,
        SYNTHESIS,
        STALLED,
    }
)

#: An uploaded voice's name: the file stem it is stored under on the server.
UPLOAD_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")
#: Names Windows reserves for devices, with or without an extension.
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul"} | {f"{p}{n}" for p in ("com", "lpt") for n in range(10)}
)


class WireError(Exception):
    """A frame that breaks the protocol: `code` is the error code to answer with."""

    def __init__(self, code: str, message: str, id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        #: The request's id, where the frame had a readable one (its caller waits on it).
        self.id = id


# client to server ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Hello:
    version: int = VERSION
    token: str = ""
    audio: AudioFormat = "float32"
    client: str = ""


@dataclass(frozen=True, slots=True)
class Synthesize:
    id: int
    text: str
    voice: str
    speed: float = 1.0
    steps: int | None = None
    seed: int | None = None
    preview: bool = False


@dataclass(frozen=True, slots=True)
class Cancel:
    id: int


@dataclass(frozen=True, slots=True)
class ListVoices:
    pass


@dataclass(frozen=True, slots=True)
class UploadVoice:
    id: int
    name: str
    transcript: str
    format: UploadFormat
    size: int
    replace: bool = False
    settings: VoiceSettings | None = None


ClientMessage = Hello | Synthesize | Cancel | ListVoices | UploadVoice


# server to client ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Limits:
    max_text_chars: int
    max_upload_bytes: int
    requests_per_minute: int
    burst: int
    #: Requests one connection may have running at once.
    max_requests: int


@dataclass(frozen=True, slots=True)
class Ready:
    voices: tuple[str, ...]
    default_voice: str
    limits: Limits
    audio: AudioFormat = "float32"
    #: What the server's engine runs on (device, path, kernels…), for its log line.
    engine: dict[str, str | int | float | bool | None] = field(default_factory=dict)
    version: int = VERSION
    sample_rate: int = SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class VoiceList:
    voices: tuple[str, ...]
    default_voice: str


@dataclass(frozen=True, slots=True)
class Done:
    id: int
    audio_s: float
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class Uploaded:
    id: int
    name: str
    voices: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Error:
    code: str
    message: str
    id: int | None = None
    retry_after_s: float | None = None


ServerMessage = Ready | VoiceList | Done | Uploaded | Error


# binary frames ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Audio:
    id: int
    seq: int
    samples: np.ndarray  # float32, mono, SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class Clip:
    id: int
    data: bytes


def encode_audio(id: int, seq: int, samples: np.ndarray, audio: AudioFormat) -> bytes:
    """One AUDIO frame: `samples` (float32) in the connection's format."""
    float32 = audio == "float32"
    payload = np.asarray(samples, dtype="<f4").tobytes() if float32 else to_pcm16(samples)
    return HEADER.pack(KIND_AUDIO, _FORMAT_CODES[audio], 0, id, seq) + payload


def encode_clip(id: int, data: bytes) -> bytes:
    return HEADER.pack(KIND_CLIP, 0, 0, id, 0) + data


def decode_binary(frame: bytes) -> Audio | Clip:
    """An AUDIO or CLIP frame; WireError for anything else."""
    if len(frame) < HEADER.size:
        raise WireError(BAD_REQUEST, f"binary frame of {len(frame)} bytes: shorter than a header")
    kind, code, reserved, id, seq = HEADER.unpack_from(frame)
    if reserved != 0:
        raise WireError(BAD_REQUEST, "binary frame header: reserved bytes must be 0")
    if not 1 <= id <= MAX_ID:
        raise WireError(BAD_REQUEST, "binary frame header: id must be 1 or more")
    payload = frame[HEADER.size :]
    if kind == KIND_CLIP:
        if code != 0 or seq != 0:
            raise WireError(BAD_REQUEST, "clip frame header: format and sequence must be 0")
        return Clip(id, payload)
    if kind != KIND_AUDIO:
        raise WireError(BAD_REQUEST, f"binary frame of unknown kind {kind}")
    audio = _FORMATS_BY_CODE.get(code)
    if audio is None:
        raise WireError(BAD_REQUEST, f"audio frame in unknown format {code}")
    dtype = np.dtype(_DTYPES[audio])
    if len(payload) % dtype.itemsize:
        raise WireError(BAD_REQUEST, f"audio frame payload is not whole {audio} samples")
    raw = np.frombuffer(payload, dtype=dtype)
    if audio == "int16":
        samples = raw.astype(np.float32) / np.float32(32768.0)
    else:
        samples = raw.astype(np.float32)  # a writable copy, native order
        if not np.isfinite(samples).all():
            raise WireError(BAD_REQUEST, "audio frame holds samples that are not finite")
    return Audio(id, seq, samples)


# JSON frames -----------------------------------------------------------------------
def encode(message: ClientMessage | ServerMessage) -> str:
    """A control message as its text frame."""
    doc: dict[str, Any]
    match message:
        case Hello(version=version, token=token, audio=audio, client=client):
            doc = {"type": "hello", "version": version, "audio": audio}
            if token:
                doc["token"] = token
            if client:
                doc["client"] = client
        case Synthesize():
            doc = {
                "type": "synthesize",
                "id": message.id,
                "text": message.text,
                "voice": message.voice,
                "speed": message.speed,
            }
            if message.steps is not None:
                doc["steps"] = message.steps
            if message.seed is not None:
                doc["seed"] = message.seed
            if message.preview:
                doc["preview"] = True
        case Cancel(id=id):
            doc = {"type": "cancel", "id": id}
        case ListVoices():
            doc = {"type": "voices"}
        case UploadVoice():
            doc = {
                "type": "upload_voice",
                "id": message.id,
                "name": message.name,
                "transcript": message.transcript,
                "format": message.format,
                "size": message.size,
            }
            if message.replace:
                doc["replace"] = True
            if message.settings is not None:
                doc["settings"] = message.settings.model_dump(exclude_defaults=True)
        case Ready():
            doc = {
                "type": "ready",
                "version": message.version,
                "sample_rate": message.sample_rate,
                "audio": message.audio,
                "voices": list(message.voices),
                "default_voice": message.default_voice,
                "engine": message.engine,
                "limits": {
                    "max_text_chars": message.limits.max_text_chars,
                    "max_upload_bytes": message.limits.max_upload_bytes,
                    "requests_per_minute": message.limits.requests_per_minute,
                    "burst": message.limits.burst,
                    "max_requests": message.limits.max_requests,
                },
            }
        case VoiceList(voices=voices, default_voice=default):
            doc = {"type": "voices", "voices": list(voices), "default_voice": default}
        case Done(id=id, audio_s=audio_s, cancelled=cancelled):
            doc = {"type": "done", "id": id, "audio_s": audio_s}
            if cancelled:
                doc["cancelled"] = True
        case Uploaded(id=id, name=name, voices=voices):
            doc = {"type": "uploaded", "id": id, "name": name, "voices": list(voices)}
        case Error(code=code, message=text, id=id, retry_after_s=retry):
            doc = {"type": "error", "code": code, "message": text}
            if id is not None:
                doc["id"] = id
            if retry is not None:
                doc["retry_after_s"] = retry
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def decode_client(text: str) -> ClientMessage:
    """A client's control frame; WireError says what is wrong with it (and carries
    the request's id where the frame has a readable one)."""
    fields = _Fields(text)
    try:
        return _client_message(fields)
    except WireError as exc:
        exc.id = fields.id_hint
        raise


def _client_message(fields: _Fields) -> ClientMessage:
    match fields.type:
        case "hello":
            # The version first: a later version's hello may carry fields this one lacks.
            version = fields.integer("version", 1, MAX_ID)
            if version != VERSION:
                raise WireError(
                    VERSION_MISMATCH,
                    f"this server speaks wire version {VERSION}; the client asked for {version}",
                )
            message: ClientMessage = Hello(
                version,
                token=fields.text("token", 0, 1024, default=""),
                audio=fields.choice("audio", AUDIO_FORMATS, default="float32"),
                client=fields.text("client", 0, 100, default=""),
            )
        case "synthesize":
            message = Synthesize(
                id=fields.id(),
                text=fields.text("text", 1, MAX_TEXT_FRAME, blank=False),
                voice=fields.voice("voice"),
                speed=fields.number("speed", MIN_SPEED, MAX_SPEED, default=1.0),
                steps=fields.optional_integer("steps", 1, MAX_STEPS),
                seed=fields.optional_integer("seed", 0, MAX_SEED),
                preview=fields.flag("preview"),
            )
        case "cancel":
            message = Cancel(fields.id())
        case "voices":
            message = ListVoices()
        case "upload_voice":
            message = UploadVoice(
                id=fields.id(),
                # Checked in full by `upload_name_problem`, to answer with its reason.
                name=fields.text("name", 0, 200),
                transcript=fields.text("transcript", 0, MAX_TRANSCRIPT_CHARS, default=""),
                format=fields.choice("format", UPLOAD_FORMATS),
                size=fields.integer("size", 0, MAX_ID),
                replace=fields.flag("replace"),
                settings=fields.settings("settings"),
            )
        case other:
            raise WireError(BAD_REQUEST, f"unknown message type {other!r}")
    fields.finish()
    return message


def decode_server(text: str) -> ServerMessage:
    """A server's control frame; WireError says what is wrong with it."""
    fields = _Fields(text)
    match fields.type:
        case "ready":
            version = fields.integer("version", 1, MAX_ID)
            if version != VERSION:
                raise WireError(
                    VERSION_MISMATCH, f"the server speaks wire version {version}, not {VERSION}"
                )
            message: ServerMessage = Ready(
                version=version,
                sample_rate=fields.integer("sample_rate", SAMPLE_RATE, SAMPLE_RATE),
                audio=fields.choice("audio", AUDIO_FORMATS),
                voices=fields.voices("voices"),
                default_voice=fields.voice("default_voice"),
                engine=fields.info("engine"),
                limits=fields.limits("limits"),
            )
        case "voices":
            message = VoiceList(fields.voices("voices"), fields.voice("default_voice"))
        case "done":
            message = Done(
                fields.id(),
                fields.number("audio_s", 0.0, 1e7),
                cancelled=fields.flag("cancelled"),
            )
        case "uploaded":
            message = Uploaded(fields.id(), fields.voice("name"), fields.voices("voices"))
        case "error":
            code = fields.choice("code", tuple(sorted(CODES)))
            message = Error(
                code,
                fields.text("message", 0, 4000),
                id=fields.optional_integer("id", 1, MAX_ID),
                retry_after_s=fields.optional_number("retry_after_s", 0.0, 1e6),
            )
        case other:
            raise WireError(BAD_REQUEST, f"unknown message type {other!r}")
    fields.finish()
    return message


def upload_name_problem(name: str) -> str | None:
    """Why `name` cannot be stored as an uploaded voice, or None: the name is a file
    stem on the server, so only a short, plain, portable one is taken."""
    if not UPLOAD_NAME.fullmatch(name):
        return (
            f"voice name {name[:60]!r} is not allowed: 1-40 characters, "
            "letters A-Z a-z, digits, _ and - only"
        )
    if name.lower() in _WINDOWS_DEVICES:
        return f"voice name {name!r} is not allowed: Windows reserves it for a device"
    return None


_MISSING: Any = object()


class _Fields:
    """One JSON object's fields, read once each by type; `finish` refuses the rest."""

    def __init__(self, text: str) -> None:
        if len(text) > MAX_TEXT_FRAME:
            raise WireError(TOO_LARGE, f"control frame over {MAX_TEXT_FRAME} characters")
        try:
            doc = json.loads(text)
        except RecursionError:
            raise WireError(BAD_REQUEST, "control frame is nested too deeply") from None
        except ValueError:
            raise WireError(BAD_REQUEST, "control frame is not valid JSON") from None
        if not isinstance(doc, dict):
            raise WireError(BAD_REQUEST, "control frame must be a JSON object")
        self._doc: dict[str, Any] = doc
        hint = doc.get("id")
        valid = isinstance(hint, int) and not isinstance(hint, bool) and 1 <= hint <= MAX_ID
        self.id_hint: int | None = hint if valid else None
        self._read = {"type"}
        kind = doc.get("type")
        if not isinstance(kind, str):
            raise WireError(BAD_REQUEST, 'control frame needs a "type" (text)')
        self.type = kind

    def _get(self, key: str, default: Any) -> Any:
        self._read.add(key)
        value = self._doc.get(key, _MISSING)
        if value is _MISSING or (value is None and default is None):
            if default is _MISSING:
                raise WireError(BAD_REQUEST, f"{self.type}: {key} is missing")
            return default
        return value

    def _bad(self, key: str, what: str) -> WireError:
        return WireError(BAD_REQUEST, f"{self.type}: {key} must be {what}")

    def finish(self) -> None:
        unknown = sorted(set(self._doc) - self._read)
        if unknown:
            names = ", ".join(repr(k[:40]) for k in unknown[:5])
            raise WireError(BAD_REQUEST, f"{self.type}: unknown field {names}")

    def integer(self, key: str, low: int, high: int, default: Any = _MISSING) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._bad(key, f"a whole number {low}-{high}")
        return value

    def optional_integer(self, key: str, low: int, high: int) -> int | None:
        value = self._get(key, None)
        return None if value is None else self._check_int(key, value, low, high)

    def _check_int(self, key: str, value: Any, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._bad(key, f"a whole number {low}-{high}")
        return value

    def id(self) -> int:
        return self.integer("id", 1, MAX_ID)

    def number(self, key: str, low: float, high: float, default: Any = _MISSING) -> float:
        value = self._get(key, default)
        return self._check_number(key, value, low, high)

    def optional_number(self, key: str, low: float, high: float) -> float | None:
        value = self._get(key, None)
        return None if value is None else self._check_number(key, value, low, high)

    def _check_number(self, key: str, value: Any, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._bad(key, f"a number {low:g}-{high:g}")
        number = float(value)
        if not math.isfinite(number) or not low <= number <= high:
            raise self._bad(key, f"a number {low:g}-{high:g}")
        return number

    def flag(self, key: str) -> bool:
        value = self._get(key, False)
        if not isinstance(value, bool):
            raise self._bad(key, "true or false")
        return value

    def text(
        self, key: str, shortest: int, longest: int, default: Any = _MISSING, blank: bool = True
    ) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or not shortest <= len(value) <= longest:
            raise self._bad(key, f"text of {shortest}-{longest} characters")
        if not blank and not value.strip():
            raise self._bad(key, "text that is not blank")
        return value

    def choice(self, key: str, allowed: tuple[Any, ...], default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value not in allowed or not isinstance(value, str):
            raise self._bad(key, "one of " + ", ".join(allowed))
        return value

    def voice(self, key: str) -> str:
        value = self._get(key, _MISSING)
        if not isinstance(value, str) or not VOICE_NAME.fullmatch(value):
            raise self._bad(key, "a voice name (letters, digits, _ and -)")
        return value

    def voices(self, key: str) -> tuple[str, ...]:
        value = self._get(key, _MISSING)
        if not isinstance(value, list) or len(value) > MAX_VOICES:
            raise self._bad(key, "a list of voice names")
        if not all(isinstance(v, str) and VOICE_NAME.fullmatch(v) for v in value):
            raise self._bad(key, "a list of voice names")
        return tuple(value)

    def settings(self, key: str) -> VoiceSettings | None:
        value = self._get(key, None)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._bad(key, "an object of speed, volume and nfe_steps")
        try:
            return VoiceSettings.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise self._bad(key, f"voice settings ({where}: {first['msg']})") from None

    def info(self, key: str) -> dict[str, str | int | float | bool | None]:
        value = self._get(key, _MISSING)
        if not isinstance(value, dict) or len(value) > 64:
            raise self._bad(key, "an object of at most 64 plain values")
        for name, item in value.items():
            if len(name) > 64 or not isinstance(item, str | int | float | bool | None):
                raise self._bad(key, "an object of at most 64 plain values")
        return dict(value)

    def limits(self, key: str) -> Limits:
        value = self._get(key, _MISSING)
        names = Limits.__match_args__
        if not isinstance(value, dict) or set(value) != set(names):
            raise self._bad(key, "an object of " + ", ".join(names))
        numbers = [self._check_int(f"{key}.{n}", value[n], 0, 2**53) for n in names]
        return Limits(*numbers)
