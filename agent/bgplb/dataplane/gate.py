"""A shared/exclusive gate for asyncio: calls that may overlap (``shared``) and calls that
must run alone (``exclusive``), without starving the exclusive ones."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Gate:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._shared = 0  # shared calls in flight
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Alone: no other exclusive call and no shared call in flight."""
        async with self._lock:
            await self._idle.wait()
            yield

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """With other shared calls; waits while an exclusive call runs or waits."""
        async with self._lock:
            self._shared += 1
            self._idle.clear()
        try:
            yield
        finally:
            self._shared -= 1
            if self._shared == 0:
                self._idle.set()
