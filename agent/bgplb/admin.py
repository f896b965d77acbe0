"""Operator drains: which services (or the whole node) are drained, persisted in ``state_dir``.

Times are ``clock.now()`` values (monotonic). A drain loaded from disk gets ``-inf``: its drain
delay is over, so a drained node stays withdrawn across restarts instead of re-announcing with
draining attributes. Every change is written atomically (tmp + fsync + rename + directory fsync)
before the call returns.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .clock import Clock

STATE_FILE = "admin.json"
FORMAT_VERSION = 1


class AdminStateError(Exception):
    """The persisted admin state cannot be read or written."""


@dataclass(frozen=True)
class AdminState:
    node_drained_at: float | None = None
    drained: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def drained_since(self, service: str) -> float | None:
        """When ``service`` started draining (service or node drain, the earlier one)."""
        times = [t for t in (self.node_drained_at, self.drained.get(service)) if t is not None]
        return min(times) if times else None


class AdminStore:
    """The drain state, kept in memory and mirrored to ``<state_dir>/admin.json``."""

    def __init__(self, state_dir: Path | str, clock: Clock) -> None:
        self._dir = Path(state_dir)
        self._path = self._dir / STATE_FILE
        self._clock = clock
        self._state = _load(self._path)

    @property
    def state(self) -> AdminState:
        return self._state

    @property
    def path(self) -> Path:
        return self._path

    def drain(self, service: str | None) -> AdminState:
        """Drain ``service`` (``None``: the node). Draining again keeps the original time."""
        s = self._state
        now = self._clock.now()
        if service is None:
            if s.node_drained_at is not None:
                return s
            new = AdminState(now, s.drained)
        else:
            if service in s.drained:
                return s
            new = AdminState(s.node_drained_at, MappingProxyType({**s.drained, service: now}))
        return self._commit(new)

    def undrain(self, service: str | None) -> AdminState:
        """Undrain ``service`` (``None``: the node; service drains stay). Idempotent."""
        s = self._state
        if service is None:
            if s.node_drained_at is None:
                return s
            new = AdminState(None, s.drained)
        else:
            if service not in s.drained:
                return s
            rest = {k: v for k, v in s.drained.items() if k != service}
            new = AdminState(s.node_drained_at, MappingProxyType(rest))
        return self._commit(new)

    def _commit(self, new: AdminState) -> AdminState:
        _write_atomic(self._path, _encode(new, self._clock.wall()))
        self._state = new
        return new


def _encode(state: AdminState, wall: float) -> bytes:
    doc = {
        "version": FORMAT_VERSION,
        "node_drained": state.node_drained_at is not None,
        "drained": sorted(state.drained),
        "written_at": wall,
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def _load(path: Path) -> AdminState:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return AdminState()
    except OSError as e:
        raise AdminStateError(f"cannot read {path}: {e.strerror}") from e
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise AdminStateError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
        raise AdminStateError(f"{path}: unknown format (expected version {FORMAT_VERSION})")
    node = doc.get("node_drained")
    drained = doc.get("drained")
    if not isinstance(node, bool) or not (
        isinstance(drained, list) and all(isinstance(n, str) for n in drained)
    ):
        raise AdminStateError(f"{path}: 'node_drained' must be a bool, 'drained' a list of names")
    return AdminState(
        node_drained_at=-math.inf if node else None,
        drained=MappingProxyType(dict.fromkeys(drained, -math.inf)),
    )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.fchmod(fd, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        raise AdminStateError(f"cannot write {path}: {e.strerror}") from e
