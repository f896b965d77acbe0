"""A request the HTTP server cannot parse is one log line (``http_bad_request``), never a
traceback, and the API keeps serving. Real sockets on loopback, the agent's logging setup."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

from bgplb.api import build_app, serve
from bgplb.clock import FakeClock
from bgplb.logs import BadRequestFilter, bad_requests_seen, setup_logging
from bgplb.metrics import Metrics

from .logging_state import restored_logging
from .test_api_support import TOKEN, FakeControl

GOOD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    with restored_logging():
        yield


@pytest.fixture
async def port() -> AsyncIterator[int]:
    runner = await serve(build_app(FakeControl(), Metrics(), TOKEN), "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def exchange(port: int, payload: bytes) -> bytes:
    """Send ``payload`` on a new connection; everything the server answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


def server_lines(err: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    return [x for x in lines if x["logger"] == "aiohttp.server"]


BAD = {
    "nul_in_header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "bad_version": b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    "control_in_path": b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad_header_line": b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
async def test_a_malformed_request_is_one_warning_line(
    port: int, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    setup_logging("json", "info")
    answer = await exchange(port, BAD[name])
    assert b"400 Bad Request" in answer
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = server_lines(err)
    assert line["level"] == "WARNING"
    assert line["event"] == line["message"] == "http_bad_request"
    assert line["remote"] == "127.0.0.1"
    assert line["status"] == 400
    assert line["error"]
    assert "\n" not in line["error"]
    assert "exc_info" not in line
    # the server goes on serving
    assert b"HTTP/1.1 200 OK" in await exchange(port, GOOD)


async def test_garbage_after_a_good_request_is_one_warning_line(
    port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("json", "info")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writer.write(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n")
            answer = await reader.read()
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert b"400 Bad Request" in answer
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = server_lines(err)
    assert (line["level"], line["event"], line["status"]) == ("WARNING", "http_bad_request", 400)


async def test_non_http_bytes_first_stay_a_debug_line(
    port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """A TLS client on the plain port: aiohttp logs that at DEBUG; still one line."""
    setup_logging("json", "debug")
    answer = await exchange(port, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 400")
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = server_lines(err)
    assert (line["level"], line["event"]) == ("DEBUG", "http_bad_request")
    assert "exc_info" not in line


async def test_text_format_is_one_line_too(port: int, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("text", "info")
    await exchange(port, BAD["nul_in_header"])
    lines = [x for x in capsys.readouterr().err.splitlines() if "aiohttp.server" in x]
    assert len(lines) == 1
    assert "http_bad_request" in lines[0]
    assert "status=400" in lines[0]


async def test_a_handler_bug_keeps_its_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """Only parse errors are shortened: an exception escaping a handler is a bug of ours."""
    setup_logging("json", "info")

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("bug")

    app = web.Application()  # no error middleware: aiohttp logs the exception itself
    app.router.add_get("/", broken)
    runner = await serve(app, "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        answer = await exchange(int(runner.addresses[0][1]), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        await runner.cleanup()
    assert b" 500 " in answer
    (line,) = server_lines(capsys.readouterr().err)
    assert line["level"] == "ERROR"
    assert "RuntimeError: bug" in line["exc_info"]


# --------------------------------------------------------------------------- rate limit


def bad_metric(metrics: Metrics) -> float:
    line = next(
        x
        for x in metrics.exposition().decode().splitlines()
        if x.startswith("bgplb_http_bad_requests_total ")
    )
    return float(line.split()[1])


async def test_a_flood_of_bad_requests_is_rate_limited_and_counted(
    port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Garbage at line rate: at most 10 lines a second, then one summary line with the count
    of the dropped ones; the metric counts every one (real clock, real sockets)."""
    setup_logging("json", "info")
    metrics = Metrics()
    for _ in range(40):
        assert b"400 Bad Request" in await exchange(port, BAD["bad_version"])
    await asyncio.sleep(1.2)  # the summary is written once the second is over
    lines = server_lines(capsys.readouterr().err)
    logged = [x for x in lines if x["event"] == "http_bad_request"]
    summaries = [x for x in lines if x["event"] == "http_bad_requests_suppressed"]
    assert summaries, "a flood must drop lines"
    assert len(logged) < 40
    assert len(logged) + sum(x["suppressed"] for x in summaries) == 40
    assert all(x["level"] == "WARNING" for x in summaries)
    assert bad_requests_seen() == 40
    assert bad_metric(metrics) == 40
    assert b"HTTP/1.1 200 OK" in await exchange(port, GOOD)


async def test_the_debug_ones_are_counted_even_when_not_logged(
    port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("json", "info")
    await exchange(port, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n")
    assert server_lines(capsys.readouterr().err) == []
    assert bad_requests_seen() == 1


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self) -> list[str]:
        return [r.getMessage() for r in self.records]


def bad_record(logger: logging.Logger) -> None:
    from aiohttp.http_exceptions import BadStatusLine

    try:
        raise BadStatusLine("garbage")
    except BadStatusLine:
        logger.exception("Error handling request from %s", "192.0.2.7")


@pytest.fixture
def flood() -> Iterator[tuple[logging.Logger, BadRequestFilter, Lines, FakeClock]]:
    clock = FakeClock()
    logger = logging.getLogger("test.bad_requests")
    logger.propagate = False
    bad = BadRequestFilter(clock, per_second=3)
    lines = Lines()
    logger.addFilter(bad)
    logger.addHandler(lines)
    summary = logging.getLogger("aiohttp.server")  # where the summary line goes
    summary.addHandler(lines)
    try:
        yield logger, bad, lines, clock
    finally:
        logger.removeFilter(bad)
        logger.removeHandler(lines)
        summary.removeHandler(lines)


async def test_the_summary_comes_when_the_second_is_over(
    flood: tuple[logging.Logger, BadRequestFilter, Lines, FakeClock],
) -> None:
    logger, bad, lines, clock = flood
    for _ in range(10):
        bad_record(logger)
    assert lines.events() == ["http_bad_request"] * 3
    assert bad.seen == 10
    await clock.advance(0.5)
    bad_record(logger)  # still the same second
    assert lines.events() == ["http_bad_request"] * 3
    await clock.advance(0.5)  # the timer writes the summary
    assert lines.events() == ["http_bad_request"] * 3 + ["http_bad_requests_suppressed"]
    assert lines.records[-1].suppressed == 8  # type: ignore[attr-defined]
    assert lines.records[-1].levelno == logging.WARNING
    await clock.advance(5)
    for _ in range(3):
        bad_record(logger)  # a new second: lines again, no second summary
    assert lines.events()[4:] == ["http_bad_request"] * 3
    assert bad.seen == 14


def test_without_a_loop_the_next_bad_request_writes_the_summary(
    flood: tuple[logging.Logger, BadRequestFilter, Lines, FakeClock],
) -> None:
    logger, bad, lines, clock = flood
    bad.clock = clock_without_timers = _NoTimers(clock)
    for _ in range(5):
        bad_record(logger)
    assert lines.events() == ["http_bad_request"] * 3
    clock_without_timers.t += 1.0
    bad_record(logger)
    assert lines.events()[3:] == ["http_bad_requests_suppressed", "http_bad_request"]
    assert lines.records[3].suppressed == 2  # type: ignore[attr-defined]


class _NoTimers:
    """A clock whose call_at fails like SystemClock's outside a running loop."""

    def __init__(self, clock: FakeClock) -> None:
        self.t = clock.now()

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def call_at(self, when: float, callback: Any, *args: object) -> Any:
        raise RuntimeError("no running event loop")
