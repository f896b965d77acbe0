"""The ``bgp-lb status|drain|undrain|reload`` client against a real aiohttp server."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bgplb.api import build_app
from bgplb.cli import _parser
from bgplb.client import DEFAULT_API, resolve_target, run_client_command
from bgplb.metrics import Metrics
from bgplb.model import Decision
from bgplb.status import FailedCheck, ReloadResult

from .test_api_support import TOKEN, FakeControl

MakeServer = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
async def base(aiohttp_server: MakeServer, control: FakeControl) -> str:
    server = await aiohttp_server(build_app(control, Metrics(), TOKEN))
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    f.chmod(0o600)
    return f


async def run(
    *argv: str,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> tuple[int, str, str]:
    """Parse like the real CLI and run the (blocking) client in a thread."""
    args = _parser().parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    kwargs: dict[str, Any] = {"sleep": sleep} if sleep else {}
    if clock is not None:
        kwargs["clock"] = clock
    code = await asyncio.to_thread(run_client_command, args, out, err, **kwargs)
    return code, out.getvalue(), err.getvalue()


async def test_status_table(base: str) -> None:
    code, out, err = await run("status", "--api", base)
    assert (code, err) == (0, "")
    assert "node 192.0.2.100 AS65001" in out
    web_line = next(line for line in out.splitlines() if line.startswith("web "))
    assert web_line.split()[:5] == ["web", "announce", "healthy", "198.51.100.10", "1/2"]
    assert any(
        line.split()[:4] == ["dns", "withdraw", "check_failed", "2001:db8::53"]
        for line in out.splitlines()
    )
    assert any(
        line.split()[:5] == ["192.0.2.2", "65001", "ibgp", "down", "0"] for line in out.splitlines()
    )
    assert "prerequisite ip_vs FAILED: module missing (fix: modprobe ip_vs)" in out


async def test_status_json(base: str) -> None:
    code, out, _ = await run("status", "--json", "--api", base)
    assert code == 0
    assert [s["name"] for s in json.loads(out)["services"]] == ["web", "dns"]


async def test_drain_needs_token(base: str, control: FakeControl) -> None:
    code, out, err = await run("drain", "web", "--api", base)
    assert code == 2
    assert out == ""
    assert "HTTP 401: unauthorized" in err
    assert control.calls == []


async def test_drain_undrain_reload(base: str, control: FakeControl, token_file: Path) -> None:
    tf = ["--api", base, "--token-file", str(token_file)]
    assert (await run("drain", "web", *tf))[0] == 0
    assert (await run("undrain", "--all", *tf))[0] == 0
    code, out, _ = await run("reload", *tf)
    assert code == 0
    assert "changed services: web" in out
    assert control.calls == [("drain", "web"), ("undrain", None), ("reload", None)]


async def test_unknown_service_and_failed_reload(
    base: str, control: FakeControl, token_file: Path
) -> None:
    tf = ["--api", base, "--token-file", str(token_file)]
    code, _, err = await run("drain", "nope", *tf)
    assert code == 2
    assert "unknown service: no service named 'nope'" in err
    control.reload_result = ReloadResult(ok=False, errors=["peers: at least one peer"])
    code, _, err = await run("reload", *tf)
    assert code == 2
    assert "peers: at least one peer" in err


async def test_reload_probe_prints_what_failed_and_exits_non_zero(
    base: str, control: FakeControl, token_file: Path
) -> None:
    tf = ["--api", base, "--token-file", str(token_file)]
    control.reload_result = ReloadResult(ok=True, changed_services=["web"], probed_checks=2)
    code, out, _ = await run("reload", "--probe", *tf)
    assert code == 0
    assert "changed services: web; 2 changed check(s) probed" in out
    control.reload_result = ReloadResult(
        ok=False,
        errors=["1 of 2 changed check(s) failed their probe"],
        probed_checks=2,
        failed_checks=[FailedCheck(check="web/http", error="connect: Connection refused")],
    )
    code, out, err = await run("reload", "--probe", *tf)
    assert code == 2
    assert out == ""
    assert "check web/http failed: connect: Connection refused" in err
    assert control.calls == [("reload", "probe"), ("reload", "probe")]


async def test_drain_wait_polls_until_withdrawn(
    base: str, control: FakeControl, token_file: Path
) -> None:
    # The fake reports "withdraw" as soon as the drain is recorded; hold it back for two polls.
    real_status = control.status
    polls: list[int] = []

    def slow_status() -> Any:
        polls.append(1)
        if len(polls) < 3:
            return real_status().model_copy(
                update={
                    "services": [
                        s.model_copy(update={"decision": Decision.DRAINING})
                        for s in real_status().services
                    ]
                }
            )
        return real_status()

    control.status = slow_status  # type: ignore[method-assign]
    naps: list[float] = []

    def nap(seconds: float) -> None:  # the client's and the agent's time move together
        naps.append(seconds)
        control.now += seconds

    code, out, err = await run(
        "drain",
        "web",
        "--wait",
        "--api",
        base,
        "--token-file",
        str(token_file),
        sleep=nap,
        clock=lambda: control.now,
    )
    assert (code, err) == (0, "")
    # withdrawn, then (web is an ipvs-mode service) the traffic watch: no packets arrive
    assert out.splitlines()[:2] == ["drained web", "withdrawn"]
    assert out.splitlines()[-1].startswith("quiet: every VIP below 1/s for 5")
    assert len(polls) == 3
    assert naps[:2] == [0.5, 0.5]  # the withdraw polls, then about 1 s per rate sample
    assert len(naps) == 2 + 5


async def test_connection_refused_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = await run("status", "--api", f"http://127.0.0.1:{port}")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "cannot reach the bgp-lb agent" in err


def test_bad_token_file_mode(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(TOKEN)
    f.chmod(0o644)
    args = _parser().parse_args(
        ["drain", "web", "--api", "http://127.0.0.1:1", "--token-file", str(f)]
    )
    err = io.StringIO()
    assert run_client_command(args, io.StringIO(), err) == 2
    assert "chmod 600" in err.getvalue()
    assert TOKEN not in err.getvalue()


def test_target_from_config(tmp_path: Path, token_file: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "node:\n  router_id: 192.0.2.100\n  local_as: 65001\n"
        f"  api:\n    listen: '::'\n    port: 9999\n    token_file: {token_file}\n"
        "peers:\n  - address: 192.0.2.1\n    asn: 65000\n"
    )
    ns = argparse.Namespace(api=None, config=str(cfg), token_file=None)
    target = resolve_target(ns)
    assert target.base == "http://[::1]:9999"
    assert target.token_file == str(token_file)
    ns = argparse.Namespace(api="http://h:1/", config=str(cfg), token_file="/x")
    assert resolve_target(ns).base == "http://h:1"
    assert resolve_target(ns).token_file == "/x"
    ns = argparse.Namespace(api=None, config=None, token_file=None)
    assert resolve_target(ns).base == DEFAULT_API


def test_bad_config_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("node: {}\n")
    args = _parser().parse_args(["status", "--config", str(cfg)])
    err = io.StringIO()
    assert run_client_command(args, io.StringIO(), err) == 2
    assert str(cfg) in err.getvalue()
