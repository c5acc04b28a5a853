"""structlog set-up: JSON lines for machines, readable lines on a terminal.

Event names and fields are part of the interface (tests and operators read
them), so every module logs through `structlog.get_logger()` with stable names.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import queue
import sys
import threading
from typing import Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]

#: Lines waiting for a slow reader before new ones are dropped (and counted).
MAX_PENDING_LINES = 100_000
#: Writes up to this size reach a pipe whole: nothing else written to the same
#: fd (C libraries write to stderr too) can land inside one of our lines.
PIPE_BUF = 4096


class LogWriter:
    """Writes log lines from its own thread.

    A slow reader of stderr (a full pipe, a Windows console, a log shipper that
    stalls) then never blocks the event loop: lines wait here, up to
    `max_pending`; beyond that they are dropped and counted (`logs.dropped`).
    """

    def __init__(self, out: TextIO, max_pending: int = MAX_PENDING_LINES) -> None:
        self._out = out
        self._queue: queue.Queue[str | threading.Event | None] = queue.Queue(max_pending)
        self._dropped = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="ishowtts-log-writer", daemon=True)
        self._thread.start()

    def write(self, text: str) -> None:
        try:
            self._queue.put_nowait(text)
        except queue.Full:
            with self._lock:
                self._dropped += 1

    def flush(self) -> None:
        """Nothing to do on the caller's side: the writer thread flushes."""

    def drain(self, timeout: float = 5.0) -> bool:
        """Until every line logged so far is written (False if that took too long)."""
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        self.drain(timeout)
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < 1024:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            lines = [i for i in items if isinstance(i, str)]
            for chunk in _whole_line_chunks(lines):
                try:
                    self._out.write(chunk)
                    self._out.flush()
                except (OSError, ValueError):  # stderr closed: nothing left to tell
                    pass
            with self._lock:
                dropped, self._dropped = self._dropped, 0
            if dropped:
                structlog.get_logger().warning("logs.dropped", lines=dropped)
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
            if None in items:
                return


def _whole_line_chunks(lines: list[str]) -> list[str]:
    """Consecutive lines joined into writes of at most PIPE_BUF bytes (a longer
    line goes alone)."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        n = len(line.encode("utf-8", "replace"))
        if current and size + n > PIPE_BUF:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += n
    if current:
        chunks.append("".join(current))
    return chunks


_writer: LogWriter | None = None
#: Whether logs are readable lines for a person (not JSON for a machine).
_for_person = False


def flush_logs(timeout: float = 5.0) -> None:
    """Write out every pending log line (at exit, and before reading a test's output)."""
    if _writer is not None:
        _writer.drain(timeout)


atexit.register(flush_logs)


def tell_user(text: str) -> None:
    """A line for the person at the terminal, after every log line logged before
    it (they are written from another thread), so it is the last thing shown."""
    flush_logs()
    print(text, file=sys.stderr)


def progress(text: str) -> None:
    """One readable line per start-up phase for a person at a terminal; JSON logs
    carry the same moments as events. Written through the log writer, in order
    with the log lines, so a slow terminal never holds up the caller (the loop)."""
    if not _for_person:
        return
    if _writer is not None:
        _writer.write(text + "\n")
    else:
        print(text, file=sys.stderr)


# Tracebacks never show the frames' local variables: they hold secrets (the
# Bilibili cookie, tokens, HTTP headers) that must not reach a log. structlog's
# defaults (`dict_tracebacks`, and rich's console tracebacks) show them.
def _json_tracebacks() -> structlog.typing.Processor:
    return structlog.processors.ExceptionRenderer(
        structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
    )


def _console_tracebacks() -> structlog.typing.ExceptionRenderer:
    if importlib.util.find_spec("rich") is not None:
        return structlog.dev.RichTracebackFormatter(show_locals=False)
    return structlog.dev.plain_traceback


def configure_logging(
    level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    global _writer, _for_person
    out = stream if stream is not None else sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    _for_person = not as_json
    tail: list[structlog.typing.Processor] = (
        [_json_tracebacks(), structlog.processors.JSONRenderer()]
        if as_json
        else [
            structlog.dev.ConsoleRenderer(
                colors=out.isatty(), exception_formatter=_console_tracebacks()
            )
        ]
    )
    if _writer is not None:
        _writer.close()
    _writer = writer = LogWriter(out)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # Whole lines only, written from the writer's thread: under
        # PYTHONUNBUFFERED print() would write a line and its newline separately,
        # and anything else writing to the same fd (C libraries do) could land
        # between them and break the JSON line.
        logger_factory=structlog.WriteLoggerFactory(writer),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
