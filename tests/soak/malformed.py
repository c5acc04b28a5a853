"""Frames a hostile or broken server might send: each must be a logged drop."""

from __future__ import annotations

import functools

import brotli

from adapters.bilibili import codec


def irc_frames() -> list[bytes]:
    """Broken tags, invalid UTF-8, and a 100 KB line (past the 32 KiB line cap)."""
    return [
        b"@broken-tags\r\n",
        b"@id=;;;=\\;user-id :x!x@x PRIVMSG\r\n",
        b"@id=bad-utf8;user-id=1 :a!a@a PRIVMSG #chan :\xff\xfe\xfd\r\n",
        b"@id=huge;user-id=1 :a!a@a PRIVMSG #chan :" + b"a" * 100_000 + b"\r\n",
    ]


def bilibili_frames() -> list[bytes]:
    """A packet whose length lies, random bytes, and a brotli bomb."""
    return [
        codec.HEADER.pack(100_000, 16, codec.VER_JSON, codec.OP_MESSAGE, 0) + b"{}",
        b"\x00\x00\x00\x08 not a packet, quite long enough to parse",
        _brotli_bomb(),
    ]


@functools.cache
def _brotli_bomb() -> bytes:
    """64 MiB of zeros in a few kilobytes: must stop at the codec's inflation cap."""
    payload = brotli.compress(b"\0" * (64 * 1024 * 1024), quality=1)
    return codec.encode_packet(codec.OP_MESSAGE, payload, ver=codec.VER_BROTLI, seq=0)
