"""Every kernel call made through pyroute2 goes through :func:`bounded`: a deadline, one error.

pyroute2 raises its own ``NetlinkError`` (the kernel's errno in ``.code``) or ``OSError``;
callers here only ever see :class:`KernelCallError` (a :class:`DataplaneError`) and look at
its errno when they treat "already there" / "already gone" as success.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterable, Awaitable, Iterator
from typing import Any, TypeVar

from pyroute2.netlink.exceptions import NetlinkError

from .base import DataplaneError

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0

EXISTS = frozenset({errno.EEXIST})
# "Not there" as the different subsystems say it: ENOENT (dest), ESRCH (IPVS service),
# EADDRNOTAVAIL (address), ENODEV (link).
MISSING = frozenset({errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL, errno.ENODEV})


class KernelCallError(DataplaneError):
    """A kernel call failed; ``code`` is the errno (0 when unknown, e.g. a timeout)."""

    def __init__(self, what: str, code: int, detail: str) -> None:
        super().__init__(f"{what}: {detail}")
        self.what = what
        self.code = code


async def bounded(call: Awaitable[T], limit: float, what: str) -> T:
    """Await ``call`` for at most ``limit`` seconds; failures become :class:`KernelCallError`."""
    try:
        return await asyncio.wait_for(call, limit)
    except TimeoutError as e:
        raise KernelCallError(what, 0, f"no answer from the kernel within {limit:g}s") from e
    except (NetlinkError, OSError) as e:
        code = int(getattr(e, "code", 0) or getattr(e, "errno", 0) or 0)
        reason = errno.errorcode.get(code, str(code))
        raise KernelCallError(what, code, f"{reason} ({e})") from e


async def changed(call: Awaitable[Any], already: frozenset[int]) -> bool:
    """Await a kernel change; False when it fails with an errno in ``already`` (the object is
    already there / already gone: nothing to do), True when it was made. Other errors raise."""
    try:
        await call
    except KernelCallError as e:
        if e.code in already:
            return False
        raise
    return True


async def collect(messages: Awaitable[Any]) -> list[Any]:
    """The messages of a dump, whether pyroute2 returns a list or an async generator."""
    result = await messages
    if isinstance(result, AsyncIterable):
        return [m async for m in result]
    return list(result)


@contextlib.contextmanager
def as_dataplane_error(what: str) -> Iterator[None]:
    """Keep the Protocol's contract: every failure of ``what`` leaves as a DataplaneError
    (pyroute2 raises more than OSError); the message names ``what``."""
    try:
        yield
    except KernelCallError as e:
        raise DataplaneError(f"{what}: {e}") from e
    except DataplaneError:
        raise
    except Exception as e:
        raise DataplaneError(f"{what}: {type(e).__name__}: {e}") from e
