from __future__ import annotations

import io
import json

import structlog

from bot.logs import configure_logging


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    configure_logging("info", "auto", stream=out)
    try:
        structlog.get_logger().info("tts.spoken", msg_id="m1", audio_s=1.5)
        structlog.get_logger().debug("hidden")
    finally:
        structlog.reset_defaults()
    (line,) = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "tts.spoken"
    assert event["msg_id"] == "m1"
    assert event["level"] == "info"
    assert "timestamp" in event


def test_readable_lines_on_a_terminal() -> None:
    out = FakeTty()
    configure_logging("debug", "auto", stream=out)
    try:
        structlog.get_logger().info("tts.spoken", msg_id="m1")
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert "tts.spoken" in text
    assert "msg_id" in text
    assert not text.lstrip().startswith("{")


def test_format_can_be_forced() -> None:
    out = FakeTty()
    configure_logging("info", "json", stream=out)
    try:
        structlog.get_logger().warning("bot.no_platforms")
    finally:
        structlog.reset_defaults()
    assert json.loads(out.getvalue())["level"] == "warning"


class Writes(io.StringIO):
    """Records each write() call, as an unbuffered stderr would issue them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, s: str) -> int:
        self.calls.append(s)
        return super().write(s)


def test_each_record_is_one_write_ending_in_a_newline() -> None:
    # Under PYTHONUNBUFFERED each write() is a syscall; a record split over two
    # lets a C library's stderr output (ALSA's) land inside a JSON line.
    out = Writes()
    configure_logging("info", "json", stream=out)
    try:
        for n in range(3):
            structlog.get_logger().info("tts.spoken", msg_id=f"m{n}")
    finally:
        structlog.reset_defaults()
    assert len(out.calls) == 3
    assert all(c.endswith("\n") and c.count("\n") == 1 for c in out.calls)
    assert [json.loads(c)["msg_id"] for c in out.calls] == ["m0", "m1", "m2"]
