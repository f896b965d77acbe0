"""The whole agent (``bgp-lb run``) in the node namespace of the kernel-test topology.

Its one BGP peer (the client's address) never answers: these tests are about the dataplane the
agent builds through the real reconciler and NetlinkDataplane, and what it leaves behind after
a crash, a config change and a clean stop. Foreign objects must survive all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyroute2 import AsyncIPVS, IPVSService

from .conftest import Topology
from .foreign import ALL_THERE, add_foreign_objects, foreign_objects_present, kernel_names

pytestmark = pytest.mark.kernel

BGP_LB = Path(sys.executable).parent / "bgp-lb"
START_TIMEOUT = 240.0  # agent + ExaBGP start-up under TCG


@dataclass
class AgentRun:
    node: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"

    def configure(self, services: list[dict[str, Any]]) -> None:
        config = {
            "node": {
                "router_id": "10.0.100.1",  # also the local backend (masq) address
                "backend_v6": "fd00:100::1",
                "local_as": 65001,
                "state_dir": str(self.workdir / "state"),
                "runtime_dir": str(self.workdir / "run"),
                "resync_interval": 2,
                "shutdown_grace": 0.5,
                "log": {"format": "text", "level": "info"},
            },
            # nobody answers this peer: fine, the dataplane does not depend on BGP
            "peers": [{"address": "10.0.100.2", "asn": 65000, "next_hop_v6": "fd00:100::1"}],
            "services": services,
        }
        self.config_path.write_text(yaml.safe_dump(config))

    def start(self) -> None:
        argv = ["ip", "netns", "exec", self.node, str(BGP_LB), "run", str(self.config_path)]
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT on a hang prints every thread's stack (stop())
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def stop(self, sig: signal.Signals, timeout: float = 120) -> int:
        """Signal the agent, wait for it, then kill whatever it left in the namespace."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler: the stacks into the log
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            self.kill_leftovers()
            raise AssertionError(
                f"the agent did not exit {timeout:.0f} s after {sig.name}; its log:\n"
                + self.log_text()[-20000:]
            ) from None
        self.kill_leftovers()
        return code

    def kill_leftovers(self) -> None:
        """The agent (if still alive) and its children (ExaBGP), by pid, in our namespace."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        pids = subprocess.run(
            ["ip", "netns", "pids", self.node], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in map(int, pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def keep_log(self, path: Path) -> None:
        """The guest's /tmp is gone with the VM: BGPLB_KEEP_LOGS (a directory the VM may write,
        _work/kernel-logs, see tests/harness/vm.py) keeps each test's agent log."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.log_text())

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
async def agent(
    topology: Topology, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[AgentRun]:
    run = AgentRun(topology.node, tmp_path)
    try:
        yield run
    finally:
        run.kill_leftovers()
        if keep := os.environ.get("BGPLB_KEEP_LOGS"):
            run.keep_log(Path(keep) / f"{request.node.name}.agent.log")


def web_service(name: str, vips: list[str]) -> dict[str, Any]:
    """An ipvs-mode service without real servers: IPVS forwards to the node itself."""
    return {"name": name, "vips": vips, "ports": [{"port": 80, "target_port": 8080}]}


async def ipvs_vips(node: str) -> set[str]:
    ipvs = AsyncIPVS(netns=node)
    await ipvs.setup_endpoint()
    try:
        return {str(IPVSService.from_message(m).get("addr")) for m in await ipvs.service("dump")}
    finally:
        ipvs.close()


async def wait_reachable(topology: Topology, agent: AgentRun, vip: str) -> None:
    """Until an HTTP request through ``vip`` reaches the node's backend."""
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            assert agent.proc is not None
            assert agent.proc.poll() is None, f"agent exited; its log:\n{agent.log_text()}"
            with contextlib.suppress(OSError, TimeoutError, AssertionError):
                async with asyncio.timeout(3):
                    if await topology.lab.http_get(topology.client, vip, 80) == "node":
                        return
            await asyncio.sleep(0.5)


async def wait_gone(agent: AgentRun, link: str, vip: str) -> None:
    """Until ``link``, the address ``vip`` and its IPVS services are gone from the node."""
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                links, addrs = await kernel_names(agent.node)
                if (
                    link not in links
                    and vip not in addrs
                    and vip not in await ipvs_vips(agent.node)
                ):
                    return
                await asyncio.sleep(0.5)
    except TimeoutError:
        pytest.fail(f"{link}/{vip} still there; agent log:\n{agent.log_text()}")


async def test_agent_crash_config_change_restart_and_clean_stop(
    topology: Topology, agent: AgentRun
) -> None:
    node = topology.node
    await add_foreign_objects(node)
    await topology.lab.http_server(node, topology.node_v4, 8080, "node")
    await topology.lab.http_server(node, topology.node_v6, 8080, "node")

    agent.configure(
        [web_service("web", ["10.99.0.7", "fd00:99::7"]), web_service("api", ["10.99.0.8"])]
    )
    agent.start()
    for vip in ("10.99.0.7", "fd00:99::7", "10.99.0.8"):
        await wait_reachable(topology, agent, vip)

    # Crash: nothing is cleaned up. "api" leaves the config while the agent is down.
    assert agent.stop(signal.SIGKILL) == -signal.SIGKILL
    assert "10.99.0.8" in await ipvs_vips(node)
    agent.configure([web_service("web", ["10.99.0.7", "fd00:99::7"])])
    agent.start()
    await wait_gone(agent, "api", "10.99.0.8")  # found again through the ownership record
    await wait_reachable(topology, agent, "10.99.0.7")
    assert await foreign_objects_present(node) == ALL_THERE

    # A clean stop (keep_dataplane_on_exit: false) removes what is ours, nothing else.
    assert agent.stop(signal.SIGTERM) == 0, agent.log_text()
    await wait_gone(agent, "web", "10.99.0.7")
    _, addrs = await kernel_names(node)
    assert "fd00:99::7" not in addrs
    assert await ipvs_vips(node) == {"10.99.0.60"}  # only the foreign service is left
    assert await foreign_objects_present(node) == ALL_THERE
