"""Replies read from platforms' HTTP APIs, never past a size: a service (or
whatever answers in its place) cannot make the bot hold more than it expects."""

from __future__ import annotations

import aiohttp

#: How much of a reply is read at a time.
CHUNK_BYTES = 64 * 1024


class ReplyTooLarge(ValueError):
    """A reply longer than its reader takes."""


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The reply's body; ReplyTooLarge, once past `limit` bytes (or announced so)."""
    if resp.content_length is not None and resp.content_length > limit:
        raise ReplyTooLarge(f"reply of {resp.content_length} bytes (over {limit})")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise ReplyTooLarge(f"reply over {limit} bytes")
    return bytes(body)
