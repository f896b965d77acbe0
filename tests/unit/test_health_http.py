"""Real http(s) and tcp probes against servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bgplb.clock import SystemClock
from bgplb.config import HttpCheck, TcpCheck
from bgplb.health.checks import RealProber
from bgplb.health.runner import HealthRunner
from bgplb.health.targets import ResolvedCheck
from bgplb.health.tracker import CheckKey, CheckResult, CheckState
from bgplb.model import CheckStatus

LOOPBACK = ipaddress.ip_address("127.0.0.1")


@dataclass
class Backend:
    port: int
    hosts: list[str] = field(default_factory=list)
    peers: list[tuple[str, int]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def make_app(backend: Backend) -> web.Application:
    async def record(request: web.Request) -> None:
        backend.hosts.append(request.headers.get("Host", ""))
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is not None:
            backend.peers.append((peer[0], peer[1]))

    async def ok(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="status: all good\n")

    async def error(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=500, text="broken")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    async def hang(request: web.Request) -> web.Response:
        await backend.release.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/error", error)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/hang", hang)
    return app


async def serve(ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, Backend]:
    backend = Backend(port=0)
    runner = web.AppRunner(make_app(backend), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    backend.port = runner.addresses[0][1]
    return runner, backend


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    runner, backend = await serve()
    yield backend
    backend.release.set()
    await runner.cleanup()


@pytest.fixture
async def prober() -> AsyncIterator[RealProber]:
    p = RealProber()
    yield p
    await p.close()


def http(port: int, **kw: Any) -> ResolvedCheck:
    check = HttpCheck.model_validate({"type": "http", **kw})
    return ResolvedCheck(CheckKey("web", None, check.label), check, LOOPBACK, port)


async def test_200_is_healthy(prober: RealProber, backend: Backend) -> None:
    assert await prober.probe(http(backend.port, path="/ok")) is None
    assert backend.hosts == [f"127.0.0.1:{backend.port}"]


async def test_500_is_unhealthy(prober: RealProber, backend: Backend) -> None:
    assert await prober.probe(http(backend.port, path="/error")) == "HTTP status 500"


async def test_404_is_unhealthy(prober: RealProber, backend: Backend) -> None:
    assert await prober.probe(http(backend.port, path="/missing")) == "HTTP status 404"


async def test_expected_statuses(prober: RealProber, backend: Backend) -> None:
    assert await prober.probe(http(backend.port, path="/error", expect_status=[500])) is None
    assert await prober.probe(http(backend.port, path="/ok", expect_status=[204])) == (
        "HTTP status 200"
    )


async def test_redirects_are_not_followed(prober: RealProber, backend: Backend) -> None:
    assert await prober.probe(http(backend.port, path="/redirect")) == "HTTP status 302"
    assert backend.hosts == []


async def test_body_match(prober: RealProber, backend: Backend) -> None:
    assert await prober.probe(http(backend.port, path="/ok", body_match=r"all\s+good")) is None
    error = await prober.probe(http(backend.port, path="/ok", body_match="^ready$"))
    assert error == "body does not match '^ready$'"


async def test_host_header_is_sent(prober: RealProber, backend: Backend) -> None:
    assert await prober.probe(http(backend.port, path="/ok", host="www.example.com")) is None
    assert backend.hosts == ["www.example.com"]


async def test_every_probe_is_a_new_connection(prober: RealProber, backend: Backend) -> None:
    for _ in range(3):
        assert await prober.probe(http(backend.port, path="/ok")) is None
    assert len({peer for peer in backend.peers}) == 3


async def test_source_address(prober: RealProber, backend: Backend) -> None:
    assert await prober.probe(http(backend.port, path="/ok", source_address="127.0.0.2")) is None
    assert await prober.probe(http(backend.port, path="/ok")) is None
    assert [addr for addr, _ in backend.peers] == ["127.0.0.2", "127.0.0.1"]


async def test_connection_refused(prober: RealProber) -> None:
    error = await prober.probe(http(closed_port(), path="/ok"))
    assert error is not None
    assert error == "connect: Connection refused"


async def test_hung_handler_times_out_in_time(prober: RealProber, backend: Backend) -> None:
    start = time.monotonic()
    error = await prober.probe(http(backend.port, path="/hang", timeout=0.3))
    elapsed = time.monotonic() - start
    assert error == "timeout after 0.3s"
    assert 0.3 <= elapsed < 0.3 + 0.2


async def test_hung_backend_does_not_disturb_another_check(backend: Backend) -> None:
    results: dict[str, list[CheckResult]] = {"hung": [], "fine": []}

    def on_result(key: CheckKey, result: CheckResult, state: CheckState) -> None:
        results[key.check].append(result)

    runner = HealthRunner(SystemClock(), lambda: None)  # the real prober, owned by the runner
    runner.on_result = on_result
    runner.configure_checks(
        {
            c.key: c
            for c in (
                http(backend.port, name="hung", path="/hang", timeout=0.3, interval=0.1),
                http(backend.port, name="fine", path="/ok", interval=0.1, fast_interval=0.1),
            )
        }
    )
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(1.6)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    hung, fine = results["hung"], results["fine"]
    assert len(hung) >= 3
    assert all(r.error == "timeout after 0.3s" and 0.3 <= r.latency < 0.5 for r in hung)
    assert len(fine) >= 10
    assert all(r.ok for r in fine)
    starts = [r.time - r.latency for r in fine]
    gaps = sorted(b - a for a, b in itertools.pairwise(starts))
    assert gaps[len(gaps) // 2] == pytest.approx(0.1, abs=0.02)  # its own cadence
    assert gaps[-1] < 0.25  # never held up by the hung probes (0.3 s each)
    assert runner.snapshot()[CheckKey("web", None, "fine")].status is CheckStatus.UP
    assert runner.snapshot()[CheckKey("web", None, "hung")].status is CheckStatus.DOWN


# --------------------------------------------------------------------------- https


def self_signed(tmp: Path) -> tuple[Path, Path] | None:
    """A throwaway certificate for 127.0.0.1 (``openssl req``; cryptography is not a dep)."""
    if shutil.which("openssl") is None:
        return None
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    args = [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=backend.test",
        "-addext",
        "subjectAltName=DNS:backend.test,IP:127.0.0.1",
    ]
    subprocess.run(
        ["openssl", *args, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture
async def tls_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    pair = self_signed(tmp_path)
    if pair is None:
        pytest.skip("no openssl binary to make a test certificate")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*pair)
    runner, backend = await serve(context)
    yield backend
    backend.release.set()
    await runner.cleanup()


def https(port: int, **kw: Any) -> ResolvedCheck:
    return http(port, type="https", **kw)


async def test_https_without_verification(prober: RealProber, tls_backend: Backend) -> None:
    assert await prober.probe(https(tls_backend.port, path="/ok", verify_tls=False)) is None
    assert await prober.probe(https(tls_backend.port, path="/error", verify_tls=False)) == (
        "HTTP status 500"
    )


async def test_https_verification_rejects_a_self_signed_cert(
    prober: RealProber, tls_backend: Backend
) -> None:
    error = await prober.probe(https(tls_backend.port, path="/ok"))
    assert error is not None
    assert error.startswith("TLS certificate:")
    assert tls_backend.hosts == []


async def test_https_host_header(prober: RealProber, tls_backend: Backend) -> None:
    check = https(tls_backend.port, path="/ok", host="backend.test", verify_tls=False)
    assert await prober.probe(check) is None
    assert tls_backend.hosts == ["backend.test"]


async def test_plain_http_to_a_tls_port_fails(prober: RealProber, tls_backend: Backend) -> None:
    error = await prober.probe(http(tls_backend.port, path="/ok", timeout=0.5))
    assert error is not None


# --------------------------------------------------------------------------- tcp


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tcp(port: int | None, **kw: Any) -> ResolvedCheck:
    check = TcpCheck.model_validate({"type": "tcp", **kw})
    return ResolvedCheck(CheckKey("web", None, check.label), check, LOOPBACK, port)


async def test_tcp_open_port(prober: RealProber, backend: Backend) -> None:
    assert await prober.probe(tcp(backend.port)) is None
    assert await prober.probe(tcp(backend.port, source_address="127.0.0.3")) is None


async def test_tcp_closed_port(prober: RealProber) -> None:
    assert await prober.probe(tcp(closed_port())) == "Connection refused"


async def test_tcp_without_port(prober: RealProber) -> None:
    error = await prober.probe(tcp(None))
    assert error is not None
    assert error.startswith("no port to check")


async def test_tcp_ipv6_loopback(prober: RealProber) -> None:
    accepted = asyncio.Event()

    def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()
        accepted.set()

    try:
        server = await asyncio.start_server(handle, "::1", 0)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    port = server.sockets[0].getsockname()[1]
    check = TcpCheck.model_validate({"type": "tcp"})
    target = ResolvedCheck(CheckKey("web", None, "tcp"), check, ipaddress.ip_address("::1"), port)
    async with server:
        assert await prober.probe(target) is None
        async with asyncio.timeout(2):  # the server closes what it accepted before it stops
            await accepted.wait()


async def test_http_probe_waits_out_a_slow_handshake(prober: RealProber) -> None:
    """The probe's first send finds its connection still being set up (the listener's
    queue is full, so its SYN is dropped and sent again ~1 s later): the probe waits until
    the socket is writable, then sends and reads the answer."""
    loop = asyncio.get_running_loop()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # room for one queued connection
        listener.setblocking(False)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # takes that room
            probe = asyncio.create_task(prober.probe(http(port, path="/ok", timeout=5.0)))
            await asyncio.sleep(0.3)
            assert not probe.done()  # still connecting
            filler, _ = await loop.sock_accept(listener)
            filler.close()
            conn, _ = await asyncio.wait_for(loop.sock_accept(listener), 4.0)
            with conn:
                request = await asyncio.wait_for(loop.sock_recv(conn, 4096), 2.0)
                assert request.startswith(b"GET /ok HTTP/1.1\r\n")
                await loop.sock_sendall(conn, b"HTTP/1.1 204 No Content\r\n\r\n")
                assert await asyncio.wait_for(probe, 2.0) is None


class HeldServer:
    """A loopback server that keeps every connection open (reading until EOF), for
    ``watch_connection``: ``die()`` closes the listener and every connection at once, as
    the kernel does when a backend process is killed."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.accepted += 1
            self.writers.append(w)
            await r.read()
            w.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def open_connections(self) -> int:
        return sum(1 for w in self.writers if not w.is_closing())

    def drop_connections(self) -> None:
        for w in self.writers:
            w.transport.abort()

    async def die(self) -> None:
        assert self.server is not None
        self.server.close()
        self.drop_connections()
        await self.server.wait_closed()


async def _until(predicate: Any, within: float) -> None:
    """Poll state that callbacks change (results, the server's connections)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - several sources, no one event to wait on
            await asyncio.sleep(0.005)


async def test_watch_connection_probes_as_soon_as_the_target_dies() -> None:
    held = HeldServer()
    port = await held.start()
    check = tcp(port, watch_connection=True, interval=2.0, rise=1, fall=1)
    results: list[tuple[float, CheckResult]] = []
    runner = HealthRunner(SystemClock(), lambda: None)
    runner.on_result = lambda k, r, s: results.append((time.monotonic(), r))
    runner.configure_checks({check.key: check})
    task = asyncio.create_task(runner.run())
    try:
        await _until(lambda: results and results[-1][1].ok, 3.0)
        await _until(lambda: held.open_connections() == 1, 1.0)  # the watched connection
        last_probe = results[-1][0]
        killed = time.monotonic()
        await held.die()
        await _until(lambda: not results[-1][1].ok, 1.0)
        down = results[-1][0]
        assert down - killed < 0.2  # the next scheduled probe was ~2 s after the last one
        assert down < last_probe + 2.0
        assert results[-1][1].error == "Connection refused"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watch_connection_dropped_by_a_live_server_costs_one_probe() -> None:
    """A server that closes idle connections is probed once more, stays up, and is watched
    again; without ``watch_connection`` nothing is held open."""
    held = HeldServer()
    port = await held.start()
    watched = tcp(port, name="watched", watch_connection=True, interval=2.0, rise=1)
    results: list[CheckResult] = []
    runner = HealthRunner(SystemClock(), lambda: None)
    runner.on_result = lambda k, r, s: results.append(r)
    runner.configure_checks({watched.key: watched})
    task = asyncio.create_task(runner.run())
    try:
        await _until(lambda: held.open_connections() == 1, 3.0)
        probes, accepted = len(results), held.accepted
        held.drop_connections()
        await _until(lambda: len(results) == probes + 1, 0.5)  # at once, not in ~2 s
        assert results[-1].ok
        await _until(lambda: held.open_connections() == 1, 0.5)  # watched again
        assert held.accepted == accepted + 2  # the extra probe, then the new watch
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await _until(lambda: held.open_connections() == 0, 1.0)  # stopping closed the watch
    plain = tcp(port, name="plain", interval=0.2, rise=1)
    runner = HealthRunner(SystemClock(), lambda: None)
    runner.configure_checks({plain.key: plain})
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.sleep(0.6)
        assert held.open_connections() == 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert held.server is not None
    held.server.close()
