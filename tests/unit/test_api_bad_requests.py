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
from bgplb.logs import setup_logging
from bgplb.metrics import Metrics

from .test_api_support import TOKEN, FakeControl

GOOD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access = logging.getLogger("aiohttp.access")
    access_level = access.level
    yield
    access.setLevel(access_level)
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


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
