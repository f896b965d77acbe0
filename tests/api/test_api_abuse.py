"""The API under hostile clients, against a real agent on a loopback port: near-miss tokens,
oversized headers and bodies, and 2,000 concurrent connections (idle, slow partial requests,
real requests). The agent must answer 4xx (never 5xx), survive, keep answering /healthz and
keep routing: a health change still reaches the speaker while the API is flooded."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.figures import count, record_figures  # noqa: F401  (fixture)

from .live import TOKEN, LiveAgent, live_agent

T = TOKEN.encode()
WEB_VIP = "10.99.0.1"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAgent]:
    with live_agent(tmp_path_factory.mktemp("abuse"), TOKEN) as a:
        yield a


def exchange(port: int, request: bytes, timeout: float = 30.0, probe: bool = False) -> bytes:
    """Send raw bytes, return the whole answer (the server closes: Connection: close).
    Counted as a bad input tried, unless it is the test's own ``probe`` (healthy())."""
    if not probe:
        count("bad_inputs")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        # the server may answer and close before reading all of it
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(request)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    return out


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1."), answer[:200]
    status = int(answer.split(b" ", 2)[1])
    count("server_errors", int(status >= 500))
    return status


def post(port: int, path: bytes, auth: bytes | None, extra: bytes = b"") -> bytes:
    head = b"POST " + path + b" HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n"
    if auth is not None:
        head += b"Authorization: " + auth + b"\r\n"
    return exchange(port, head + extra + b"Content-Length: 0\r\n\r\n")


def healthy(agent: LiveAgent) -> None:
    answer = exchange(
        agent.port, b"GET /healthz HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n", probe=True
    )
    assert status_of(answer) == 200
    assert answer.endswith(b'{"ok":true}')
    assert agent.alive()


def drained(agent: LiveAgent) -> bool:
    return agent.call(lambda: agent.agent is not None and agent.agent.status().node.drained)


# --------------------------------------------------------------------------- auth

NEAR_MISSES = {
    "missing": None,
    "empty": b"",
    "scheme only": b"Bearer",
    "scheme and space": b"Bearer ",
    "wrong token": b"Bearer wrong-token",
    "one char off": b"Bearer " + T[:-1] + bytes([T[-1] ^ 1]),
    "one char short": b"Bearer " + T[:-1],
    "one char more": b"Bearer " + T + b"x",
    "token upper case": b"Bearer " + T.upper(),
    "no space": b"Bearer" + T,
    "tab instead of space": b"Bearer\t" + T,
    "basic scheme": b"Basic " + T,
    "token as scheme": T,
    "nbsp after": b"Bearer " + T + "\u00a0".encode(),  # str.strip() took it off: accepted
    "nel after": b"Bearer " + T + "\u0085".encode(),  # same
    "ideographic space": "Bearer \u3000".encode() + T,
    "zero-width space": b"Bearer " + T + "\u200b".encode(),
    "undecodable bytes": b"Bearer \xff\xfe" + T,  # was a 500: UnicodeEncodeError
    "latin-1 token": b"Bearer " + T[:-1] + b"\xe9",
    "token twice": b"Bearer " + T + b" " + T,
}


@pytest.mark.parametrize("auth", list(NEAR_MISSES.values()), ids=list(NEAR_MISSES))
def test_near_miss_tokens_are_401(agent: LiveAgent, auth: bytes | None) -> None:
    for path in (b"/api/v1/drain", b"/api/v1/services/web/drain", b"/api/v1/reload"):
        answer = post(agent.port, path, auth)
        assert status_of(answer) == 401, answer
        assert b'\r\nWWW-Authenticate: Bearer realm="bgp-lb"\r\n' in answer
        assert b'"error":"unauthorized"' in answer
    assert not drained(agent)
    healthy(agent)


# RFC 7235: the scheme is case-insensitive; RFC 6750: 1*SP before the token; RFC 9110: the
# whitespace around a field value is not part of it.
EQUIVALENT = {
    "exact": b"Bearer " + T,
    "scheme lower case": b"bearer " + T,
    "scheme upper case": b"BEARER " + T,
    "two spaces": b"Bearer  " + T,
    "trailing space": b"Bearer " + T + b" ",
    "trailing tab": b"Bearer " + T + b"\t",
}


@pytest.mark.parametrize("auth", list(EQUIVALENT.values()), ids=list(EQUIVALENT))
def test_spellings_http_defines_as_the_same_token_are_accepted(
    agent: LiveAgent, auth: bytes
) -> None:
    answer = post(agent.port, b"/api/v1/undrain", auth)
    assert status_of(answer) == 200, answer
    healthy(agent)


@pytest.mark.parametrize(
    "auth", [b"Bearer " + T + b"\n", b"Bearer " + T + b"\x00"], ids=["LF", "NUL"]
)
def test_a_token_with_a_control_character_is_refused(agent: LiveAgent, auth: bytes) -> None:
    answer = post(agent.port, b"/api/v1/drain", auth)
    assert status_of(answer) in (400, 401), answer
    assert not drained(agent)
    healthy(agent)


# --------------------------------------------------------------------------- oversized


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: lb\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: lb\r\nAuthorization: Bearer " + b"a" * 65536 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: lb\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(1000))
        + b"\r\n",
        b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: lb\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: lb\r\nX-" + b"a" * 65536 + b": v\r\n\r\n",
    ],
    ids=["64KiB-header", "64KiB-token", "1000-headers", "64KiB-path", "64KiB-name"],
)
def test_oversized_requests_are_4xx(agent: LiveAgent, request_bytes: bytes) -> None:
    answer = exchange(agent.port, request_bytes)
    assert 400 <= status_of(answer) < 500, answer[:200]
    healthy(agent)


TEN_MB = 10_000_000


def big_bodies(head: bytes) -> list[bytes]:
    """``head`` (the request line and headers, without the final CRLF) with a 10 MB body,
    declared (Content-Length) and chunked."""
    chunks = b"".join(b"100000\r\n" + b"y" * 0x100000 + b"\r\n" for _ in range(10)) + b"0\r\n\r\n"
    return [
        head + b"Content-Length: %d\r\n\r\n" % TEN_MB + b"x" * TEN_MB,
        head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks,
    ]


@pytest.mark.parametrize("auth", [b"Bearer " + T, None], ids=["token", "no-token"])
def test_a_10MB_post_is_413_and_not_executed(agent: LiveAgent, auth: bytes | None) -> None:
    """No endpoint takes a body: refused before the token check, with or without the token
    (a valid one used to drain the node with a 10 MB body read)."""
    head = b"POST /api/v1/drain HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n"
    if auth is not None:
        head += b"Authorization: " + auth + b"\r\n"
    for request in big_bodies(head):
        answer = exchange(agent.port, request)
        assert status_of(answer) == 413, answer[:300]
        assert b'"error":"request body too large"' in answer
    assert not drained(agent)
    healthy(agent)


def test_a_10MB_body_on_a_read_only_route_is_413(agent: LiveAgent) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n"
    for request in big_bodies(head):
        assert status_of(exchange(agent.port, request)) == 413
    healthy(agent)


# --------------------------------------------------------------------------- 2,000 connections

CONNECTIONS = 2000


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        pytest.skip(f"RLIMIT_NOFILE hard limit {soft} < {wanted}")


def announced(agent: LiveAgent) -> set[str]:
    def read() -> set[str]:
        assert agent.speaker is not None
        return {
            str(r.prefix.network_address) for rs in agent.speaker.advertised().values() for r in rs
        }

    return agent.call(read)


async def until(pred: object, within: float) -> float:
    start = time.monotonic()
    while not pred():  # type: ignore[operator]
        assert time.monotonic() - start < within, "not reached in time"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_2000_concurrent_connections(agent: LiveAgent) -> None:
    # both ends of every connection live in this process (the agent runs in a thread)
    raise_fd_limit(2 * CONNECTIONS + 512)
    assert WEB_VIP in announced(agent)
    port = agent.port
    writers: list[asyncio.StreamWriter] = []
    answers: list[int] = []

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 60)
        writers.append(writer)
        return reader, writer

    async def idle() -> None:
        await connect()

    async def slow(i: int) -> None:
        _, writer = await connect()
        writer.write(b"GET /api/v1/status HTTP/1.1\r\nHost: lb\r\nX-Slow-%d: " % i)
        await writer.drain()

    async def real(i: int) -> None:
        reader, writer = await connect()
        path = b"/api/v1/status" if i % 2 else b"/metrics"
        writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 120)
        answers.append(int(data.split(b" ", 2)[1]))

    jobs = []
    for i in range(CONNECTIONS):
        kind = i % 4
        jobs.append(idle() if kind == 0 else slow(i) if kind in (1, 2) else real(i))
    try:
        results = await asyncio.gather(*jobs, return_exceptions=True)
        count("bad_inputs", CONNECTIONS)  # idle, half-sent and real requests
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"{len(errors)} connections failed, first {errors[0]!r}"
        assert len(writers) == CONNECTIONS
        assert len(answers) == CONNECTIONS // 4
        count("server_errors", sum(a >= 500 for a in answers))
        assert set(answers) == {200}, sorted(set(answers))

        # With 1,500 connections still open (idle or half-sent): /healthz answers, and a health
        # change still goes all the way to the speaker (withdraw), and back (announce).
        healthy(agent)
        agent.prober.failing.add("tcp")
        took = await until(lambda: WEB_VIP not in announced(agent), within=30)
        healthy(agent)
        agent.prober.failing.discard("tcp")
        took_back = await until(lambda: WEB_VIP in announced(agent), within=30)
        # the slow clients keep trickling bytes: still nothing breaks
        for w in writers[1::4]:
            if not w.is_closing():
                w.write(b"x")
        healthy(agent)
    finally:
        for w in writers:
            w.close()
    print(f"withdraw under load took {took:.2f}s, announce {took_back:.2f}s")
    await asyncio.sleep(0.5)
    healthy(agent)
    assert agent.call(lambda: agent.agent is not None and agent.agent.ready())


def test_the_agent_is_still_routing(agent: LiveAgent, tmp_path: Path) -> None:
    assert WEB_VIP in announced(agent)
    healthy(agent)
