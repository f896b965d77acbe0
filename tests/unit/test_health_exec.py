"""Real exec probes: exit codes, timeouts that kill the process group, scrubbed environment,
no agent privileges."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bgplb.config import ExecCheck
from bgplb.health.checks import RealProber
from bgplb.health.command import (
    SAFE_PATH,
    Identity,
    ambient_capabilities,
    check_environment,
    describe_exit,
    unprivileged_identity,
)
from bgplb.health.targets import ResolvedCheck
from bgplb.health.tracker import CheckKey


@pytest.fixture
async def prober() -> AsyncIterator[RealProber]:
    p = RealProber()
    yield p
    await p.close()


def command(*argv: str, **kw: Any) -> ResolvedCheck:
    check = ExecCheck.model_validate({"type": "exec", "argv": list(argv), **kw})
    return ResolvedCheck(CheckKey("web", None, check.label), check)


def processes_with(arg: str) -> list[int]:
    """Live (not zombie) processes whose argv contains ``arg``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if arg.encode() in argv and state != "Z":
            pids.append(int(proc.name))
    return pids


async def eventually(predicate: Callable[[], bool], within: float) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not predicate():
        if loop.time() > end:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_exit_zero_is_healthy(prober: RealProber) -> None:
    assert await prober.probe(command("true")) is None


async def test_exit_status_is_the_reason(prober: RealProber) -> None:
    assert await prober.probe(command("false")) == "exit status 1"
    assert await prober.probe(command("sh", "-c", "exit 7")) == "exit status 7"


async def test_signal_is_the_reason(prober: RealProber) -> None:
    assert await prober.probe(command("sh", "-c", "kill -TERM $$")) == "killed by signal SIGTERM"


async def test_missing_command(prober: RealProber) -> None:
    assert await prober.probe(command("/nonexistent/check")) == (
        "command not found: /nonexistent/check"
    )


async def test_no_shell_is_involved(prober: RealProber) -> None:
    # with a shell, ';' would run 'true'; as one argv element it is just an argument to false
    assert await prober.probe(command("false", "; true")) == "exit status 1"


async def test_timeout_kills_the_whole_process_group(prober: RealProber) -> None:
    marker = f"{secrets.randbelow(900) + 100}.{secrets.randbelow(10**6):06d}"  # unique sleep time
    check = command("sh", "-c", f"sleep {marker} & sleep {marker}", timeout=1.0)
    probe = asyncio.create_task(prober.probe(check))
    assert await eventually(lambda: len(processes_with(marker)) == 2, 0.9), "sleeps not started"
    error = await probe
    assert error is not None
    assert error.startswith("timeout after")
    assert await eventually(lambda: not processes_with(marker), 1.0), processes_with(marker)


async def test_leftover_background_processes_are_killed(prober: RealProber) -> None:
    marker = f"{secrets.randbelow(900) + 100}.{secrets.randbelow(10**6):06d}"
    assert await prober.probe(command("sh", "-c", f"sleep {marker} & exit 0")) is None
    assert await eventually(lambda: not processes_with(marker), 1.0), processes_with(marker)


async def test_environment_is_scrubbed(prober: RealProber, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGPLB_TEST_SECRET", "leaked")
    script = 'test -z "${BGPLB_TEST_SECRET-}" && test "$FOO" = bar && test "$PATH" = "$EXPECTED"'
    env = {"FOO": "bar", "EXPECTED": SAFE_PATH}
    assert await prober.probe(command("sh", "-c", script, env=env)) is None
    # the same script fails when the check's variable is missing: the test can fail
    assert await prober.probe(command("sh", "-c", script)) == "exit status 1"
    assert await prober.probe(command("sh", "-c", 'test -n "${HOME-}"')) == "exit status 1"


def test_check_environment() -> None:
    assert check_environment({"A": "1"}) == {"PATH": SAFE_PATH, "A": "1"}
    assert check_environment({}) == {"PATH": SAFE_PATH}


async def test_command_has_no_capabilities(prober: RealProber) -> None:
    script = "grep -Eq '^CapEff:[[:space:]]+0+$' /proc/self/status"
    assert await prober.probe(command("sh", "-c", script)) is None
    assert await prober.probe(command("sh", "-c", script.replace("CapEff", "CapAmb"))) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: checks the drop to nobody")
async def test_root_agent_runs_commands_as_nobody(prober: RealProber) -> None:
    assert unprivileged_identity().uid == 65534
    script = 'test "$(id -u)" = 65534 && test "$(id -G)" = "$(id -g)" && test "$(pwd)" = /'
    assert await prober.probe(command("sh", "-c", script)) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: compares with the agent's identity")
async def test_identity_can_be_kept_for_trusted_commands() -> None:
    p = RealProber(identity=Identity())
    try:
        assert await p.probe(command("sh", "-c", 'test "$(id -u)" = 0')) is None
    finally:
        await p.close()


def test_describe_exit() -> None:
    assert describe_exit(0) is None
    assert describe_exit(3) == "exit status 3"
    assert describe_exit(-9) == "killed by signal SIGKILL"


def test_ambient_capabilities_parsing(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapAmb:\t0000000000001000\n")
    assert ambient_capabilities(str(status)) == 0x1000
    assert ambient_capabilities(str(tmp_path / "missing")) == 0
