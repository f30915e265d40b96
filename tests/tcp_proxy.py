"""A loopback TCP proxy that simulates the ways a server can fail, without touching the server.

Modes, switchable at any time:

- `pass_through()`: bytes flow both ways (new connections; held black-holed ones stay dead);
- `refuse()`: the listener is closed (new connections: ECONNREFUSED) and open ones are reset;
- `reset()`: open connections are reset (RST), and so is every new one right after accept;
- `black_hole()`: connections are accepted, nothing is forwarded and nothing answers; open
  connections go silent too and stay silent, like a partition the client must time out of.

Everything runs on 127.0.0.1 and stops with `stop()` (every socket is closed).
"""

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from enum import Enum


class Mode(Enum):
    PASS = "pass"
    REFUSE = "refuse"
    RESET = "reset"
    BLACK_HOLE = "black_hole"


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    held: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed server or a firewall does."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self.mode = Mode.PASS
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()

    async def start(self) -> None:
        await self._listen()

    async def stop(self) -> None:
        await self._close_listener()
        for link in list(self._links):
            self._drop(link)
        tasks = [t for link in self._links for t in link.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._links.clear()

    async def pass_through(self) -> None:
        self.mode = Mode.PASS
        await self._listen()

    async def refuse(self) -> None:
        self.mode = Mode.REFUSE
        await self._close_listener()
        self._reset_all()

    async def reset(self) -> None:
        self.mode = Mode.RESET
        await self._listen()
        self._reset_all()

    async def black_hole(self) -> None:
        self.mode = Mode.BLACK_HOLE
        await self._listen()
        for link in self._links:
            link.held = True

    @property
    def open_connections(self) -> int:
        return len(self._links)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _reset_all(self) -> None:
        for link in list(self._links):
            self._drop(link)

    def _drop(self, link: _Link) -> None:
        _rst(link.client)
        _rst(link.upstream)
        self._links.discard(link)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = _Link(writer)
        if self.mode in (Mode.RESET, Mode.REFUSE):
            _rst(writer)
            return
        self._links.add(link)
        if self.mode is Mode.BLACK_HOLE:
            link.held = True
            link.tasks.append(asyncio.current_task())  # type: ignore[arg-type]
            await self._swallow(reader, link)
            return
        try:
            upstream_reader, link.upstream = await asyncio.open_connection(*self.target)
        except OSError:
            self._drop(link)
            return
        link.tasks = [
            asyncio.create_task(self._pipe(reader, link.upstream, link)),
            asyncio.create_task(self._pipe(upstream_reader, writer, link)),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        self._links.discard(link)

    async def _swallow(self, reader: asyncio.StreamReader, link: _Link) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            while await reader.read(65536):
                pass
        self._links.discard(link)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: _Link) -> None:
        try:
            while data := await src.read(65536):
                if link.held:
                    continue  # black hole: read and drop, never answer
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not link.held:
                dst.close()
