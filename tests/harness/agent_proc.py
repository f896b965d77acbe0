"""The whole agent (``bgp-lb run CONFIG``) as a process inside an LB namespace of a BGP lab.

``AgentProc`` writes the config (YAML) for one LB namespace, runs ``.venv/bin/bgp-lb run`` in
it via ``ip netns exec`` (which execs: the pid we hold is the agent's) with its JSON log lines
in ``agent.log``, and talks to its API with ``curl`` inside the namespace. ``Backend`` is a
local HTTP server in the namespace for the health checks. The ``agent_factory`` fixture kills
and removes everything it made, also when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from .frr import BgpLab, pid_alive
from .netns import kill_pids, ns_pids, run, tempdir

REPO = Path(__file__).resolve().parents[2]
BGP_LB = Path(sys.executable).parent / "bgp-lb"
TOKEN = "agent-test-token-5e1f"
BACKEND_PORT = 8080
API_PORT = 9180

# Fast checks for the health tests: up after 2 x 0.2 s, down after 2 failed probes.
FAST_CHECK: dict[str, Any] = {
    "interval": 0.2,
    "fast_interval": 0.2,
    "timeout": 0.15,  # the config wants timeout < interval
    "rise": 2,
    "fall": 2,
}
# Where health is not what a test is about: as quick to come up, but a probe slowed by a busy
# host (other test suites, VMs) does not withdraw the route in the middle of the test.
STEADY_CHECK: dict[str, Any] = {
    "interval": 0.5,
    "fast_interval": 0.2,
    "timeout": 0.45,
    "rise": 2,
    "fall": 3,
}


def peer(bl: BgpLab, n: int, v6: bool = False, **extra: Any) -> dict[str, Any]:
    """lbN's session to r1 over v4 (or v6) with fast timers."""
    return {
        "address": bl.r1_v6(n) if v6 else bl.r1_v4(n),
        "asn": bl.router.asn,
        "local_address": bl.lb_v6(n) if v6 else bl.lb_v4(n),
        "hold_time": 3,
        **extra,
    }


def service(
    name: str,
    vips: list[str],
    check_address: str,
    check: str = "http",
    timing: dict[str, Any] = STEADY_CHECK,
    **extra: Any,
) -> dict[str, Any]:
    """An announce-mode service (VIPs on ``lo``) checked against the namespace's backend."""
    probe: dict[str, Any] = {
        "type": check,
        "address": check_address,
        "port": BACKEND_PORT,
        **timing,
    }
    return {
        "name": name,
        "mode": "announce",
        "interface": "lo",
        "vips": vips,
        "checks": [probe],
        **extra,
    }


@dataclass
class Backend:
    """``python3 -m http.server`` bound to ``address`` inside ``ns``."""

    ns: str
    address: str
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        argv = ["ip", "netns", "exec", self.ns, sys.executable, "-m", "http.server"]
        argv += ["--bind", self.address, "--directory", str(self.directory), str(BACKEND_PORT)]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend in {self.ns} exited with {self.proc.returncode}")
            if _curl(self.ns, f"http://{_host(self.address)}:{BACKEND_PORT}/", check=False)[0]:
                return
            time.sleep(0.05)
        raise RuntimeError(f"backend in {self.ns} did not come up")

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(5)
        self.proc = None


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _curl(
    ns: str, url: str, *args: str, check: bool = True, timeout: float = 10.0
) -> tuple[bool, str]:
    argv = ["ip", "netns", "exec", ns, "curl", "-sS", "--max-time", str(timeout / 2)]
    res = subprocess.run(
        [*argv, *args, url], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and res.returncode != 0:
        raise RuntimeError(f"curl {url} in {ns} failed: {res.stderr.strip()}")
    return res.returncode == 0, res.stdout


@dataclass
class AgentProc:
    """One ``bgp-lb run`` in ``ns``; ``config`` is the dict written as YAML."""

    ns: str
    workdir: Path
    config: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0
    exit_codes: list[int] = field(default_factory=list)
    log_level: str = "debug"
    extra_env: dict[str, str] = field(default_factory=dict)
    start_timeout: float = 20.0
    # the program and its leading arguments; the config path and log options follow
    command: tuple[str, ...] = (str(BGP_LB), "run")

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"

    @property
    def token_file(self) -> Path:
        return self.workdir / "token"

    @property
    def runtime_dir(self) -> Path:
        return Path(self.config["node"]["runtime_dir"])

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{API_PORT}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def start(self) -> None:
        """Start the agent; returns once its API answers (the agent is running)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.write_config()
        argv = ["ip", "netns", "exec", self.ns, *self.command, str(self.config_path)]
        argv += ["--log-format", "json", "--log-level", self.log_level]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
        env.pop("WATCHDOG_USEC", None)
        env.update(self.extra_env)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env
            )
        self.runs += 1
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log_text()}")
            if _curl(self.ns, f"{self.api}/healthz", check=False, timeout=2)[0]:
                return
            time.sleep(0.05)
        raise RuntimeError(f"agent API did not come up:\n{self.log_text()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self.exit_codes.append(code)
        return code

    def kill(self) -> None:
        """SIGKILL and reap (no-op when not running)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.wait(10)

    # -------------------------------------------------------------- logs

    def log_text(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text(errors="replace")
        return ""

    def log_lines(self) -> list[dict[str, Any]]:
        """The agent's log as JSON objects (every line must be JSON)."""
        out = []
        for line in self.log_text().splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise AssertionError(f"not a JSON log line: {line!r}") from e
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [x for x in self.log_lines() if x.get("event") == name]

    def errors(self) -> list[dict[str, Any]]:
        """Log lines at ERROR or CRITICAL."""
        return [x for x in self.log_lines() if x.get("level") in ("ERROR", "CRITICAL")]

    def exabgp_pids(self) -> list[int]:
        """Every ExaBGP pid the agent logged as started, oldest first."""
        pids = []
        for x in self.log_lines():
            m = re.fullmatch(r"exabgp started \(pid (\d+)\)", str(x.get("message", "")))
            if m:
                pids.append(int(m.group(1)))
        return pids

    def processes_left(self) -> list[int]:
        """Live processes of this agent's run: the agent and any ExaBGP it logged."""
        pids = [self.pid] if self.proc is not None else []
        return [p for p in [*pids, *self.exabgp_pids()] if pid_alive(p)]

    # -------------------------------------------------------------- API

    def get(self, path: str) -> str:
        return _curl(self.ns, f"{self.api}{path}", "--fail-with-body")[1]

    def get_json(self, path: str) -> Any:
        return json.loads(self.get(path))

    def status(self) -> dict[str, Any]:
        out = self.get_json("/api/v1/status")
        assert isinstance(out, dict)
        return out

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``bgp-lb ARGS --api URL --token-file FILE`` run inside the namespace."""
        argv = ["ip", "netns", "exec", self.ns, str(BGP_LB), *args]
        argv += ["--api", self.api, "--token-file", str(self.token_file)]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: exit {res.returncode}: {res.stderr}")
        return res


def base_config(
    workdir: Path,
    bl: BgpLab,
    n: int,
    peers: list[dict[str, Any]],
    services: list[dict[str, Any]],
    **node: Any,
) -> dict[str, Any]:
    return {
        "node": {
            "router_id": bl.lb_v4(n),
            "local_as": bl.lb_as,
            "runtime_dir": str(workdir / "run"),
            "state_dir": str(workdir / "state"),
            "resync_interval": 2,
            "shutdown_grace": 1,
            "drain_delay": 2,
            "api": {"listen": "127.0.0.1", "port": API_PORT, "token_file": str(workdir / "token")},
            "log": {"format": "json", "level": "debug"},
            **node,
        },
        "peers": peers,
        "services": services,
    }


AgentFactory = Callable[..., tuple[AgentProc, Backend]]


@pytest.fixture
def agent_factory() -> Iterator[AgentFactory]:
    """``agent_factory(bl, n, peers=None, services=None, start=True, command=None, **node)``
    -> (agent, backend): lbN's backend is up and the agent started (its API answers).
    ``command``: what runs instead of ``bgp-lb run`` (e.g. ``fakedp_agent.COMMAND``).

    Defaults: a v4 session to r1 and one service ``web`` with VIP 10.99.0.1 and an http check
    (``STEADY_CHECK``) of the backend at lbN's address. Everything is SIGKILLed and removed
    afterwards."""
    made: list[tuple[AgentProc, Backend]] = []

    def make(
        bl: BgpLab,
        n: int,
        peers: list[dict[str, Any]] | None = None,
        services: list[dict[str, Any]] | None = None,
        start: bool = True,
        command: tuple[str, ...] | None = None,
        **node: Any,
    ) -> tuple[AgentProc, Backend]:
        workdir = tempdir("agent")
        (workdir / "www").mkdir()
        (workdir / "www" / "index.html").write_text("ok\n")
        token = workdir / "token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        peers = peers if peers is not None else [peer(bl, n)]
        services = (
            services if services is not None else [service("web", ["10.99.0.1"], bl.lb_v4(n))]
        )
        config = base_config(workdir, bl, n, peers, services, **node)
        agent = AgentProc(bl.lb_ns[n - 1], workdir, config)
        if command is not None:
            agent.command = command
        backend = Backend(agent.ns, bl.lb_v4(n), workdir / "www")
        made.append((agent, backend))
        backend.start()
        if start:
            agent.start()
        return agent, backend

    yield make
    for agent, backend in made:
        try:
            agent.kill()
            backend.stop()
            # ExaBGP dies with the agent (PDEATHSIG); make sure of it, by pid.
            inside = set(ns_pids(agent.ns))
            kill_pids([p for p in agent.exabgp_pids() if p in inside])
            if os.environ.get("BGPLB_KEEP_LOGS"):
                print(f"agent log kept: {agent.log_path}")
        finally:
            if not os.environ.get("BGPLB_KEEP_LOGS"):
                shutil.rmtree(agent.workdir, ignore_errors=True)


class RouteMonitor:
    """``ip -ts monitor route`` in ``ns``: when the kernel FIB changed, as the kernel told
    ``ip`` (no polling error). Use as a context manager; it is subscribed on entry."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> RouteMonitor:
        self._proc = subprocess.Popen(
            ["ip", "-n", self.ns, "-ts", "monitor", "route"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        time.sleep(0.2)  # ip subscribes right after exec; give it time on a busy host
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()

    def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            m = re.match(r"\[([0-9T:.-]+)\] (.*)", line)
            if m:
                at = datetime.fromisoformat(m.group(1)).timestamp()  # local time, like ip
                with self._lock:
                    self.lines.append((at, m.group(2)))

    def changed_at(self, prefix: str, after: float, via: list[str]) -> float | None:
        """Wall-clock time the route to ``prefix`` was (re)installed with exactly the next
        hops ``via``, first time after ``after``."""
        address = prefix.split("/")[0]
        with self._lock:
            for t, x in self.lines:
                if t >= after and x.startswith(f"{address} "):
                    hops = sorted(re.findall(r"via (\S+)", x))
                    if hops == sorted(via):
                        return t
        return None

    def deleted_at(self, prefix: str, after: float) -> float | None:
        """Wall-clock time the route to ``prefix`` was deleted, first time after ``after``."""
        address = prefix.split("/")[0]
        with self._lock:
            found = [t for t, x in self.lines if t >= after and x.startswith(f"Deleted {address} ")]
        return found[0] if found else None


def namespace_processes(ns: str, *, besides: list[int]) -> list[int]:
    """Pids in ``ns`` other than ``besides`` (e.g. the backend)."""
    return [p for p in ns_pids(ns) if p not in besides and pid_alive(p)]


def promtool_check(text: str) -> str:
    """``promtool check metrics`` output for ``text`` ('' when clean)."""
    res = subprocess.run(
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return (res.stdout + res.stderr).strip()


__all__ = [
    "FAST_CHECK",
    "STEADY_CHECK",
    "TOKEN",
    "AgentFactory",
    "AgentProc",
    "Backend",
    "RouteMonitor",
    "agent_factory",
    "base_config",
    "namespace_processes",
    "peer",
    "promtool_check",
    "run",
    "service",
]
