"""A real agent (bgplb.agent.Agent on the fake dataplane and fake speaker, real time) with its
real API app (bgplb.api.build_app) on a loopback port, in a thread with its own event loop,
so blocking clients (schemathesis, raw sockets) can hit it from the test."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml

from bgplb.agent import Agent
from bgplb.api import build_app, serve
from bgplb.bgp.fake import FakeSpeaker
from bgplb.clock import SystemClock
from bgplb.config import load_config
from bgplb.dataplane.fake import FakeDataplane
from bgplb.eventlog import EventLog
from bgplb.health.targets import ResolvedCheck
from tests.unit.fixtures import ebgp_peer, ipvs_service, node, tcp_check

TOKEN = "tok-live-0123456789abcdef"
T = TypeVar("T")


class Prober:
    """Every probe of a check named in ``failing`` fails; the others succeed."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.probes = 0

    async def probe(self, target: ResolvedCheck) -> str | None:
        self.probes += 1
        return "connect: Connection refused" if target.key.check in self.failing else None


def write_config(directory: Path) -> Path:
    check = tcp_check("tcp", interval=0.2, fast_interval=0.1, timeout=0.1, rise=1, fall=1)
    raw: dict[str, Any] = {
        "node": node(state_dir=str(directory / "state"), shutdown_grace=0.1, drain_delay=0.0),
        "peers": [ebgp_peer()],
        "services": [
            ipvs_service(  # link_bandwidth: status carries services[].link_bandwidth
                "web", vips=("10.99.0.1",), ports=(80,), checks=[check], link_bandwidth="auto"
            ),
            ipvs_service("dns", vips=("10.99.0.2",), ports=(53,), checks=[]),
        ],
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class LiveAgent:
    def __init__(self, directory: Path, token: str | None) -> None:
        self.path = write_config(directory)
        self.token = token
        self.prober = Prober()
        self.speaker: FakeSpeaker | None = None
        self.agent: Agent | None = None
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="live-agent", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported to the test by start()/stop()
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        clock = SystemClock()
        log = EventLog(clock)
        self.speaker = FakeSpeaker(log)
        self.agent = Agent(
            load_config(self.path),
            dataplane=FakeDataplane(log, clock),
            speaker=self.speaker,
            clock=clock,
            config_path=self.path,
            prober=self.prober,
            notifier=lambda _: None,
        )
        runner = await serve(build_app(self.agent, self.agent.metrics, self.token), "127.0.0.1", 0)
        self.port = runner.addresses[0][1]
        task = asyncio.create_task(self.agent.run())
        try:
            while not self.agent.ready():
                assert not task.done(), "the agent ended before its first pass"
                await asyncio.sleep(0.01)
            self._ready.set()
            assert await task == 0
        finally:
            await runner.cleanup()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(60), "the live agent did not become ready"
        if self._error is not None:
            raise self._error

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on the agent's loop (its objects are not thread-safe) and return its value."""
        assert self.loop is not None

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive() and self._error is None

    def stop(self) -> None:
        if self.loop is not None and self.agent is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.agent.stopping.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the live agent did not stop"
        if self._error is not None:
            raise self._error


@contextmanager
def live_agent(directory: Path, token: str | None = TOKEN) -> Iterator[LiveAgent]:
    agent = LiveAgent(directory, token)
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()
