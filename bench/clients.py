"""The two wire clients of the load generator, built to cost the generator little.

* :class:`GrpcClient`: grpc.aio channels sending pre-serialised request bytes and taking
  the response as bytes (no protobuf work per call unless a scenario asks for it). Each
  channel has its own subchannel pool, so ``connections`` channels are that many TCP
  connections (Envoy spreads connections, not streams, over its worker threads).
* :class:`HttpClient`: a minimal HTTP/1.1 keep-alive client on asyncio protocols, one
  connection per concurrent caller (HTTP/1.1 has no multiplexing). It parses the status
  line and ``content-length`` or chunked bodies, nothing more; a general client (urllib,
  aiohttp) would cost more CPU per call than the server under test on this machine.

Every call answers a status *name*: ``"OK"``, or e.g. ``"grpc:UNAVAILABLE"``,
``"http:503"``, ``"client:timeout"``. Unlike h2load, a gRPC call whose ``grpc-status`` is
not 0 is a failure, whatever the HTTP status said.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from bench.target import Target

OK = "OK"
TIMEOUT = "client:timeout"
CONNECTION = "client:connection"


def grpc_status_name(code: grpc.StatusCode | None) -> str:
    """The failure name of a gRPC status (``OK`` for OK)."""
    if code is None:
        return "grpc:UNKNOWN"
    return OK if code == grpc.StatusCode.OK else f"grpc:{code.name}"


def http_status_name(status: int) -> str:
    """The failure name of an HTTP status (``OK`` for 2xx)."""
    return OK if 200 <= status < 300 else f"http:{status}"


class GrpcClient:
    """Unary calls on ``connections`` channels to one target, bytes in and bytes out."""

    def __init__(self, target: Target, connections: int = 1) -> None:
        # A local subchannel pool per channel: otherwise grpc shares one connection among
        # all channels to the same address.
        options = [("grpc.use_local_subchannel_pool", 1)]
        self._channels = [
            grpc.aio.insecure_channel(target.address, options=options)
            for _ in range(max(1, connections))
        ]
        self._next = 0

    def method(self, path: str) -> list[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]]:
        """One callable per channel for the RPC at ``path`` (``/pkg.Service/Method``)."""
        # No serialisers: requests are encoded once up front, responses stay bytes.
        return [channel.unary_unary(path, None, None) for channel in self._channels]

    async def wait_ready(self, within: float) -> None:
        """Connect every channel within ``within`` seconds (raises TimeoutError)."""
        async with asyncio.timeout(within):
            await asyncio.gather(*(c.channel_ready() for c in self._channels))

    async def close(self) -> None:
        """Close every channel."""
        await asyncio.gather(*(c.close(None) for c in self._channels))


async def grpc_call(
    callables: Sequence[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]],
    index: int,
    request: bytes,
    *,
    deadline: float,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> tuple[str, bytes]:
    """One unary call on channel ``index % len(callables)`` with a deadline of ``deadline``
    seconds: ``(status name, response)``."""
    call = callables[index % len(callables)]
    try:
        response = await call(request, timeout=deadline, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return grpc_status_name(error.code()), b""
    return OK, response


@dataclass(frozen=True)
class HttpReply:
    """Status and body of one HTTP response."""

    status: int
    body: bytes


class _HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: write a request, parse exactly one response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[HttpReply] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed by the server"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is not None and not self._waiter.done():
            reply = self._parse()
            if reply is not None:
                self._waiter.set_result(reply)

    def send(self, request: bytes) -> asyncio.Future[HttpReply]:
        assert self.transport is not None
        self._buffer.clear()
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._waiter

    def _parse(self) -> HttpReply | None:
        """A complete response from the buffer, or None while more bytes are due."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buffer[:end]).decode("latin-1")
        status_line, _, header_text = head.partition("\r\n")
        status = int(status_line.split(" ", 2)[1])
        length: int | None = None
        chunked = False
        for line in header_text.split("\r\n"):
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        body_start = end + 4
        if chunked:
            return self._parse_chunked(status, body_start)
        if length is None:
            length = 0
        if len(buffer) < body_start + length:
            return None
        return HttpReply(status, bytes(buffer[body_start : body_start + length]))

    def _parse_chunked(self, status: int, position: int) -> HttpReply | None:
        buffer = self._buffer
        body = bytearray()
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
            chunk_start = line_end + 2
            if size == 0:
                # Trailers (none expected) end with an empty line.
                if buffer.find(b"\r\n", chunk_start) < 0:
                    return None
                return HttpReply(status, bytes(body))
            if len(buffer) < chunk_start + size + 2:
                return None
            body += buffer[chunk_start : chunk_start + size]
            position = chunk_start + size + 2


class HttpClient:
    """A pool of HTTP/1.1 keep-alive connections to one target.

    A request takes an idle connection (or opens one) and gives it back when its response
    is complete, so concurrent callers never share a connection.
    """

    def __init__(self, target: Target) -> None:
        self._target = target
        self._host_header = f"{target.host}:{target.port}"
        self._idle: list[_HttpProtocol] = []

    async def _acquire(self) -> _HttpProtocol:
        while self._idle:
            protocol = self._idle.pop()
            if not protocol.closed:
                return protocol
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            _HttpProtocol, self._target.host, self._target.port
        )
        return protocol

    async def warm(self, connections: int) -> None:
        """Open ``connections`` idle connections ahead of the load."""
        opened = [await self._acquire() for _ in range(connections)]
        self._idle.extend(opened)

    def encode(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """The bytes of one request (build them once where the request repeats)."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if body or method in ("POST", "PUT", "PATCH"):
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def request(self, raw: bytes, *, deadline: float) -> tuple[str, HttpReply]:
        """Send ``raw`` and read its response within ``deadline`` seconds."""
        protocol: _HttpProtocol | None = None
        try:
            async with asyncio.timeout(deadline):
                protocol = await self._acquire()
                reply = await protocol.send(raw)
        except TimeoutError:
            # The connection is dropped: a late response would be read as the next one's.
            _close(protocol)
            return TIMEOUT, HttpReply(0, b"")
        except (ConnectionError, OSError):
            _close(protocol)
            return CONNECTION, HttpReply(0, b"")
        self._idle.append(protocol)
        return http_status_name(reply.status), reply

    async def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            _close(self._idle.pop())


def _close(protocol: _HttpProtocol | None) -> None:
    if protocol is not None and protocol.transport is not None:
        protocol.transport.close()
