"""Sysctls of the agent's network namespace, read and written under ``/proc/sys``.

One small adapter behind :class:`Sysctls` (the fake is ``FakeSysctls`` in knobsfake.py).
Every call runs in a worker thread under a deadline; failures leave as :class:`SysctlError`
naming the file and the errno. ``net.ipv4.vs.*`` exists only once ip_vs is loaded.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Protocol, TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 2.0


class SysctlError(Exception):
    """A sysctl could not be read or written; ``code`` is the errno (0: a timeout)."""

    def __init__(self, key: str, path: str, code: int, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.key = key
        self.path = path
        self.code = code


class Sysctls(Protocol):
    async def read(self, key: str) -> int: ...

    async def write(self, key: str, value: int) -> None: ...


def sysctl_path(root: Path, key: str) -> Path:
    return root / "proc/sys" / key.replace(".", "/")


class ProcSysctls:
    """The real adapter: ``root``/proc/sys (``root`` is "/" but for tests). Net sysctls are
    those of the network namespace of the thread that opens the file: ``executor`` (default:
    the loop's) runs the calls; the kernel tests pass one whose thread entered a namespace."""

    def __init__(
        self,
        root: Path = Path("/"),
        timeout: float = DEFAULT_TIMEOUT,
        executor: Executor | None = None,
    ) -> None:
        self._root = root
        self._timeout = timeout
        self._executor = executor

    async def read(self, key: str) -> int:
        path = sysctl_path(self._root, key)
        text = await self._bounded(key, path, path.read_text)
        try:
            return int(text.split()[0])
        except (ValueError, IndexError):
            raise SysctlError(key, str(path), errno.EINVAL, f"not a number: {text!r}") from None

    async def write(self, key: str, value: int) -> None:
        path = sysctl_path(self._root, key)

        def write() -> None:
            with path.open("w") as f:  # no truncation games: /proc takes one write
                f.write(f"{value}\n")

        await self._bounded(key, path, write)

    async def _bounded(self, key: str, path: Path, call: Callable[[], T]) -> T:
        try:
            loop = asyncio.get_running_loop()
            return await asyncio.wait_for(loop.run_in_executor(self._executor, call), self._timeout)
        except TimeoutError:
            raise SysctlError(key, str(path), 0, f"no answer within {self._timeout:g}s") from None
        except OSError as e:
            code = e.errno or 0
            name = errno.errorcode.get(code, str(code))
            raise SysctlError(key, str(path), code, f"{name} ({e.strerror})") from None
