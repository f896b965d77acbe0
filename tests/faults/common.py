"""Shared pieces of the fault suite: one LB with the real agent, API calls from the test
process (sockets made inside the LB namespace), reload and wait helpers."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import socket
from typing import Any

from pyroute2.netns import create_socket

from tests.harness.agent_proc import API_PORT, TOKEN, AgentFactory, AgentProc, Backend
from tests.harness.frr import BgpLab, wait_until
from tests.harness.route_sampler import RouteSampler

VIP = "10.99.0.1/32"
# Generous: the machine runs other suites and VMs on 2 cores.
CONVERGE = 30.0
# The agent's API answering after its start (python imports, netlink): ~1 s idle, >20 s seen
# at load 18 on 2 cores.
START_TIMEOUT = 90.0


async def one_lb(
    bgp_lab_factory: Any, agent_factory: AgentFactory, log_level: str = "debug", **kw: Any
) -> tuple[BgpLab, AgentProc, Backend]:
    """r1 + lb1 running the agent with ``web`` (VIP 10.99.0.1) up at the router."""
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    agent, backend = agent_factory(bl, 1, start=False, **kw)
    agent.log_level = log_level
    agent.start_timeout = START_TIMEOUT
    agent.start()
    await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], CONVERGE, interval=0.05)
    return bl, agent, backend


def sampler(bl: BgpLab, prefix: str = VIP) -> RouteSampler:
    return RouteSampler(bl.router, prefix, bl.lb_v4(1))


def events_count(agent: AgentProc, *names: str) -> int:
    return sum(1 for x in agent.log_lines() if x.get("event") in names)


async def sighup(agent: AgentProc, within: float = CONVERGE) -> dict[str, Any]:
    """SIGHUP the agent and wait for the reload's outcome; returns that log line."""
    names = ("config_reloaded", "config_reload_failed")
    before = events_count(agent, *names)
    agent.signal(signal.SIGHUP)
    await wait_until(lambda: events_count(agent, *names) > before, within, interval=0.05)
    return [x for x in agent.log_lines() if x.get("event") in names][before]


class Api:
    """HTTP/1.1 to the agent's API from the test process, over a socket made in its namespace
    (no ``ip netns exec curl`` per request). Keeps its connection alive between calls."""

    def __init__(self, ns: str, token: str | None = TOKEN, timeout: float = 20.0) -> None:
        self.ns = ns
        self.token = token
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self.reconnects = 0

    def _connect(self) -> http.client.HTTPConnection:
        sock = create_socket(self.ns, socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(("127.0.0.1", API_PORT))
        except BaseException:
            sock.close()
            raise
        conn = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=self.timeout)
        conn.sock = sock
        return conn

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._connect()
            try:
                self._conn.request(method, path, body=data, headers=headers)
                resp = self._conn.getresponse()
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # the server closed an idle keep-alive connection: one retry on a new one
                self.close()
                self.reconnects += 1
                if attempt == 2:
                    raise
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str) -> tuple[int, Any]:
        code, body = self.request(method, path)
        return code, json.loads(body) if body else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


async def settle(seconds: float) -> None:
    """Let the agent run (probes, passes) for ``seconds``."""
    await asyncio.sleep(seconds)
