"""Operator drains: which services (or the whole node) are drained, persisted in ``state_dir``.

Times are ``clock.now()`` values (monotonic). A drain loaded from disk gets ``-inf``: its drain
delay is over, so a drained node stays withdrawn across restarts instead of re-announcing with
draining attributes. The file also keeps each drain's wall-clock time and why the node was
drained when the agent did it (fail-safe), for status and the operator.

Failures never refuse a drain and never stop the agent (docs/operations.md#state-files):

- a change is applied in memory first (the safe direction), then written atomically; when the
  write fails (disk full, read-only) the change stays in force, ``persisted`` is False with the
  reason, and :meth:`AdminStore.retry` (each reconcile pass) writes it once the disk allows;
- the agent's store defers its writes (``deferred_writes``): the change is in force at once and
  :meth:`AdminStore.persist` writes it in a worker thread (tmp + fsync + rename + dir fsync:
  10-100 ms the event loop no longer waits for; bench/RESULTS.md "Event loop lag");
- an unreadable, corrupt or unknown-version file is renamed ``admin.json.corrupt-<time>``
  and the node starts **drained** (nobody knows which drains were in force) until an operator
  undrains it; ``fail_safe`` says why. Version 1 files (N-1) are migrated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .clock import Clock
from .logs import log_event
from .statefile import FileHealth, set_aside, why, write_atomic

log = logging.getLogger(__name__)

STATE_FILE = "admin.json"
FORMAT_VERSION = 2  # 2: + drain wall times, node_drain_reason; 1 is migrated on load
RETRY_INTERVAL = 5.0  # seconds between two retries of a write that failed
START_DRAINED_REASON = (
    "node.start_drained: no admin.json in state_dir (a new or replaced disk); the node "
    "starts drained until an operator undrains (bgp-lb undrain --all)"
)


class AdminStateError(Exception):
    """The persisted admin state cannot be read (the message names the file and why)."""


@dataclass(frozen=True)
class AdminState:
    node_drained_at: float | None = None
    drained: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def drained_since(self, service: str) -> float | None:
        """When ``service`` started draining (service or node drain, the earlier one)."""
        times = [t for t in (self.node_drained_at, self.drained.get(service)) if t is not None]
        return min(times) if times else None


@dataclass(frozen=True)
class _Loaded:
    state: AdminState
    walls: dict[str | None, float | None]  # None: the node
    reason: str | None
    absent: bool = False  # no admin.json: a fresh state_dir (a new disk)


class AdminStore:
    """The drain state, kept in memory and mirrored to ``<state_dir>/admin.json``."""

    def __init__(
        self,
        state_dir: Path | str,
        clock: Clock,
        start_drained: bool = False,
        *,
        deferred_writes: bool = False,
    ) -> None:
        self._dir = Path(state_dir)
        self._path = self._dir / STATE_FILE
        self._clock = clock
        self.health = FileHealth(self._path)
        self.fail_safe: str | None = None  # why the agent drained the node itself
        self.persisted = True
        self._retry_at = -math.inf
        self._deferred = False  # the writes at start (fail-safe, start_drained) happen at once
        self._dirty = False  # deferred: a change persist() has not written yet
        self._persisting = asyncio.Lock()  # one write at a time: they share a temporary file
        try:
            loaded = _load(self._path)
        except AdminStateError as e:
            loaded = self._fail_safe(str(e))
        if loaded.absent and start_drained:
            loaded = self._start_drained()
        self._state = loaded.state
        self._walls = loaded.walls
        if self.fail_safe is None and loaded.reason is not None:
            self.fail_safe = loaded.reason  # drained by a fail-safe before a restart
            if loaded.reason != START_DRAINED_REASON:  # start_drained: no file problem
                self.health.problem = loaded.reason
        self._deferred = deferred_writes

    @property
    def state(self) -> AdminState:
        return self._state

    @property
    def path(self) -> Path:
        return self._path

    @property
    def problem(self) -> str | None:
        """Why the drains are not as the operator left them, or not on disk; None: fine."""
        return self.health.problem

    def drain(self, service: str | None) -> AdminState:
        """Drain ``service`` (``None``: the node). Draining again keeps the original time.
        Never refused: a failed write leaves the drain in force, not persisted."""
        s = self._state
        now = self._clock.now()
        if service is None:
            if s.node_drained_at is not None:
                return self._retry_now(s)
            new = AdminState(now, s.drained)
        else:
            if service in s.drained:
                return self._retry_now(s)
            new = AdminState(s.node_drained_at, MappingProxyType({**s.drained, service: now}))
        self._walls[service] = self._clock.wall()
        return self._commit(new)

    def undrain(self, service: str | None) -> AdminState:
        """Undrain ``service`` (``None``: the node; service drains stay). Idempotent. An
        undrain of the node ends a fail-safe drain."""
        s = self._state
        if service is None:
            was_fail_safe, self.fail_safe = self.fail_safe, None
            if s.node_drained_at is None:
                if was_fail_safe:
                    self._write()
                return self._retry_now(s)
            new = AdminState(None, s.drained)
        else:
            if service not in s.drained:
                return self._retry_now(s)
            rest = {k: v for k, v in s.drained.items() if k != service}
            new = AdminState(s.node_drained_at, MappingProxyType(rest))
        self._walls.pop(service, None)
        return self._commit(new)

    def retry(self) -> bool:
        """Write the state if an earlier write failed (at most every RETRY_INTERVAL seconds);
        True when everything is on disk."""
        if self.persisted:
            return True
        if self._clock.now() < self._retry_at:
            return False
        self._write()
        return self.persisted

    def _retry_now(self, state: AdminState) -> AdminState:
        if not self.persisted:
            self._write()
        return state

    def _commit(self, new: AdminState) -> AdminState:
        self._state = new  # in force at once, whatever the disk says
        self._write()
        return new

    def _write(self) -> None:
        if self._deferred:
            self._dirty = True  # persist() writes it, off the event loop
            return
        self._written(self._try_write(self._document()))

    async def persist(self, wait: float | None = None) -> None:
        """Write the changes made since the last write, in a worker thread (deferred writes;
        a no-op otherwise). ``persisted`` and ``problem`` say how it went. Writes are one at
        a time and each writes the state of *now*, so the file ends at the latest state.
        A write is never abandoned half-way: a cancelled caller, or one that stops waiting
        after ``wait`` seconds (a stalled disk must not stall a reconcile pass), leaves it
        running and recorded."""
        job = asyncio.shield(self._persist())
        if wait is None:
            await job
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job, wait)

    async def _persist(self) -> None:
        async with self._persisting:
            while self._dirty:
                self._dirty = False
                doc = self._document()
                self._written(await asyncio.to_thread(self._try_write, doc))

    def _document(self) -> bytes:
        return _encode(self._state, self._walls, self.fail_safe, self._clock.wall())

    def _try_write(self, doc: bytes) -> OSError | None:
        """The write itself (may run in a worker thread: touches nothing of ``self``)."""
        try:
            write_atomic(self._path, doc)
        except OSError as e:
            return e
        return None

    def _written(self, error: OSError | None) -> None:
        if error is not None:
            reason = f"state_dir {why(error, self._dir)}"
            self._retry_at = self._clock.now() + RETRY_INTERVAL
            if self.persisted or self.health.problem != reason:
                log_event(
                    log,
                    "state_file_unwritable",
                    level=logging.ERROR,
                    file=self._path,
                    reason=reason,
                    effect="drains stay in force in memory, written when the disk allows",
                )
            self.persisted = False
            self.health.failed(reason)
            return
        if not self.persisted:
            log_event(log, "state_file_persisted", file=self._path)
        self.persisted = True
        if self.fail_safe is None or self.fail_safe == START_DRAINED_REASON:
            self.health.fine()
        else:
            self.health.problem = self.fail_safe

    def _fail_safe(self, error: str) -> _Loaded:
        """The file cannot be trusted: set it aside, drain the node, say why."""
        aside = set_aside(self._path, self._clock.wall()) if self._path.exists() else None
        kept = f"kept as {aside.name}" if aside is not None else "could not be renamed"
        self.fail_safe = f"{error}; {kept}; the node starts drained until an operator undrains"
        log_event(
            log,
            "state_file_unreadable",
            level=logging.ERROR,
            file=self._path,
            reason=self.fail_safe,
        )
        self.health.failed(self.fail_safe)
        state = AdminState(node_drained_at=-math.inf)
        self._state, self._walls = state, {None: self._clock.wall()}
        self._write()  # a fresh file saying the node is drained, and why
        return _Loaded(state, self._walls, self.fail_safe)

    def _start_drained(self) -> _Loaded:
        """``node.start_drained`` on a fresh state_dir (no admin.json: a new or replaced
        disk): the node starts drained and says why; the file is written at once, so a
        restart before the operator undrains keeps it drained. An existing admin.json always
        wins (an undrained node restarting stays undrained)."""
        self.fail_safe = START_DRAINED_REASON
        log_event(log, "node_start_drained", file=self._path, reason=self.fail_safe)
        state = AdminState(node_drained_at=-math.inf)
        self._state, self._walls = state, {None: self._clock.wall()}
        self._write()
        return _Loaded(state, self._walls, self.fail_safe)


# --------------------------------------------------------------------------- file format


def _encode(
    state: AdminState, walls: Mapping[str | None, float | None], reason: str | None, now: float
) -> bytes:
    doc = {
        "version": FORMAT_VERSION,
        "node_drained": state.node_drained_at is not None,
        "node_drained_since": walls.get(None) if state.node_drained_at is not None else None,
        "node_drain_reason": reason if state.node_drained_at is not None else None,
        "drained": sorted(state.drained),
        "drained_since": {name: walls.get(name) for name in sorted(state.drained)},
        "written_at": now,
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def _load(path: Path) -> _Loaded:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return _Loaded(AdminState(), {}, None, absent=True)
    except OSError as e:
        raise AdminStateError(f"cannot read it: {why(e, path)}") from e
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise AdminStateError(f"not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise AdminStateError("not a JSON object")
    version = doc.get("version")
    if version == 1:
        doc = _migrate_v1(doc)
    elif version != FORMAT_VERSION:
        raise AdminStateError(
            f"unknown format version {version!r} (this agent reads 1 and {FORMAT_VERSION})"
        )
    return _decode_v2(doc)


def _migrate_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 1 (bgp-lb <= 5a7e1fe): names only; the drains date from ``written_at``."""
    written = doc.get("written_at")
    since = float(written) if isinstance(written, int | float) else None
    drained = doc.get("drained")
    names = drained if isinstance(drained, list) else []
    return {
        "version": FORMAT_VERSION,
        "node_drained": doc.get("node_drained"),
        "node_drained_since": since,
        "node_drain_reason": None,
        "drained": drained,
        "drained_since": {n: since for n in names if isinstance(n, str)},
    }


def _decode_v2(doc: dict[str, Any]) -> _Loaded:
    node = doc.get("node_drained")
    drained = doc.get("drained")
    if not isinstance(node, bool) or not (
        isinstance(drained, list) and all(isinstance(n, str) for n in drained)
    ):
        raise AdminStateError("'node_drained' must be a bool, 'drained' a list of names")
    since = doc.get("drained_since") or {}
    reason = doc.get("node_drain_reason")
    if not isinstance(since, dict) or not (reason is None or isinstance(reason, str)):
        raise AdminStateError("'drained_since' must be an object, 'node_drain_reason' a text")
    walls: dict[str | None, float | None] = {n: _wall(since.get(n)) for n in drained}
    if node:
        walls[None] = _wall(doc.get("node_drained_since"))
    return _Loaded(
        AdminState(
            node_drained_at=-math.inf if node else None,
            drained=MappingProxyType(dict.fromkeys(drained, -math.inf)),
        ),
        walls,
        reason if node else None,
    )


def _wall(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
