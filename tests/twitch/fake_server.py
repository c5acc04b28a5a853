"""A loopback Twitch chat server: real WebSocket text frames of CRLF-terminated
IRC lines, answering the handshake the way Twitch's does."""

from __future__ import annotations

import asyncio
import contextlib
import http
import time
from dataclasses import dataclass, field

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import State


@dataclass
class Session:
    ws: ServerConnection
    nick: str = ""
    lines: list[str] = field(default_factory=list)


class FakeTwitch:
    def __init__(self) -> None:
        self.sessions: list[Session] = []
        self.received: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        #: Refuse this many upcoming connection attempts (HTTP 503).
        self.refuse = 0
        #: Refuse every attempt until this time.monotonic() (an outage).
        self.refuse_until = 0.0
        self.attempts = 0
        #: Answer PINGs; off to play a dead link.
        self.answer_pings = True
        #: Reject logins with Twitch's NOTICE, then close.
        self.reject_login = False
        #: What the client sent that does not end with CRLF as IRC asks (frame
        #: tails without it, lines with a bare CR or LF): every test must see none.
        self.bad_line_endings: list[str] = []
        self._server: Server | None = None

    async def __aenter__(self) -> FakeTwitch:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._gate, compression=None
        )
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        if exc_type is None:
            assert not self.bad_line_endings, f"lines not ended by CRLF: {self.bad_line_endings}"

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        return f"ws://{host}:{port}"

    def _gate(self, _: ServerConnection, request: Request) -> Response | None:
        self.attempts += 1
        if self.refuse > 0 or time.monotonic() < self.refuse_until:
            self.refuse = max(0, self.refuse - 1)
            return Response(
                http.HTTPStatus.SERVICE_UNAVAILABLE.value, "Unavailable", Headers(), b"busy\n"
            )
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        session = Session(ws)
        self.sessions.append(session)
        index = len(self.sessions) - 1
        with contextlib.suppress(Exception):
            async for frame in ws:
                text = frame if isinstance(frame, str) else frame.decode()
                *lines, tail = text.split("\r\n")
                self.bad_line_endings += [
                    line for line in (*lines, tail) if "\r" in line or "\n" in line
                ]
                if tail:
                    # Read it anyway, as Twitch does, so the test runs on and reports it.
                    self.bad_line_endings.append(tail)
                    lines.append(tail)
                for line in lines:
                    if line:
                        session.lines.append(line)
                        await self.received.put((index, line))
                        await self._answer(session, line)

    async def _answer(self, session: Session, line: str) -> None:
        word, _, rest = line.partition(" ")
        if word == "CAP":
            await self.send(":tmi.twitch.tv CAP * ACK :twitch.tv/tags twitch.tv/commands", session)
        elif word == "NICK":
            session.nick = rest
            if self.reject_login:
                await self.send(":tmi.twitch.tv NOTICE * :Login authentication failed", session)
                await session.ws.close()
                return
            await self.send(
                [
                    f":tmi.twitch.tv 001 {rest} :Welcome, GLHF!",
                    f":tmi.twitch.tv 376 {rest} :>",
                ],
                session,
            )
        elif word == "JOIN":
            for channel in rest.split(","):
                n = session.nick
                await self.send(
                    [
                        f":{n}!{n}@{n}.tmi.twitch.tv JOIN {channel}",
                        f"@room-id=1;slow=0 :tmi.twitch.tv ROOMSTATE {channel}",
                    ],
                    session,
                )
        elif word == "PING" and self.answer_pings:
            await self.send(f":tmi.twitch.tv PONG tmi.twitch.tv {rest}", session)

    @property
    def live(self) -> bool:
        """The newest session is open and has joined: chat sent now reaches the client."""
        if not self.sessions:
            return False
        session = self.sessions[-1]
        joined = any(line.startswith("JOIN") for line in session.lines)
        return joined and session.ws.state is State.OPEN

    async def send(self, lines: str | list[str], session: Session | None = None) -> None:
        """Send lines in one frame to a session (default: the newest)."""
        target = session or self.sessions[-1]
        batch = [lines] if isinstance(lines, str) else lines
        await target.ws.send("".join(f"{line}\r\n" for line in batch))

    async def send_raw(self, data: bytes | str) -> None:
        await self.sessions[-1].ws.send(data, text=True)

    def drop(self) -> None:
        """Cut the newest connection without a close frame."""
        transport = self.sessions[-1].ws.transport
        transport.abort()

    async def wait_line(self, prefix: str, session: int | None = None, timeout: float = 5) -> str:
        """The next line the client sends that starts with `prefix`."""
        async with asyncio.timeout(timeout):
            while True:
                index, line = await self.received.get()
                if line.startswith(prefix) and (session is None or index == session):
                    return line

    async def wait_sessions(self, count: int, timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while len(self.sessions) < count:
                await asyncio.sleep(0.01)
