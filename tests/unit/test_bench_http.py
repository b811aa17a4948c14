"""The load generator's HTTP/1.1 response parser: lengths, chunks, partial reads."""

from __future__ import annotations

import asyncio

import pytest

from bench.clients import HttpReply, _HttpProtocol, http_status_name


class _FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)


async def _exchange(chunks: list[bytes]) -> HttpReply:
    protocol = _HttpProtocol()
    transport = _FakeTransport()
    protocol.connection_made(transport)
    waiter = protocol.send(b"GET / HTTP/1.1\r\n\r\n")
    for chunk in chunks:
        assert not waiter.done()
        protocol.data_received(chunk)
    return await asyncio.wait_for(waiter, 1)


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("piece", [1, 7, 1000])
async def test_content_length_body_in_any_number_of_reads(piece: int) -> None:
    raw = b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\ncontent-type: x\r\n\r\n{"id":"42"}'
    reply = await _exchange(_split(raw, piece))
    assert reply == HttpReply(200, b'{"id":"42"}')


@pytest.mark.parametrize("piece", [1, 5, 1000])
async def test_chunked_body_is_reassembled(piece: int) -> None:
    raw = (
        b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    )
    reply = await _exchange(_split(raw, piece))
    assert reply == HttpReply(404, b"hello world")


async def test_a_closed_connection_fails_the_waiting_request() -> None:
    protocol = _HttpProtocol()
    protocol.connection_made(_FakeTransport())
    waiter = protocol.send(b"GET / HTTP/1.1\r\n\r\n")
    protocol.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    protocol.connection_lost(None)
    with pytest.raises(ConnectionError):
        await waiter


def test_only_2xx_counts_as_success() -> None:
    assert http_status_name(200) == "OK"
    assert http_status_name(204) == "OK"
    assert http_status_name(503) == "http:503"
    assert http_status_name(404) == "http:404"
