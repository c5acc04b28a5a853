"""The overlay's audio: the bot's speech over a WebSocket (`/api/audio`), and the
AudioWorklet that plays it in the page (`/static/pcm-worklet.js`).

The frames and their format are bot/audio/browser.py's. The guard in
bot/panel/web.py lets the overlay's read-only token in here, and takes a socket
only from this panel's own pages (Origin) or with the token as a Bearer header:
another site's page cannot listen. A page never sends anything: whatever it
sends other than a close or a ping closes its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from importlib import resources
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from bot.audio.browser import Listener
from bot.panel.parts import PARTS_KEY
from engine.config import is_loopback

log = structlog.get_logger()

WORKLET_PATH = "/static/pcm-worklet.js"
#: What a page may send in one message (it has nothing to send).
MAX_CLIENT_MESSAGE = 1024
#: Pings keep a socket through proxies and find a page that went away silently.
HEARTBEAT_S = 20.0
#: Pages one address beyond this machine may have listening (OBS on a second PC,
#: a preview): one holder of the overlay's token cannot take every listener.
MAX_LISTENERS_PER_REMOTE_ADDRESS = 2


async def audio_socket(request: web.Request) -> web.StreamResponse:
    broadcast = request.app[PARTS_KEY].audio
    if broadcast is None:
        return web.json_response(
            {"error": "no audio: the speech engine is not running"}, status=503
        )
    ws = web.WebSocketResponse(
        max_msg_size=MAX_CLIENT_MESSAGE, heartbeat=HEARTBEAT_S, compress=False
    )
    if not ws.can_prepare(request).ok:
        return web.json_response({"error": "open this as a WebSocket"}, status=400)
    address = request.remote or ""
    if not is_loopback(address):
        mine = sum(1 for other in broadcast.listeners if other.owner == address)
        if mine >= MAX_LISTENERS_PER_REMOTE_ADDRESS:
            log.warning("web.audio_full", listeners=mine, client=address)
            return web.json_response(
                {"error": f"{mine} pages listen from this address already"}, status=503
            )
    listener = broadcast.listen(owner=address)
    if listener is None:
        log.warning("web.audio_full", listeners=broadcast.max_listeners)
        return web.json_response(
            {"error": f"{broadcast.max_listeners} pages listen already"}, status=503
        )
    log.info("web.audio_joined", client=request.remote, listeners=len(broadcast.listeners))
    # Why it ended, the first reason found, set before the close (aiohttp may cancel
    # this handler as the connection goes): closed (by the page), sent_data (the page
    # sent something), dropped (too slow), stopping (the server is), gone (broken).
    ended = ["gone"]
    try:
        await ws.prepare(request)
        sender = asyncio.create_task(_send(ws, listener, ended))
        reader = asyncio.create_task(_read(ws, ended))
        try:
            await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, reader):
                task.cancel()
            await asyncio.gather(sender, reader, return_exceptions=True)
    except ConnectionResetError:
        pass
    finally:
        broadcast.leave(listener)
        with contextlib.suppress(Exception):
            await ws.close()
        log.info("web.audio_left", reason=ended[0], listeners=len(broadcast.listeners))
    return ws


async def _send(ws: web.WebSocketResponse, listener: Listener, ended: list[str]) -> None:
    while (item := await listener.get()) is not None:
        if isinstance(item, bytes):
            await ws.send_bytes(item)
        else:
            await ws.send_str(item)
    # Dropped: the page reconnects and starts afresh from the line in progress.
    if listener.reason == "stopping":
        _ended(ended, "stopping")
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"the bot is stopping")
    else:
        _ended(ended, "dropped")
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")


async def _read(ws: web.WebSocketResponse, ended: list[str]) -> None:
    """Until the page closes; one that sends anything is closed."""
    async for message in ws:
        if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            _ended(ended, "sent_data")
            await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"this socket only sends")
            return
    _ended(ended, "closed")


def _ended(ended: list[str], why: str) -> None:
    """The first reason found is the one kept."""
    if ended[0] == "gone":
        ended[0] = why


@functools.cache
def worklet() -> Any:
    """The handler for the worklet's script (read once, when the app is made)."""
    source = resources.files("bot.panel").joinpath("static", "pcm-worklet.js").read_text("utf-8")

    async def script(_: web.Request) -> web.Response:
        return web.Response(
            text=source, content_type="text/javascript", headers={"Cache-Control": "no-cache"}
        )

    return script
