from __future__ import annotations

import io
import json
import threading

import structlog
from structlog.testing import capture_logs

from bot.logs import PIPE_BUF, LogWriter, configure_logging, flush_logs


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
        flush_logs()
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
        flush_logs()
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
        flush_logs()
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


def test_writes_hold_whole_lines_within_pipe_buf() -> None:
    # Under PYTHONUNBUFFERED each write() is a syscall; a record split over two
    # lets a C library's stderr output (ALSA's) land inside a JSON line. Writes
    # of up to PIPE_BUF bytes reach a pipe whole.
    out = Writes()
    configure_logging("info", "json", stream=out)
    try:
        for n in range(200):
            structlog.get_logger().info("tts.spoken", msg_id=f"m{n}", pad="x" * 50)
    finally:
        flush_logs()
        structlog.reset_defaults()
    assert all(c.endswith("\n") and len(c.encode()) <= PIPE_BUF for c in out.calls)
    lines = "".join(out.calls).splitlines()
    assert [json.loads(line)["msg_id"] for line in lines] == [f"m{n}" for n in range(200)]


class Stalled(io.StringIO):
    """A reader that has stopped reading: every write() waits until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, s: str) -> int:
        self.release.wait(30)
        return super().write(s)


def test_a_stalled_reader_never_blocks_the_logger() -> None:
    out = Stalled()
    configure_logging("info", "json", stream=out)
    try:
        # The writer thread is stuck in write(); logging must not wait for it.
        for n in range(100):
            structlog.get_logger().info("tts.overflow", msg_id=f"m{n}")
        assert not out.release.is_set()
        out.release.set()
    finally:
        out.release.set()
        flush_logs()
        structlog.reset_defaults()
    ids = [json.loads(line)["msg_id"] for line in out.getvalue().splitlines()]
    assert ids == [f"m{n}" for n in range(100)]


def test_lines_beyond_the_bound_are_dropped_and_counted() -> None:
    out = Stalled()
    writer = LogWriter(out, max_pending=10)
    try:
        writer.write("first\n")  # taken by the thread, which then waits in write()
        for _ in range(100):
            if writer._queue.empty():
                break
            threading.Event().wait(0.01)
        for n in range(25):
            writer.write(f"line {n}\n")
        with capture_logs() as logs:
            out.release.set()
            assert writer.drain()
    finally:
        out.release.set()
        writer.close()
    assert out.getvalue().splitlines()[:11] == ["first"] + [f"line {n}" for n in range(10)]
    assert [e["lines"] for e in logs if e["event"] == "logs.dropped"] == [15]


# Built here, far from the frames: a console traceback shows source lines
# around each frame, and a secret is a value at run time, not in the source.
SECRET = "SESSDATA=" + "super" + "secret"


def crash_with_a_secret_in_scope(config: dict[str, str]) -> None:
    cookie = config["cookie"]
    raise ValueError(f"bad cookie of {len(cookie)} characters")


def log_a_crash() -> None:
    try:
        crash_with_a_secret_in_scope({"cookie": SECRET})
    except ValueError:
        structlog.get_logger().exception("adapter.crashed", platform="bilibili")


def test_json_tracebacks_carry_no_local_variables() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        log_a_crash()
    finally:
        flush_logs()
        structlog.reset_defaults()
    event = json.loads(out.getvalue())
    assert event["event"] == "adapter.crashed"
    frames = event["exception"][0]["frames"]
    assert frames[-1]["name"] == "crash_with_a_secret_in_scope"
    assert all("locals" not in f for f in frames)
    assert "supersecret" not in out.getvalue()


def test_console_tracebacks_carry_no_local_variables() -> None:
    out = FakeTty()
    configure_logging("info", "console", stream=out)
    try:
        log_a_crash()
    finally:
        flush_logs()
        structlog.reset_defaults()
    text = out.getvalue()
    assert "adapter.crashed" in text and "crash_with_a_secret_in_scope" in text
    assert "supersecret" not in text
