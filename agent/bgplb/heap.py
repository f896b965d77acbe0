"""Long-lived objects out of the cyclic garbage collector's reach (``gc.freeze``).

At 1,000 services a full (generation 2) collection walked every object on the loop (the
config, the check schedule, the modules): 0.27-0.33 s at once (bench/RESULTS.md, "Event loop
lag"). Frozen objects are not walked any more; they are still freed by reference counting,
but a cycle among them never is.

``gc.freeze()`` takes every object the collector tracks at that moment, garbage included, so
cyclic garbage pending then is kept for good. pyroute2 leaves cycles after every call (each
parsed message holds itself: ``msg.chain = [self]``); freezing right after a reload kept what
the last passes had left: the soak's agent grew ~0.25 MiB/min (bench/NOTES.md, "Soak").
Hence:

- :func:`freeze_heap` (start, before any probe runs): collect, then freeze;
- :func:`freeze_after_next_full_collection` (reload): the freeze happens when the collector
  has just finished its own next full collection, so no cyclic garbage is pending and no
  extra pass runs on the loop (a collection before the freeze took 13 ms, up to 26 ms, at
  each reload at 1,000 services: bench/loop_lag.py).
"""

from __future__ import annotations

import gc
from typing import Any

_FULL = 2  # the oldest generation: a full collection


class _Freezer:
    def __init__(self) -> None:
        self.pending = False
        self.frozen = 0  # deferred freezes done (for tests)

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        """A ``gc.callbacks`` entry: at the end of a full collection nothing collectable is
        left, so freezing now keeps only live objects."""
        if phase == "stop" and info.get("generation") == _FULL and self.pending:
            self.pending = False
            gc.freeze()
            self.frozen += 1


_FREEZER = _Freezer()


def freeze_heap() -> None:
    """Collect, then freeze every object alive now (one full collection: at start)."""
    _FREEZER.pending = False
    gc.collect()
    gc.freeze()


def freeze_after_next_full_collection() -> None:
    """Freeze what is alive when the collector next finishes a full collection."""
    if _FREEZER.on_gc not in gc.callbacks:
        gc.callbacks.append(_FREEZER.on_gc)
    _FREEZER.pending = True


def deferred_freeze_pending() -> bool:
    return _FREEZER.pending
