from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import chunking
from engine.audio import SAMPLE_RATE
from engine.checkpoints import HOP_LENGTH


def test_one_chunk_per_sentence_english_and_chinese() -> None:
    text = "Hello there! How are you? 你好。今天怎么样？Fine, thanks."
    assert chunking.split_text(text, 200) == [
        "Hello there!",
        "How are you?",
        "你好。",
        "今天怎么样？",
        "Fine, thanks.",
    ]


def test_long_sentence_split_at_commas_then_spaces_then_characters() -> None:
    long = "first part of it, second part of it, third part of it"
    assert chunking.split_text(long, 20) == [
        "first part of it,",
        "second part of it,",
        "third part of it",
    ]
    words = "alpha beta gamma delta epsilon zeta"
    assert all(len(c.encode()) <= 12 for c in chunking.split_text(words, 12))
    cjk = "我们今天一起去公园玩吧好不好呀"
    pieces = chunking.split_text(cjk, 12)  # 4 characters of 3 bytes
    assert "".join(pieces) == cjk
    assert all(len(p.encode()) <= 12 for p in pieces)


@given(st.text(max_size=400), st.integers(8, 300))
def test_chunking_keeps_all_the_text(text: str, max_bytes: int) -> None:
    pieces = chunking.split_text(text, max_bytes)
    assert "".join("".join(p.split()) for p in pieces) == "".join(text.split())
    assert all(p == p.strip() and p for p in pieces)
    assert all(len(p.encode()) <= max_bytes for p in pieces if len(p) > 1)


def test_max_chunk_bytes_follows_f5_rule() -> None:
    # 100 bytes in 5 s of reference → 20 B/s × (22 − 5) s
    assert chunking.max_chunk_bytes("x" * 100, 5.0) == 340
    assert chunking.max_chunk_bytes("x" * 100, 5.0, speed=0.5) == 170


def test_duration_rule_for_normal_text() -> None:
    ref_frames = 656  # 7 s for 100 bytes: 14 bytes/s, an ordinary speaking rate
    ref_text = "x" * 100
    text = "a normal sentence of chat text here"  # 35 bytes
    assert chunking.duration_frames(ref_frames, ref_text, text) == ref_frames + int(6.56 * 35)
    faster = chunking.duration_frames(ref_frames, ref_text, text, speed=1.25)
    assert faster == ref_frames + int(6.56 * 35 / 1.25)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("gg", 0.5), ("hi", 0.5), ("666", 0.5), ("hello", 0.5), ("你好", 0.5), ("主播好厉害", 1.0)],
)
def test_very_short_lines_get_a_minimum_per_character(text: str, seconds: float) -> None:
    ref_frames, ref_text = 470, "x" * 100  # fast reference: 4.7 frames per byte
    frames = chunking.duration_frames(ref_frames, ref_text, text) - ref_frames
    assert frames == int(seconds * SAMPLE_RATE / HOP_LENGTH)
    # f5-tts would use speed 0.3 on these (< 10 bytes): over three times as long for "hello".
    f5_frames = int(ref_frames / len(ref_text) * len(text.encode()) / 0.3)
    if text == "hello":
        assert f5_frames > 1.2 * frames
