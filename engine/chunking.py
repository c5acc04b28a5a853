"""Text → sentence chunks, and how long each chunk should sound.

Pure functions: the streaming engine synthesises one chunk at a time, so the
first sentence can play while the next is computed.
"""

from __future__ import annotations

import re
import unicodedata

from engine.audio import SAMPLE_RATE
from engine.checkpoints import HOP_LENGTH

#: F5-TTS keeps reference + generated speech within about this many seconds.
MAX_TOTAL_SECONDS = 22.0
#: Chat lines are short; F5-TTS stretches text under 10 bytes to speed 0.3,
#: which drawls "gg" or "666". We floor the duration per character instead.
MIN_SECONDS_PER_WIDE_CHAR = 0.2
MIN_SECONDS_PER_CHAR = 0.08
MIN_SECONDS = 0.5

_SENTENCE = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])")
_CLAUSE = re.compile(r"(?<=[,;:，、；：])\s*")


def max_chunk_bytes(ref_text: str, ref_seconds: float, speed: float = 1.0) -> int:
    """F5-TTS's budget: as many bytes as the reference's speaking rate fits in what
    is left of ~22 s after the reference."""
    rate = len(ref_text.encode("utf-8")) / ref_seconds
    return max(16, int(rate * (MAX_TOTAL_SECONDS - ref_seconds) * speed))


def split_text(text: str, max_bytes: int) -> list[str]:
    """One chunk per sentence; a sentence over `max_bytes` is split at clauses,
    then spaces, then characters. Every non-space character is kept, in order."""
    chunks: list[str] = []
    for sentence in _SENTENCE.split(text.strip()):
        sentence = sentence.strip()
        if sentence:
            chunks.extend(_fit(sentence, max_bytes))
    return chunks


def _fit(piece: str, max_bytes: int) -> list[str]:
    if _nbytes(piece) <= max_bytes:
        return [piece]
    for splitter in (_CLAUSE, re.compile(r"\s+")):
        parts = [p.strip() for p in splitter.split(piece) if p.strip()]
        if len(parts) > 1:
            return _pack(parts, max_bytes)
    # One long run with no breaks (CJK, or a hostile word): cut by characters.
    out, current = [], ""
    for ch in piece:
        if current and _nbytes(current + ch) > max_bytes:
            out.append(current)
            current = ""
        current += ch
    return [*out, current] if current else out


def _pack(parts: list[str], max_bytes: int) -> list[str]:
    out: list[str] = []
    current = ""
    for part in parts:
        joined = _join(current, part) if current else part
        if current and _nbytes(joined) > max_bytes:
            out.append(current)
            current = part
        else:
            current = joined
    if current:
        out.append(current)
    return [chunk for piece in out for chunk in _fit(piece, max_bytes)]


def _join(a: str, b: str) -> str:
    # No space between CJK pieces; a space between alphabetic ones.
    return a + b if _is_wide(a[-1]) or _is_wide(b[0]) else f"{a} {b}"


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _is_wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def min_seconds(text: str) -> float:
    wide = sum(1 for ch in text if _is_wide(ch) and ch.isalnum())
    narrow = sum(1 for ch in text if ch.isalnum() and not _is_wide(ch))
    return max(MIN_SECONDS, wide * MIN_SECONDS_PER_WIDE_CHAR + narrow * MIN_SECONDS_PER_CHAR)


def duration_frames(ref_frames: int, ref_text: str, gen_text: str, speed: float = 1.0) -> int:
    """Total mel frames (reference + new speech) for one chunk.

    F5-TTS's rule, scaled from the reference's bytes per frame, with a floor
    per character so very short chat lines sound natural instead of drawled.
    """
    per_byte = ref_frames / max(1, _nbytes(ref_text))
    spoken = int(per_byte * _nbytes(gen_text) / speed)
    floor = int(min_seconds(gen_text) / speed * SAMPLE_RATE / HOP_LENGTH)
    return ref_frames + max(spoken, floor)
