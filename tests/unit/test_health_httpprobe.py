"""The lean http probe (health/httpprobe.py): status parsing and odd servers on loopback,
through RealProber.probe (the same Plan the health runner starts)."""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from bgplb.config import HttpCheck, TcpCheck
from bgplb.health import httpprobe
from bgplb.health.checks import RealProber
from bgplb.health.targets import ResolvedCheck
from bgplb.health.tracker import CheckKey

LOCAL = ipaddress.IPv4Address("127.0.0.1")
Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"HTTP/1.1 200 OK\r\n", 200),
        (b"HTTP/1.0 503 Service Unavailable\r\n", 503),
        (b"HTTP/1.1 204\r\n", 204),
        (b"SSH-2.0-OpenSSH\r\n", None),
        (b"HTTP/1.1 2x0 OK\r\n", None),
        (b"HTTP/2 200\r\n", None),
    ],
)
def test_parse_status(head: bytes, status: int | None) -> None:
    assert httpprobe.parse_status(head) == status


def test_request_asks_to_close() -> None:
    text = httpprobe.request("/svc/1?x=1", "10.0.0.1:80", "ua").decode()
    assert text.startswith("GET /svc/1?x=1 HTTP/1.1\r\nHost: 10.0.0.1:80\r\n")
    assert "Connection: close\r\n" in text
    assert text.endswith("\r\n\r\n")


@contextlib.asynccontextmanager
async def _serve(reply: Reply) -> AsyncIterator[int]:
    """A loopback server running ``reply``; waits for every handler and closes its stream."""
    handlers: list[asyncio.Task[None]] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await reply(r, w)
        finally:
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        async with asyncio.timeout(2):
            await asyncio.gather(*handlers)
        server.close()
        await server.wait_closed()


def _target(port: int, timeout: float = 2.0) -> ResolvedCheck:
    check = HttpCheck(type="http", timeout=timeout)
    return ResolvedCheck(CheckKey("web", None, "http"), check, LOCAL, port)


async def _probe(reply: Reply) -> str | None:
    async with _serve(reply) as port:
        prober = RealProber()
        try:
            async with asyncio.timeout(3):
                return await prober.probe(_target(port))
        finally:
            assert len(prober.poller) == 0  # every probe socket forgotten
            await prober.close()


async def test_keep_alive_server_that_never_closes_is_still_answered() -> None:
    async def reply(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        with contextlib.suppress(ConnectionResetError):  # the prober's close is a reset
            await r.read()  # keeps the connection open until the prober closes it

    assert await _probe(reply) is None


async def test_an_http_probe_closes_with_a_reset_and_a_tcp_probe_with_a_fin() -> None:
    """No TIME_WAIT socket per http probe on either side: once the status line is in, the
    probe resets the connection. A tcp check sends nothing and closes gracefully (servers
    such as PostgreSQL log a reset on a connection they have just accepted)."""
    seen: list[str] = []
    both = asyncio.Event()

    async def reply(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        request = await r.read(1)
        if request:  # the http probe
            await r.readuntil(b"\r\n\r\n")
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()
            try:
                seen.append("eof" if await r.read() == b"" else "data")
            except ConnectionResetError:
                seen.append("reset")
        else:  # the tcp probe: end of stream at once
            seen.append("eof")
        if len(seen) == 2:
            both.set()

    async with _serve(reply) as port:
        prober = RealProber()
        tcp = ResolvedCheck(CheckKey("web", None, "tcp"), TcpCheck(type="tcp"), LOCAL, port)
        try:
            async with asyncio.timeout(3):
                assert await prober.probe(_target(port)) is None
                assert await prober.probe(tcp) is None
                await both.wait()  # the server may not have taken the tcp probe's yet
        finally:
            await prober.close()
    assert seen == ["reset", "eof"]


async def test_status_line_split_over_segments() -> None:
    async def reply(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        for part in (b"HTTP/1.1 5", b"03 Busy", b"\r\n\r\n"):
            w.write(part)
            await w.drain()
            await asyncio.sleep(0.02)

    assert await _probe(reply) == "HTTP status 503"


async def test_close_without_answer_and_garbage() -> None:
    async def close(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")

    async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"hello there\r\n")
        await w.drain()

    assert await _probe(close) == "server disconnected"
    assert await _probe(garbage) == "malformed HTTP response"


async def test_refused_connect_names_the_reason() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    prober = RealProber()
    assert await prober.probe(_target(port)) == "connect: Connection refused"
    assert len(prober.poller) == 0
    await prober.close()


async def test_a_cancelled_probe_leaves_nothing_registered_with_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The caller's timeout cancels the probe while it waits for the answer: the socket is
    closed and its fd is no longer watched (by the poller, or by the event loop itself)."""
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    made: list[object] = []
    opened = httpprobe.open_socket

    def recorded(*args: Any) -> object:
        made.append(opened(*args))
        return made[-1]

    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read()  # never answers; ends when the prober closes

    async with _serve(silent) as port:
        monkeypatch.setattr(httpprobe, "open_socket", recorded)
        prober = RealProber()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):  # the caller gives up before the check's 5 s
                await prober.probe(_target(port, timeout=5.0))
        monkeypatch.undo()
        [probe_socket] = made
        assert isinstance(probe_socket, _socket.socket)
        assert probe_socket.fileno() == -1  # closed
        assert len(prober.poller) == 0
        fds = {key.fd for key in selector.get_map().values()}
        assert len(fds) == 4  # self-pipe, poller, listening socket, the server's connection
        await prober.close()
        assert len({key.fd for key in selector.get_map().values()}) == 3
