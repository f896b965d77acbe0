"""The real BFD: FRR's zebra + bfdd (bfdd needs zebra), per agent, in ``<runtime_dir>-frr``.

Each daemon gets its own pid file, zserv socket, vty socket directory and bfdd control
socket there (no ``-N``, no /etc/frr), reads a config file rendered from ``peers[].bfd``,
runs under the guard (never outlives the agent) and is restarted with backoff. Sessions are
observed with ``vtysh --vty_socket DIR -c 'show bfd peers json'`` every second until all are
Up, then every 5 s (each call bounded by ``vtysh_timeout``); a change wakes the reconciler.
A reload edits bfdd's peers through vtysh (unchanged sessions are kept); if that fails bfdd
is restarted on the new file. Nothing runs when no peer has ``bfd`` set.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from ..clock import Clock
from ..config import Config
from ..logs import log_event
from ..model import PeerKey
from .base import BfdSession, BfdState
from .daemons import Daemon, guarded
from .lookup import lookup_route
from .spec import (
    BfdPeerSpec,
    PeerRoute,
    bfd_peers,
    edit_commands,
    parse_sessions,
    peer_specs,
    render_bfdd,
    render_zebra,
    session,
)
from .vty import run_commands

log = logging.getLogger("bgplb.bfd")

FRR_BIN = Path("/usr/lib/frr")
FRR_USER = "frr"
Lookup = Callable[[str, str | None], Awaitable[PeerRoute]]


def frr_dir(runtime_dir: Path) -> Path:
    """The daemons' directory, owned by user frr: a sibling of runtime_dir (/run/bgp-lb-frr),
    because runtime_dir itself is private to the agent (0700, it holds ExaBGP's config)."""
    return runtime_dir.with_name(f"{runtime_dir.name}-frr")


class FrrBfd:
    def __init__(
        self,
        clock: Clock,
        *,
        netns: str | None = None,
        frr_bin: Path = FRR_BIN,
        poll_interval: float | None = None,
        steady_interval: float = 5.0,
        vtysh_timeout: float | None = None,
        zserv_wait: float = 10.0,
        lookup: Lookup = lookup_route,
    ) -> None:
        self._clock = clock
        self._netns = netns
        self._bin = frr_bin
        # 1 s / 2 s by default. A slow host (a loaded TCG guest, where bfdd itself may not be
        # scheduled for seconds) raises them with BGPLB_BFD_POLL_INTERVAL /
        # BGPLB_BFD_VTYSH_TIMEOUT (the vty exchange's bound): a call that always times out
        # leaves every session "unknown", and a BFD peer gets no route until it is Up.
        self._poll_interval = _env_seconds("BGPLB_BFD_POLL_INTERVAL", poll_interval, 1.0)
        self._steady_interval = steady_interval
        self._vtysh_timeout = _env_seconds("BGPLB_BFD_VTYSH_TIMEOUT", vtysh_timeout, 2.0)
        self._zserv_wait = zserv_wait
        self._lookup = lookup
        self._dir = Path()
        self._specs: tuple[BfdPeerSpec, ...] = ()
        self._sessions: dict[PeerKey, BfdSession] = {}
        self._wake: Callable[[], None] = lambda: None
        self._daemons: dict[str, Daemon] = {}
        self._poller: asyncio.Task[None] | None = None
        self.last_error = ""

    # ------------------------------------------------------------------ Protocol

    async def start(self, config: Config, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._dir = frr_dir(config.node.runtime_dir)
        self._specs = await self._resolve(config)
        self._sessions = {
            s.key: session(s.key, BfdState.UNKNOWN, "starting", {}, 0.0) for s in self._specs
        }
        if self._specs:
            await self._spawn()

    async def reconfigure(self, config: Config) -> None:
        new = await self._resolve(config)
        old, self._specs = self._specs, new
        now = self._clock.now()
        self._sessions = {
            s.key: self._sessions.get(s.key) or session(s.key, BfdState.UNKNOWN, "added", {}, now)
            for s in new
        }
        if not new:
            await self._stop_daemons()
            return
        if not self._daemons:
            await self._spawn()
            return
        self._write_configs()
        commands = edit_commands(old, new)
        if commands:
            try:
                await self._bfdd(commands)
                log_event(log, "bfd_reconfigured", peers=len(new))
            except (OSError, RuntimeError, TimeoutError) as e:
                log_event(log, "bfd_reconfigure_failed", level=logging.WARNING, error=str(e))
                await self._daemons["bfdd"].restart()  # it reads the new file
        self._wake()

    def sessions(self) -> Mapping[PeerKey, BfdSession]:
        return dict(self._sessions)

    def restarts(self) -> int:
        return sum(d.restarts for d in self._daemons.values())

    def pids(self) -> dict[str, int]:
        """The guards' pids (tests)."""
        return {n: d.pid for n, d in self._daemons.items() if d.pid is not None}

    async def stop(self) -> None:
        await self._stop_daemons()

    # ------------------------------------------------------------------ processes

    async def _resolve(self, config: Config) -> tuple[BfdPeerSpec, ...]:
        routes: dict[PeerKey, PeerRoute] = {}
        for p in bfd_peers(config):
            if p.multihop is None or p.local_address is None:
                routes[p.key] = await self._lookup(str(p.address), self._netns)
        return peer_specs(config, routes)

    def _write_configs(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        for name, text in (("zebra.conf", render_zebra()), ("bfdd.conf", render_bfdd(self._specs))):
            path = self._dir / name
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            _give_to_frr(tmp, 0o640)
            os.replace(tmp, path)

    def _argv(self, daemon: str) -> list[str]:
        d = self._dir
        argv = [str(self._bin / daemon), "-F", "traditional", "-f", str(d / f"{daemon}.conf")]
        argv += ["-i", str(d / f"{daemon}.pid"), "-z", str(d / "zserv.api")]
        argv += ["--vty_socket", str(d)]  # logs: syslog; start-up errors: stderr (our log)
        if daemon == "bfdd":
            argv += ["--bfdctl", str(d / "bfdd.sock")]
        if self._netns:
            argv = ["ip", "netns", "exec", self._netns, *argv]  # ip execs: the guard's child
        return guarded(argv)

    async def _spawn(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        _give_to_frr(self._dir, 0o755)
        self._write_configs()
        with contextlib.suppress(FileNotFoundError):
            (self._dir / "zserv.api").unlink()
        for name in ("zebra", "bfdd"):
            daemon = Daemon(name, self._clock, functools.partial(self._argv, name), self._exited)
            self._daemons[name] = daemon
            daemon.start()
            if name == "zebra":  # bfdd connects to zebra's socket at start
                await self._wait_for(self._dir / "zserv.api", self._zserv_wait)
        self._poller = asyncio.create_task(self._poll(), name="bfd-poll")

    async def _wait_for(self, path: Path, seconds: float) -> None:
        waited = 0.0
        while not _exists(path) and waited < seconds:
            await asyncio.sleep(0.02)
            waited += 0.02

    def _exited(self, name: str, code: int | str) -> None:
        log_event(log, "frr_daemon_exited", level=logging.WARNING, daemon=name, code=str(code))
        now = self._clock.now()
        self._sessions = {
            k: session(k, BfdState.UNKNOWN, f"{name} exited", self._sessions, now)
            for k in self._sessions
        }
        self._wake()

    async def _stop_daemons(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        for name in ("bfdd", "zebra"):  # bfdd first: zebra is its client's server
            daemon = self._daemons.pop(name, None)
            if daemon is not None:
                await daemon.stop()

    # ------------------------------------------------------------------ observation

    async def _poll(self) -> None:
        """Every ``poll_interval`` until every session is Up (routes wait for it), then every
        ``steady_interval``: each vtysh call costs ~30-60 ms of CPU. The router, not this
        poll, acts on a session going down."""
        while True:
            await self.observe()
            steady = all(s.state is BfdState.UP for s in self._sessions.values())
            await self._clock.sleep(self._steady_interval if steady else self._poll_interval)

    async def observe(self) -> None:
        """One ``show bfd peers json``; wakes the reconciler when a state changed."""
        now = self._clock.now()
        try:
            text = await self._bfdd(["show bfd peers json"])
            fresh = parse_sessions(text, self._specs, self._sessions, now)
            self.last_error = ""
        except (OSError, RuntimeError, TimeoutError, ValueError) as e:
            self.last_error = str(e) or type(e).__name__
            fresh = {
                k: session(
                    k,
                    BfdState.UNKNOWN,
                    f"no answer from bfdd: {self.last_error}",
                    self._sessions,
                    now,
                )
                for k in self._sessions
            }
        changed = {k for k, s in fresh.items() if self._sessions.get(k, s).state is not s.state}
        self._sessions = fresh
        if changed:
            for k in sorted(changed):
                log_event(
                    log,
                    "bfd_session_changed",
                    peer=k,
                    state=str(fresh[k].state),
                    detail=fresh[k].detail,
                )
            self._wake()

    async def _bfdd(self, commands: Sequence[str]) -> str:
        """``commands`` on bfdd's vty socket (what vtysh speaks; no vtysh process)."""
        return await run_commands(self._dir / "bfdd.vty", commands, self._vtysh_timeout)


def _env_seconds(name: str, given: float | None, default: float) -> float:
    """``given`` if set, else the environment's positive number of seconds, else ``default``."""
    if given is not None:
        return given
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


def _exists(path: Path) -> bool:
    return path.exists()  # a stat of a local socket: not worth a thread


def _give_to_frr(path: Path, mode: int) -> None:
    """The daemons run as user frr: their directory and files are theirs (root only)."""
    os.chmod(path, mode)
    if os.geteuid() == 0:
        with contextlib.suppress(LookupError, OSError):
            shutil.chown(path, FRR_USER, FRR_USER)
