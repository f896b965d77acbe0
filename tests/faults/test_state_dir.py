"""A broken ``state_dir``: corrupt, missing, read-only, full. The agent keeps routing and a
drain still works (issue 13, defects 2 and 3).

Read-only and full use a small tmpfs mounted on the agent's state_dir before it starts (the
agent's ``ip netns exec`` mount namespace is a copy made at start; remounting the tmpfs read-only
changes its superblock, which both copies share). Unmounted afterwards."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.agent_proc import AgentFactory, AgentProc
from tests.harness.frr import BgpLab, wait_until
from tests.harness.netns import run

from .common import CONVERGE, START_TIMEOUT, VIP, Api, one_lb

pytestmark = pytest.mark.faults


def _state_dir(agent: AgentProc) -> Path:
    return Path(agent.config["node"]["state_dir"])


async def _drain_works(bl: BgpLab, agent: AgentProc) -> list[dict[str, Any]]:
    """Drain ``web`` (the route goes after the drain delay), undrain (it comes back); returns
    both API answers. Every answer must be a 200."""
    api = Api(agent.ns)
    answers = []
    try:
        code, body = api.json("POST", "/api/v1/services/web/drain")
        assert code == 200, (code, body)
        answers.append(body)
        await wait_until(lambda: bl.router.fib(VIP) == [], CONVERGE, interval=0.05)
        code, body = api.json("POST", "/api/v1/services/web/undrain")
        assert code == 200, (code, body)
        answers.append(body)
        await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], CONVERGE, interval=0.05)
    finally:
        api.close()
    assert agent.running()
    return answers


async def test_corrupt_admin_json_no_crash_fail_safe_drained_then_routes(
    bgp_lab_factory: Any, agent_factory: AgentFactory
) -> None:
    """An unreadable admin.json: the agent starts (no crash loop), drained (fail-safe) until
    the operator undrains; then it routes and drains as usual."""
    bl, agent, _ = await one_lb(bgp_lab_factory, agent_factory)
    agent.kill()
    (_state_dir(agent) / "admin.json").write_text('{"version": 1, "drained": [')
    agent.start()  # fails on a crash
    assert agent.running()
    errors = agent.errors()
    assert any("admin.json" in json.dumps(x) for x in errors), errors
    api = Api(agent.ns)
    try:
        code, body = api.json("POST", "/api/v1/undrain")
        assert code == 200, (code, body)
    finally:
        api.close()
    await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], CONVERGE, interval=0.05)
    await _drain_works(bl, agent)


async def test_corrupt_ownership_record_rebuilt_routes(
    bgp_lab_factory: Any, agent_factory: AgentFactory
) -> None:
    bl, agent, _ = await one_lb(bgp_lab_factory, agent_factory)
    agent.kill()
    (_state_dir(agent) / "dataplane.json").write_text("\x00garbage{")
    agent.start()
    await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], CONVERGE, interval=0.05)
    assert "10.99.0.1/32" in run("ip", "-n", agent.ns, "addr", "show", "dev", "lo")
    await _drain_works(bl, agent)


async def test_state_dir_removed_while_running_keeps_routing(
    bgp_lab_factory: Any, agent_factory: AgentFactory
) -> None:
    bl, agent, _ = await one_lb(bgp_lab_factory, agent_factory)
    shutil.rmtree(_state_dir(agent))
    await _drain_works(bl, agent)
    agent.kill()
    agent.start()
    await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], CONVERGE, interval=0.05)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    try:
        yield path
    finally:
        run("umount", "-l", str(path), check=False)


def _fill(path: Path) -> int:
    """Write a file in ``path`` until the filesystem is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * 4096
    with open(path / "filler", "wb", buffering=0) as f:
        try:
            while True:
                written += f.write(chunk) or 0
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    return written


@pytest.mark.parametrize("fault", ["read-only", "full"])
async def test_unwritable_state_dir_drain_applied_in_memory(
    bgp_lab_factory: Any, agent_factory: AgentFactory, fault: str
) -> None:
    """A drain is never refused: applied in memory, answered 200 with ``persisted: false``
    (defect 3). The route keeps flowing before and after."""
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    agent, _ = agent_factory(bl, 1, start=False)
    agent.start_timeout = START_TIMEOUT
    with _tmpfs(_state_dir(agent), "64k") as state:
        agent.start()
        await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], CONVERGE, interval=0.05)
        if fault == "read-only":
            run("mount", "-o", "remount,ro", str(state))
            with pytest.raises(OSError, match="Read-only"):
                (state / "probe").write_text("x")
        else:
            print(f"state_dir filled with {_fill(state)} bytes")
        try:
            answers = await _drain_works(bl, agent)
        finally:
            agent.kill()  # before the unmount: the agent's mount namespace holds a copy
    print(f"{fault} state_dir: drain/undrain answered {answers}")
    assert all(a.get("persisted") is False for a in answers), answers
    assert agent.exit_codes == [-signal.SIGKILL]


def test_mount_helper_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "m"
    with _tmpfs(target, "64k"):
        assert os.path.ismount(target)
    assert not os.path.ismount(target)
