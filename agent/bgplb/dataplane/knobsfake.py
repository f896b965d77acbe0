"""In-memory fakes of the sysctl and IPVS-knob adapters (unit tests, the fake agent)."""

from __future__ import annotations

import errno

from .bounded import KernelCallError
from .knobs import IpvsTimeouts, SyncDaemon, SyncRole
from .sysctl import SysctlError

KERNEL_TIMEOUTS = IpvsTimeouts(tcp=900, tcp_fin=120, udp=300)


class FakeSysctls:
    """``values``: what exists. ``fail``: key -> errno for every read and write of it."""

    def __init__(self, values: dict[str, int] | None = None) -> None:
        self.values: dict[str, int] = dict(values or {})
        self.fail: dict[str, int] = {}
        self.writes: list[tuple[str, int]] = []

    def _path(self, key: str) -> str:
        return "/proc/sys/" + key.replace(".", "/")

    def _check(self, key: str) -> None:
        code = self.fail.get(key)
        if code is None and key not in self.values:
            code = errno.ENOENT
        if code is not None:
            name = errno.errorcode.get(code, str(code))
            raise SysctlError(key, self._path(key), code, name)

    async def read(self, key: str) -> int:
        self._check(key)
        return self.values[key]

    async def write(self, key: str, value: int) -> None:
        self._check(key)
        self.writes.append((key, value))
        self.values[key] = value


class FakeIpvsKnobs:
    """The kernel's timeouts and sync daemons. ``fail``: operation name -> errno."""

    def __init__(self) -> None:
        self.current = KERNEL_TIMEOUTS
        self.running: dict[SyncRole, SyncDaemon] = {}
        self.fail: dict[str, int] = {}
        self.calls: list[str] = []
        self.interfaces: set[str] = {"sync0"}

    def _maybe_fail(self, op: str) -> None:
        self.calls.append(op)
        code = self.fail.get(op)
        if code is not None:
            raise KernelCallError(op, code, errno.errorcode.get(code, str(code)))

    async def timeouts(self) -> IpvsTimeouts:
        self._maybe_fail("timeouts")
        return self.current

    async def set_timeouts(self, timeouts: IpvsTimeouts) -> None:
        self._maybe_fail("set_timeouts")
        self.current = timeouts

    async def daemons(self) -> tuple[SyncDaemon, ...]:
        self._maybe_fail("daemons")
        return tuple(self.running.values())

    async def start_daemon(self, daemon: SyncDaemon) -> None:
        self._maybe_fail("start_daemon")
        if daemon.role in self.running:
            raise KernelCallError("start", errno.EEXIST, "EEXIST")
        if daemon.interface not in self.interfaces:
            raise KernelCallError("start", errno.ENODEV, "ENODEV")
        self.running[daemon.role] = daemon

    async def stop_daemon(self, role: SyncRole) -> bool:
        self._maybe_fail("stop_daemon")
        return self.running.pop(role, None) is not None

    def close(self) -> None:
        self.calls.append("close")
