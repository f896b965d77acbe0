"""The pool lab's echo pieces on loopback: backend.py --echo-port and ``client echo``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BACKEND = REPO / "containerlab" / "node" / "backend.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def echo_port() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = _free_port()
    argv = [sys.executable, str(BACKEND), "--name", "s9", "--port", str(_free_port())]
    proc = subprocess.Popen([*argv, "--echo-port", str(port), "127.0.0.1"])
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the echo backend did not start"
            time.sleep(0.1)
    yield port, proc
    proc.kill()
    proc.wait(timeout=10)


def _client(port: int, duration: float) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "tests.lab.client", "echo", "127.0.0.1", "--port", str(port)]
    argv += ["--count", "5", "--interval", "0.05", "--duration", str(duration)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO)


def _lines(proc: subprocess.Popen[str]) -> list[dict[str, object]]:
    out, _ = proc.communicate(timeout=90)
    return [json.loads(line) for line in out.splitlines()]


def test_echo_connections_greet_and_echo(echo_port: tuple[int, subprocess.Popen[bytes]]) -> None:
    lines = _lines(_client(echo_port[0], 1.5))
    assert lines[0] == {"opened": {"s9": 5}}
    summary = lines[-1]
    assert summary["connections"] == 5
    assert summary["reset"] == 0
    assert int(summary["echoes"]) > 5  # type: ignore[call-overload]
    conns = [r for r in lines if "sport" in r]
    assert len({r["sport"] for r in conns}) == 5
    assert all(r["server"] == "s9" and "error" not in r for r in conns)


def test_echo_counts_every_broken_connection(
    echo_port: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, backend = echo_port
    client = _client(port, 30.0)
    assert client.stdout is not None
    assert json.loads(client.stdout.readline()) == {"opened": {"s9": 5}}
    time.sleep(0.3)
    backend.kill()  # every connection closes under the client
    summary = _lines(client)[-1]
    assert summary["reset"] == 5
    assert set(summary["reasons"]) <= {"closed", "ConnectionResetError", "BrokenPipeError"}  # type: ignore[arg-type]
