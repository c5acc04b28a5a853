"""Test-only fault injection: make the next synthesis fail or hang, on purpose.

The soak harness needs to break a running `ishowtts run` from outside. With
`engine.fault_file` set, the engine reads that file before each synthesis and
deletes it: `raise` makes that synthesis fail, `hang SECONDS` blocks it (no
sampling progress) for that long. Unset — the default — nothing is read.
"""

from __future__ import annotations

import time
from pathlib import Path

import structlog

log = structlog.get_logger()


class InjectedFault(RuntimeError):
    """The failure a `raise` fault file asks for."""


def apply_fault(path: Path | None) -> None:
    """Carry out (and consume) the fault in `path`, if there is one."""
    if path is None:
        return
    try:
        command = path.read_text(encoding="utf-8").split()
        path.unlink()
    except (FileNotFoundError, UnicodeDecodeError):
        return
    match command:
        case ["raise"]:
            log.warning("engine.fault_injected", fault="raise")
            raise InjectedFault("injected fault")
        case ["hang", seconds] if _number(seconds):
            log.warning("engine.fault_injected", fault="hang", seconds=float(seconds))
            time.sleep(float(seconds))
        case _:
            log.warning("engine.fault_unknown", content=" ".join(command)[:80])


def _number(text: str) -> bool:
    try:
        return float(text) >= 0
    except ValueError:
        return False
