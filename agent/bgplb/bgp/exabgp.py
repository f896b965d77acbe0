"""The real speaker: ExaBGP 5 as a supervised child, driven through its text API.

Wiring: ExaBGP runs ``python -m bgplb.bgp.relay <runtime_dir>/api.sock`` as its API process;
the relay connects back to this object's unix server and copies bytes both ways. Commands
are pipelined (all written at once) and acks are counted as they come back, matched in order
to what was sent. ``_sent`` mirrors what ExaBGP holds per peer; ``set_routes`` sends only the
diff to it. Everything is re-sent when a peer comes up (ExaBGP event ``state: up``), when a
reload added or changed a peer, and after ExaBGP (re)starts. See docs/bgp.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path

from ..clock import Clock, SystemClock
from ..config import Config
from ..model import PeerKey, PeerState, PeerStatus, Route, RouteSet
from . import commands, events, process, render
from .base import SpeakerError
from .channel import AckQueue, Pending
from .supervisor import Supervisor, exabgp_binary

log = logging.getLogger("bgplb.bgp")
# Opt-in timing hook for bench/ (BGPLB_TIMING_LOG=1): one debug line per API write, emitted
# even when the agent logs at info, so benchmarks can time check result -> API command.
timing_log = logging.getLogger("bgplb.timing")
if os.environ.get("BGPLB_TIMING_LOG"):
    timing_log.setLevel(logging.DEBUG)

SOCKET_NAME = "api.sock"
CONFIG_NAME = "exabgp.conf"


class ExaBGPSpeaker:
    """Implements ``bgp.base.Speaker``. ``netns`` runs ExaBGP inside that network namespace."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        netns: str | None = None,
        exabgp: Sequence[str] | None = None,
        io_timeout: float = 5.0,
        stop_timeout: float = 3.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 60.0,
    ) -> None:
        self._clock = clock or SystemClock()
        self._netns = netns
        self._exabgp = list(exabgp) if exabgp else [exabgp_binary()]
        self._io_timeout = io_timeout
        # How long a started ExaBGP may take to connect its API relay. Slow machines (the lab's
        # TCG VM: Python start-up takes tens of seconds) raise it: BGPLB_EXABGP_CONNECT_TIMEOUT.
        env_connect = os.environ.get("BGPLB_EXABGP_CONNECT_TIMEOUT", "")
        self._supervisor = Supervisor(
            self._clock,
            self._argv,
            self._scrub,
            self._on_exit,
            connect_timeout=float(env_connect) if env_connect else 3 * io_timeout,
            stop_timeout=stop_timeout,
            backoff=(backoff_initial, backoff_max, stable_after),
        )
        self.commands_sent = 0
        self.commands_failed = 0
        self._config: Config | None = None
        self._rendered: render.Rendered | None = None
        self._secrets: dict[PeerKey, str] = {}
        self._wake: Callable[[], None] = lambda: None
        self._wanted: dict[PeerKey, frozenset[Route]] = {}
        self._sent: dict[PeerKey, frozenset[Route]] = {}
        self._status: dict[PeerKey, PeerStatus] = {}
        self._acks = AckQueue()
        self._writer: asyncio.StreamWriter | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._stopping = False

    # ------------------------------------------------------------------ Speaker protocol

    async def start(self, config: Config, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._install_config(config)
        self._status = {p.key: self._idle_status(p.key) for p in config.peers}
        path = self._socket_path()
        if len(str(path)) > 100:
            raise SpeakerError(f"runtime_dir too long for a unix socket: {path}")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._server = await asyncio.start_unix_server(self._on_relay, path=str(path))
        os.chmod(path, 0o600)
        self._supervisor.start()

    async def reconfigure(self, config: Config) -> None:
        old = self._rendered
        old_keys = set(self._status)
        self._install_config(config)
        assert self._rendered is not None
        new_blocks = self._rendered.blocks
        reset = {k for k, b in new_blocks.items() if old is None or old.blocks.get(k) != b}
        removed = old_keys - set(new_blocks)
        for key in removed:
            self._status.pop(key, None)
            self._wanted.pop(key, None)
        for key in reset | removed:
            self._sent.pop(key, None)
        for key in reset:
            if key not in self._status or self._status[key].state is not PeerState.UP:
                self._status[key] = self._idle_status(key)
        if not reset and not removed:
            return
        log.info("exabgp reload: new/changed peers %s, removed %s", sorted(reset), sorted(removed))
        if self._writer is None:
            return  # not running: the next start reads the new file
        reply = self._write([Pending("reload", reply=self._loop().create_future())])
        try:
            ok = await asyncio.wait_for(asyncio.shield(reply[0]), self._io_timeout)
        except TimeoutError:
            raise SpeakerError("exabgp did not acknowledge the reload") from None
        if not ok:
            raise SpeakerError("exabgp refused the reload")
        # ExaBGP reloads at the top of its next loop turn, before it reads more commands,
        # so anything we write from now on already sees the new neighbors.
        await self._sync()

    async def set_routes(self, routes: RouteSet) -> None:
        known = set(self._status)
        for key in set(routes) - known:
            log.debug("routes for unknown peer %s ignored", key)
        self._wanted = commands.unique({k: routes.get(k, frozenset()) for k in known})
        await self._sync()

    def advertised(self) -> RouteSet:
        return {
            k: rs
            for k, rs in self._sent.items()
            if k in self._status and self._status[k].state is PeerState.UP
        }

    def peers(self) -> Mapping[PeerKey, PeerStatus]:
        return dict(self._status)

    def restarts(self) -> int:
        return self._supervisor.restarts

    @property
    def pid(self) -> int | None:
        """ExaBGP's pid while it runs (for status pages and tests)."""
        return self._supervisor.pid

    async def stop(self) -> None:
        if self._stopping or self._config is None:
            return
        self._wanted = {k: frozenset() for k in self._status}
        try:
            await self._sync()
            await asyncio.wait_for(self._acks.idle.wait(), self._io_timeout)
        except (SpeakerError, TimeoutError) as e:
            log.warning("exabgp: withdraw before stop incomplete: %s", e)
        self._stopping = True
        await self._supervisor.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
        if self._writer is not None:
            self._writer.close()
        with contextlib.suppress(FileNotFoundError):
            self._socket_path().unlink()
        for key in self._status:
            self._status[key] = self._peer_status(key, PeerState.DOWN, "stopped")
        self._sent.clear()

    # ------------------------------------------------------------------ config

    def _install_config(self, config: Config) -> None:
        try:
            secrets = render.read_secrets(config)
            relay = [sys.executable, "-m", "bgplb.bgp.relay", str(self._socket_path(config))]
            rendered = render.render(config, relay, secrets)
            render.ensure_dir(config.node.runtime_dir)
            render.write_private(config.node.runtime_dir / CONFIG_NAME, rendered.text)
        except (render.RenderError, OSError) as e:
            raise SpeakerError(f"cannot write exabgp config: {e}") from e
        self._config, self._rendered, self._secrets = config, rendered, secrets

    def _socket_path(self, config: Config | None = None) -> Path:
        cfg = config or self._config
        assert cfg is not None
        return cfg.node.runtime_dir / SOCKET_NAME

    def _scrub(self, text: str) -> str:
        """ExaBGP's log line as we log it: secrets hidden, known harmless advice dropped."""
        if "environment file missing" in text or "exabgp env >" in text:
            return ""
        for secret in self._secrets.values():
            text = text.replace(secret, "<md5 secret>")
        if "md5-password" in text:
            return text.split("md5-password", 1)[0] + "md5-password <hidden>"
        return text

    # ------------------------------------------------------------------ sending

    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def _write(self, items: Iterable[Pending]) -> list[asyncio.Future[bool]]:
        """Queue commands on the relay without waiting (pipelining); acks are counted later."""
        items = list(items)
        if self._writer is None or not items:
            return []
        self._writer.write("".join(i.text + "\n" for i in items).encode())
        self._acks.extend(items)
        self.commands_sent += len(items)
        if timing_log.isEnabledFor(logging.DEBUG):
            timing_log.debug(
                "exabgp api: %d command(s) written",
                len(items),
                extra={"event": "speaker_commands_written", "first": items[0].text[:200]},
            )
        return [i.reply for i in items if i.reply is not None]

    async def _drain(self) -> None:
        writer = self._writer
        if writer is None:
            return
        try:
            await asyncio.wait_for(writer.drain(), self._io_timeout)
        except (TimeoutError, ConnectionError) as e:
            self._relay_lost(f"write to exabgp failed: {e!r}")
            raise SpeakerError(f"exabgp API write failed: {e!r}") from None

    async def _sync(self) -> None:
        """Send each peer the diff between what ExaBGP holds and what we want."""
        if self._writer is None:
            return
        items: list[Pending] = []
        held: dict[PeerKey, frozenset[Route]] = {}
        diffs = commands.diff(self._sent, self._wanted, self._status)
        for key, d in diffs.items():
            bad: set[Route] = set()
            items += [Pending(commands.withdraw(key, r), key) for r in d.withdraw]
            for r in d.announce:
                try:
                    items.append(Pending(commands.announce(key, r), key, r))
                except commands.CommandError as e:
                    log.error("route %s for %s not sent: %s", r.prefix, key, e)
                    bad.add(r)
            held[key] = self._wanted.get(key, frozenset()) - bad
        self._sent.update(held)
        self._write(items)
        await self._drain()

    def _resend(self, key: PeerKey) -> None:
        """A session came up: announce everything ExaBGP holds for it again (idempotent)."""
        routes = commands.ordered(self._sent.get(key, frozenset()))
        self._write(Pending(commands.announce(key, r), key, r) for r in routes)

    # ------------------------------------------------------------------ receiving

    def _on_line(self, line: str) -> None:
        event = events.parse_line(line)
        if isinstance(event, events.Ack):
            self._on_ack(event.ok)
        elif isinstance(event, events.StateEvent):
            self._on_state(event)
        elif event.text:
            log.debug("exabgp: %s", event.text[:500])

    def _on_ack(self, ok: bool) -> None:
        item = self._acks.ack(ok)
        if item is None:
            log.warning("exabgp: unexpected ack %s", "done" if ok else "error")
            return
        if ok:
            return
        self.commands_failed += 1
        log.warning("exabgp refused: %s", item.text)
        if item.route is not None and item.route in self._sent.get(item.peer, frozenset()):
            # Not held by ExaBGP after all: forget it, so the next set_routes retries it.
            self._sent[item.peer] = self._sent[item.peer] - {item.route}

    def _on_state(self, event: events.StateEvent) -> None:
        if event.peer not in self._status:
            return
        old = self._status[event.peer]
        reason = event.reason if event.state is PeerState.DOWN else ""
        self._status[event.peer] = self._peer_status(event.peer, event.state, reason)
        if event.state is PeerState.UP:
            self._resend(event.peer)
            self._spawn_task(self._drain_quietly())
        if event.state is not old.state:
            level = logging.WARNING if event.state is PeerState.DOWN else logging.INFO
            log.log(
                level, "bgp peer %s %s%s", event.peer, event.state, f" ({reason})" if reason else ""
            )
            self._wake()

    def _idle_status(self, key: PeerKey) -> PeerStatus:
        """Before any session event. A TCP MD5 key mismatch looks exactly like this forever:
        the kernel drops every segment silently, ExaBGP never even reports "connected"."""
        reason = "no session established yet"
        if key in self._secrets:
            reason += " (TCP MD5 is on: a wrong key on either side keeps it here silently)"
        return self._peer_status(key, PeerState.IDLE, reason)

    def _peer_status(self, key: PeerKey, state: PeerState, reason: str = "") -> PeerStatus:
        return PeerStatus(key=key, state=state, reason=reason, since=self._clock.now())

    async def _drain_quietly(self) -> None:
        with contextlib.suppress(SpeakerError):
            await self._drain()

    def _spawn_task(self, coro: Coroutine[object, None, object]) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ the relay link

    async def _on_relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proc = self._supervisor.proc
        try:
            hello = await asyncio.wait_for(reader.readline(), self._io_timeout)
        except (TimeoutError, OSError, ValueError):
            hello = b""
        if proc is None or hello.split() != [b"hello", str(proc.pid).encode()] or self._writer:
            log.warning("exabgp relay: unexpected connection %r, closed", hello[:40])
            writer.close()
            return
        self._writer = writer
        self._supervisor.connected()
        self._sent = {}
        self._acks.forget()
        log.info("exabgp api connected (pid %s)", proc.pid)
        self._spawn_task(self._sync_quietly())
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                self._on_line(line.decode("utf-8", errors="replace"))
        except (OSError, ValueError) as e:
            log.warning("exabgp relay read failed: %r", e)
        finally:
            if self._writer is writer:
                self._relay_lost("the api relay closed")
            writer.close()

    async def _sync_quietly(self) -> None:
        try:
            await self._sync()
        except SpeakerError as e:
            log.warning("exabgp: resync failed: %s", e)

    def _relay_lost(self, why: str) -> None:
        """Without the relay we can neither steer nor observe ExaBGP: restart it (ExaBGP
        would keep announcing what it holds, and a respawned relay gets no state replay)."""
        self._writer = None
        self._acks.forget()
        if not self._stopping:
            self._supervisor.restart(why)

    # ------------------------------------------------------------------ supervision

    def _argv(self) -> list[str]:
        assert self._config is not None
        conf = self._config.node.runtime_dir / CONFIG_NAME
        return process.exabgp_argv(self._exabgp, conf, self._netns)

    def _on_exit(self, code: int | str) -> None:
        """ExaBGP exited (the supervisor restarts it): nothing is held, every peer is down."""
        self._writer = None
        self._sent = {}
        for key in self._status:
            self._status[key] = self._peer_status(
                key, PeerState.DOWN, f"exabgp exited ({code}), restarting"
            )
        self._wake()
