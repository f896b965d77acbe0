"""The real speaker: ExaBGP 5 as a supervised child, driven through its text API.

Wiring: ExaBGP runs ``python -m bgplb.bgp.relay <runtime_dir>/api.sock`` as its API process;
the relay connects back to this object's unix server and copies bytes both ways. Commands
are pipelined (all written at once) and acks are counted as they come back, matched in order
to what was sent. ``_sent`` mirrors what ExaBGP holds per peer; ``set_routes`` sends only the
diff to it. Everything is re-sent when a peer comes up (ExaBGP event ``state: up``), when a
reload added or changed a peer, and after ExaBGP (re)starts. See docs/bgp.md.

Supervision of the channel: acks have a deadline that scales with the queue
(``channel.AckDeadline``), an idle channel is probed with ``version`` every ``heartbeat``
seconds, and a refused command is retried a bounded number of times (``retry.RetryBook``).
A missed deadline or a withdraw that keeps being refused restarts ExaBGP (kill, respawn,
re-send the whole set); the supervisor (supervisor.py) owns the process, configfile.py its
config file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine, Mapping, Sequence

from ..clock import Clock, SystemClock
from ..config import Config
from ..model import PeerKey, PeerState, PeerStatus, Route, RouteSet
from . import commands, events, process
from .base import SpeakerError, Supervision
from .channel import AckDeadline, Kind, Pending
from .configfile import SOCKET_NAME as SOCKET_NAME  # re-exported: reload.py
from .configfile import ConfigFile
from .link import ApiLink
from .retry import RetryBook
from .scrub import Scrubber
from .supervisor import Supervisor, exabgp_binary

log = logging.getLogger("bgplb.bgp")


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
        stable_after: float = 30.0,
        ack_deadline: AckDeadline | None = None,
        heartbeat: float = 5.0,
        max_retries: int = 3,
        retry_delay: float = 1.0,
        stall_timeout: float | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
        self._scrubber = Scrubber()
        self._netns = netns
        self._exabgp = list(exabgp) if exabgp else [exabgp_binary()]
        self._io_timeout = io_timeout
        # How long a starting ExaBGP may go without any progress (CPU, output) before it is
        # killed; a start that progresses is never cut short. BGPLB_EXABGP_CONNECT_TIMEOUT
        # (the lab's TCG VM) raises it.
        env_connect = os.environ.get("BGPLB_EXABGP_CONNECT_TIMEOUT", "")
        if stall_timeout is None:
            stall_timeout = float(env_connect) if env_connect else 3 * io_timeout
        self._supervisor = Supervisor(
            self._clock,
            self._argv,
            self._scrubber.scrub,
            self._on_exit,
            stall_timeout=stall_timeout,
            stop_timeout=stop_timeout,
            backoff=(backoff_initial, backoff_max, stable_after),
        )
        self._link = ApiLink(
            self._clock,
            self._supervisor,
            io_timeout=io_timeout,
            deadline=ack_deadline or AckDeadline(),
            heartbeat=heartbeat,
            on_connect=self._on_connect,
            on_ack=self._on_ack,
            on_state=self._on_state,
        )
        self._retry_delay = retry_delay
        self._retries = RetryBook(max_retries)
        self.command_retries = 0
        self.commands_failed = 0
        self._file = ConfigFile(self._scrubber)
        # the rendered ExaBGP config as a state file: status/metrics show a failed write
        self.config_health = self._file.health
        self._wake: Callable[[], None] = lambda: None
        self._wanted: dict[PeerKey, frozenset[Route]] = {}
        self._sent: dict[PeerKey, frozenset[Route]] = {}
        self._status: dict[PeerKey, PeerStatus] = {}
        self._retry_due = False
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._stopping = False

    # ------------------------------------------------------------------ Speaker protocol

    async def start(self, config: Config, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._install_config(config)
        self._status = {p.key: self._idle_status(p.key) for p in config.peers}
        path = self._file.socket_path()
        if len(str(path)) > 100:
            raise SpeakerError(f"runtime_dir too long for a unix socket: {path}")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._server = await asyncio.start_unix_server(self._link.serve, path=str(path))
        os.chmod(path, 0o600)
        self._supervisor.start()
        self._spawn_task(self._link.watch())

    async def reconfigure(self, config: Config) -> None:
        """All or nothing (see ``base.Speaker.reconfigure``): nothing of ours switches
        before ExaBGP acknowledged the reload; on failure the old file is put back."""
        old = self._file.rendered
        rendered, secrets = self._file.prepare(config)
        reset = {k for k, b in rendered.blocks.items() if old is None or old.blocks.get(k) != b}
        removed = set(self._status) - set(rendered.blocks)
        await self._file.write_off_loop(config, rendered)
        if (reset or removed) and self._link.connected:
            log.info(
                "exabgp reload: new/changed peers %s, removed %s", sorted(reset), sorted(removed)
            )
            try:
                await self._reload()
            except SpeakerError:
                if old is not None and self._file.config is not None:
                    with contextlib.suppress(SpeakerError):
                        await self._file.write_off_loop(self._file.config, old)
                raise
        self._file.commit(config, rendered, secrets)
        for key in removed:
            self._status.pop(key, None)
            self._wanted.pop(key, None)
        for key in reset | removed:
            self._sent.pop(key, None)
        for key in reset:
            if key not in self._status or self._status[key].state is not PeerState.UP:
                self._status[key] = self._idle_status(key)
        if reset or removed:
            # ExaBGP reloads at the top of its next loop turn, before it reads more
            # commands, so anything we write from now on already sees the new neighbors.
            await self._sync()

    async def _reload(self) -> None:
        reply = self._link.write(
            [Pending("reload", reply=self._loop().create_future(), kind=Kind.RELOAD)]
        )
        try:
            ok = await asyncio.wait_for(asyncio.shield(reply[0]), self._io_timeout)
        except TimeoutError:
            # It may be reloading or wedged: restart it on the old file (put back by the
            # caller; every spawn rewrites the file from the config in force).
            self._link.lost("the reload was not acknowledged", "reload_failed", kill=True)
            raise SpeakerError("exabgp did not acknowledge the reload") from None
        if not ok:  # ExaBGP rolls a refused reload back: its old config stays in force
            raise SpeakerError("exabgp refused the reload")

    async def set_routes(self, routes: RouteSet) -> None:
        known = set(self._status)
        for key in set(routes) - known:
            log.debug("routes for unknown peer %s ignored", key)
        self._wanted = commands.unique({k: routes.get(k, frozenset()) for k in known})
        self._retries.follow(self._wanted)
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

    def supervision(self) -> Supervision:
        return Supervision(
            ack_timeouts=self._link.ack_timeouts,
            command_retries=self.command_retries,
            commands_refused=self.commands_failed,
            restart_reasons=dict(self._supervisor.restart_reasons),
            last_backoff_seconds=self._supervisor.last_wait,
        )

    @property
    def commands_sent(self) -> int:
        """Route and reload commands written (the agent's bgplb_speaker_commands_total)."""
        return self._link.commands_sent

    @property
    def pid(self) -> int | None:
        """ExaBGP's pid while it runs (for status pages and tests)."""
        return self._supervisor.pid

    @property
    def running(self) -> bool:
        """ExaBGP's process exists and has not exited (status ``processes``, doctor)."""
        proc = self._supervisor.proc
        return proc is not None and proc.returncode is None

    async def stop(self) -> None:
        if self._stopping or self._file.config is None:
            return
        self._wanted = {k: frozenset() for k in self._status}
        try:
            await self._sync()
            await asyncio.wait_for(self._link.acks.idle.wait(), self._io_timeout)
        except (SpeakerError, TimeoutError) as e:
            log.warning("exabgp: withdraw before stop incomplete: %s", e)
        self._stopping = self._link.stopping = True
        await self._supervisor.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
        self._link.close()
        with contextlib.suppress(FileNotFoundError):
            self._file.socket_path().unlink()
        for key in self._status:
            self._status[key] = self._peer_status(key, PeerState.DOWN, "stopped")
        self._sent.clear()

    # ------------------------------------------------------------------ config

    def _install_config(self, config: Config) -> None:
        """Render and write; a failed write does not stop the agent (configfile.py)."""
        self._file.install(config)

    # ------------------------------------------------------------------ sending

    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    async def _sync(self) -> None:
        """Send each peer the diff between what ExaBGP holds and what we want."""
        if not self._link.connected:
            return
        items: list[Pending] = []
        held: dict[PeerKey, frozenset[Route]] = {}
        wanted = {k: rs - self._retries.held_back(k) for k, rs in self._wanted.items()}
        diffs = commands.diff(self._sent, wanted, self._status)
        for key, d in diffs.items():
            bad: set[Route] = set()
            items += [
                Pending(commands.withdraw(key, r), key, r, kind=Kind.WITHDRAW) for r in d.withdraw
            ]
            for r in d.announce:
                try:
                    items.append(Pending(commands.announce(key, r), key, r))
                except commands.CommandError as e:
                    log.error("route %s for %s not sent: %s", r.prefix, key, e)
                    bad.add(r)
            held[key] = wanted.get(key, frozenset()) - bad
        self._sent.update(held)
        self._link.write(items)
        await self._link.drain()

    def _resend(self, key: PeerKey) -> None:
        """A session came up: announce everything ExaBGP holds for it again (idempotent)."""
        routes = commands.ordered(self._sent.get(key, frozenset()))
        self._link.write(Pending(commands.announce(key, r), key, r) for r in routes)

    # ------------------------------------------------------------------ receiving

    def _on_connect(self) -> None:
        """A fresh ExaBGP's API connected: it holds nothing; send it the whole set."""
        self._sent = {}
        self._retries.reset()
        self._spawn_task(self._sync_quietly())

    def _on_ack(self, item: Pending, ok: bool) -> None:
        if not ok:
            self.commands_failed += 1
            log.warning("exabgp refused: %s", item.text)
        if item.route is None:
            return
        if ok:
            self._retries.accepted(item.peer, item.route)
        else:
            self._on_refused(item, item.route)

    def _on_refused(self, item: Pending, route: Route) -> None:
        """Retry a refused announce/withdraw a bounded number of times; then give the
        announce up, and restart ExaBGP for a withdraw (see retry.py)."""
        peer = item.peer
        sent = self._sent.get(peer, frozenset())
        if peer not in self._status:
            return  # the peer is gone (reload): nothing to retry
        retry = self._retries.refused(peer, route)
        if item.kind is Kind.ANNOUNCE:
            if route in sent:  # not held by ExaBGP after all
                self._sent[peer] = sent - {route}
            if not retry:
                self._retries.give_up(peer, route)
                log.error(
                    "exabgp keeps refusing %s; given up until the route changes or exabgp restarts",
                    item.text,
                )
                return
        elif not retry:
            self._link.lost(f"exabgp keeps refusing {item.text!r}", "withdraw_refused")
            return
        elif all(r.prefix != route.prefix for r in sent):
            self._sent[peer] = sent | {route}  # ExaBGP may still hold it: withdraw again
        self.command_retries += 1
        if not self._retry_due:  # one retry pass for all refusals of the moment
            self._retry_due = True
            self._spawn_task(self._retry_later())

    async def _retry_later(self) -> None:
        await self._clock.sleep(self._retry_delay)
        self._retry_due = False
        await self._sync_quietly()

    def _on_state(self, event: events.StateEvent) -> None:
        if event.peer not in self._status:
            return
        old = self._status[event.peer]
        reason = event.reason if event.state is PeerState.DOWN else ""
        self._status[event.peer] = self._peer_status(event.peer, event.state, reason)
        if event.state is PeerState.UP:
            self._resend(event.peer)
            self._spawn_task(self._link.drain_quietly())
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
        if key in self._file.secrets:
            reason += " (TCP MD5 is on: a wrong key on either side keeps it here silently)"
        return self._peer_status(key, PeerState.IDLE, reason)

    def _peer_status(self, key: PeerKey, state: PeerState, reason: str = "") -> PeerStatus:
        return PeerStatus(key=key, state=state, reason=reason, since=self._clock.now())

    def _spawn_task(self, coro: Coroutine[object, None, object]) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sync_quietly(self) -> None:
        try:
            await self._sync()
        except SpeakerError as e:
            log.warning("exabgp: resync failed: %s", e)

    # ------------------------------------------------------------------ supervision

    def _argv(self) -> list[str]:
        """Before every spawn the file is written again from the config in force: a file
        corrupted, edited or removed while ExaBGP ran never survives a restart."""
        try:
            conf = self._file.rewrite()
        except SpeakerError as e:
            raise OSError(str(e)) from None
        return process.exabgp_argv(self._exabgp, conf, self._netns)

    def _on_exit(self, code: int | str) -> None:
        """ExaBGP exited (the supervisor restarts it): nothing is held, every peer is down."""
        self._link.reset()
        self._sent = {}
        for key in self._status:
            self._status[key] = self._peer_status(
                key, PeerState.DOWN, f"exabgp exited ({code}), restarting"
            )
        self._wake()
