"""The engine server's wire protocol (engine/wire.py): every message round-trips,
and every malformed frame is refused with its code and a sentence saying why."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from engine import wire
from engine.voices import VoiceSettings

LIMITS = wire.Limits(
    max_text_chars=1000,
    max_upload_bytes=10_000_000,
    requests_per_minute=120,
    burst=20,
    max_requests=8,
)

CLIENT_MESSAGES: list[wire.ClientMessage] = [
    wire.Hello(),
    wire.Hello(token="s3cret", audio="int16", client="ishowtts"),
    wire.Synthesize(1, "Hello there.", "alice"),
    wire.Synthesize(2**32 - 1, "你好", "mei", speed=1.3, steps=16, seed=0, preview=True),
    wire.Cancel(7),
    wire.ListVoices(),
    wire.UploadVoice(3, "bob", "This is Bob.", "wav", 48_000),
    wire.UploadVoice(
        4, "Bob-2", "", "flac", 0, replace=True, settings=VoiceSettings(speed=1.2, nfe_steps=12)
    ),
]

SERVER_MESSAGES: list[wire.ServerMessage] = [
    wire.Ready(("alice", "builtin-en"), "alice", LIMITS),
    wire.Ready((), "default", LIMITS, audio="int16", engine={"device": "cuda", "nfe_steps": 8}),
    wire.VoiceList(("alice", "bob"), "alice"),
    wire.Done(5, 2.125),
    wire.Done(6, 0.0, cancelled=True),
    wire.Uploaded(8, "bob", ("alice", "bob")),
    wire.Error(wire.AUTH, "wrong token"),
    wire.Error(wire.RATE_LIMITED, "slow down", id=9, retry_after_s=1.5),
]


@pytest.mark.parametrize("message", CLIENT_MESSAGES, ids=repr)
def test_client_messages_round_trip(message: wire.ClientMessage) -> None:
    assert wire.decode_client(wire.encode(message)) == message


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=repr)
def test_server_messages_round_trip(message: wire.ServerMessage) -> None:
    assert wire.decode_server(wire.encode(message)) == message


def test_float32_audio_is_exact_and_int16_within_a_step() -> None:
    samples = np.random.default_rng(0).uniform(-1, 1, 24_000).astype(np.float32)
    frame = wire.encode_audio(12, 3, samples, "float32")
    assert len(frame) == wire.HEADER.size + 4 * len(samples)
    audio = wire.decode_binary(frame)
    assert isinstance(audio, wire.Audio)
    assert (audio.id, audio.seq) == (12, 3)
    assert audio.samples.dtype == np.float32 and np.array_equal(audio.samples, samples)
    audio.samples[0] = 0.5  # a copy the player may change

    half = wire.decode_binary(wire.encode_audio(12, 4, samples, "int16"))
    assert isinstance(half, wire.Audio)
    assert half.samples.dtype == np.float32
    assert np.abs(half.samples - samples).max() <= 1.5 / 32768


def test_int16_clips_peaks_beyond_full_scale() -> None:
    loud = np.array([2.0, -3.0, 0.5], dtype=np.float32)
    audio = wire.decode_binary(wire.encode_audio(1, 0, loud, "int16"))
    assert isinstance(audio, wire.Audio)
    assert audio.samples.max() <= 1.0 and audio.samples.min() >= -1.0


def test_clip_frames_carry_bytes() -> None:
    clip = wire.decode_binary(wire.encode_clip(5, b"RIFF....WAVE"))
    assert clip == wire.Clip(5, b"RIFF....WAVE")


def refused(text: str, *, server: bool = False) -> wire.WireError:
    with pytest.raises(wire.WireError) as info:
        (wire.decode_server if server else wire.decode_client)(text)
    assert info.value.message  # every refusal says why
    return info.value


def synth(**fields: object) -> str:
    return json.dumps({"type": "synthesize", "id": 1, "text": "hi", "voice": "alice", **fields})


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"id": 1}', '"type"'),
        ('{"type": 5}', '"type"'),
        ('{"type": "launch"}', "unknown message type 'launch'"),
        (synth(extra=1), "unknown field 'extra'"),
        (synth(id=True), "id must be a whole number"),
        (synth(id=0), "id must be a whole number"),
        (synth(id=2**32), "id must be a whole number"),
        (synth(id="1"), "id must be a whole number"),
        (synth(text=""), "text must be text of 1-"),
        (synth(text="   "), "not blank"),
        (synth(text=None), "text must be text"),
        (synth(voice="../etc/passwd"), "voice must be a voice name"),
        (synth(voice=""), "voice must be a voice name"),
        (synth(speed=3.0), "speed must be a number 0.5-2"),
        (synth(speed="fast"), "speed must be a number"),
        (synth(speed=True), "speed must be a number"),
        (synth(steps=0), "steps must be a whole number 1-128"),
        (synth(steps=2.5), "steps must be a whole number"),
        (synth(seed=-1), "seed must be a whole number"),
        (synth(preview="yes"), "preview must be true or false"),
        ('{"type": "synthesize", "id": 1, "text": "hi", "voice": "a", "speed": NaN}', "speed"),
        ('{"type": "cancel"}', "id is missing"),
        ('{"type": "hello"}', "version is missing"),
        ('{"type": "hello", "version": 1, "audio": "mp3"}', "audio must be one of float32, int16"),
        ('{"type": "hello", "version": 1, "token": 5}', "token must be text"),
        ('{"type": "upload_voice", "id": 1, "name": "a", "format": "mp3", "size": 1}', "format"),
        (
            '{"type": "upload_voice", "id": 1, "name": "a", "format": "wav", "size": -1}',
            "size must be",
        ),
        (
            '{"type": "upload_voice", "id": 1, "name": "a", "format": "wav", "size": 1, '
            '"settings": {"speed": 9}}',
            "voice settings (speed:",
        ),
        (
            '{"type": "upload_voice", "id": 1, "name": "a", "format": "wav", "size": 1, '
            '"settings": {"pitch": 2}}',
            "voice settings (pitch:",
        ),
    ],
)
def test_malformed_client_frames_are_bad_requests(text: str, says: str) -> None:
    error = refused(text)
    assert error.code == wire.BAD_REQUEST
    assert says in error.message


def test_a_refused_request_keeps_its_id_so_its_caller_is_answered() -> None:
    assert refused(synth(voice="../x", id=42)).id == 42
    assert refused(synth(id=0)).id is None


def test_deep_nesting_and_huge_frames_are_refused() -> None:
    assert "nested too deeply" in refused("[" * 30_000 + "]" * 30_000).message
    big = synth(text="a" * (wire.MAX_TEXT_FRAME + 1))
    assert refused(big).code == wire.TOO_LARGE


def test_another_version_is_answered_with_the_version_code() -> None:
    error = refused('{"type": "hello", "version": 2, "something_new": true}')
    assert error.code == wire.VERSION_MISMATCH
    assert "speaks wire version 1" in error.message
    ready = json.loads(wire.encode(SERVER_MESSAGES[0]))
    assert refused(json.dumps({**ready, "version": 2}), server=True).code == wire.VERSION_MISMATCH


@pytest.mark.parametrize(
    "doc",
    [
        {"type": "error", "code": "oops", "message": "x"},
        {"type": "done", "id": 1, "audio_s": -1},
        {"type": "voices", "voices": ["ok", "../no"], "default_voice": "ok"},
        {"type": "voices", "voices": "alice", "default_voice": "alice"},
        {"type": "uploaded", "id": 1, "name": "bob"},
    ],
)
def test_malformed_server_frames_are_refused(doc: dict[str, object]) -> None:
    assert refused(json.dumps(doc), server=True).code == wire.BAD_REQUEST


@pytest.mark.parametrize(
    "change",
    [
        {"limits": {"max_text_chars": 1}},
        {"engine": {"device": ["cuda"]}},
        {"engine": {f"k{i}": 1 for i in range(65)}},
        {"sample_rate": 16_000},
    ],
)
def test_a_malformed_ready_is_refused(change: dict[str, object]) -> None:
    ready = json.loads(wire.encode(SERVER_MESSAGES[0]))
    assert refused(json.dumps({**ready, **change}), server=True).code == wire.BAD_REQUEST


HEADER = struct.Struct("<BBHII")


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        (b"\x01\x01", "shorter than a header"),
        (HEADER.pack(9, 1, 0, 1, 0), "unknown kind 9"),
        (HEADER.pack(1, 7, 0, 1, 0), "unknown format 7"),
        (HEADER.pack(1, 1, 1, 1, 0), "reserved"),
        (HEADER.pack(1, 1, 0, 0, 0), "id must be 1 or more"),
        (HEADER.pack(1, 1, 0, 1, 0) + b"\x00\x00\x00", "not whole float32 samples"),
        (HEADER.pack(1, 2, 0, 1, 0) + b"\x00", "not whole int16 samples"),
        (HEADER.pack(1, 1, 0, 1, 0) + struct.pack("<f", float("nan")), "not finite"),
        (HEADER.pack(1, 1, 0, 1, 0) + struct.pack("<f", float("inf")), "not finite"),
        (HEADER.pack(2, 1, 0, 1, 0), "format and sequence must be 0"),
    ],
)
def test_malformed_binary_frames_are_refused(frame: bytes, says: str) -> None:
    with pytest.raises(wire.WireError) as info:
        wire.decode_binary(frame)
    assert info.value.code == wire.BAD_REQUEST
    assert says in info.value.message


@pytest.mark.parametrize(
    "name",
    ["../x", "..", "a/b", "a\\b", "a b", "", "x" * 41, "x" * 200, "émile", "名字", "a.wav"],
)
def test_hostile_upload_names_are_refused(name: str) -> None:
    problem = wire.upload_name_problem(name)
    assert problem is not None and "1-40 characters" in problem


@pytest.mark.parametrize("name", ["con", "CON", "nul", "Aux", "com1", "LPT9", "prn"])
def test_windows_device_names_are_refused(name: str) -> None:
    problem = wire.upload_name_problem(name)
    assert problem is not None and "Windows reserves it" in problem


@pytest.mark.parametrize("name", ["bob", "Bob-2", "my_voice", "x" * 40, "console", "com10"])
def test_plain_upload_names_are_taken(name: str) -> None:
    assert wire.upload_name_problem(name) is None
