"""The objects alive once the agent has started, out of the cyclic garbage collector's reach.

At 1,000 services a full (generation 2) collection walked every object on the loop (the
config, the check schedule, the modules): 0.27-0.33 s at once (bench/RESULTS.md, "Event loop
lag"). ``gc.freeze()`` takes them out of its walks; frozen objects are still freed by
reference counting, but a cycle among them never is.

So the freeze happens once, at start, after a collection and before any probe or pass runs.
``gc.freeze()`` takes every object the collector tracks at that moment, garbage and objects
in use included: a freeze while the agent works keeps for good whatever cyclic garbage is
pending and every cycle that is only in use for a moment (pyroute2 leaves a cycle in each
parsed message: ``msg.chain = [self]``; a netlink dump is thousands). The agent froze again
after each reload and grew ~0.25 MiB/min in the soak; freezing at the end of the collector's
own next full collection instead (no garbage pending) grew ~4 MiB/min, as that collection
mostly runs in the middle of a dump (bench/NOTES.md, "Soak"). A reload's new config stays
unfrozen: it has no cycles (freed by reference counting when replaced), and a full
collection walks it (~44,000 objects at 1,000 services, ~10 ms).
"""

from __future__ import annotations

import gc


def freeze_heap() -> None:
    """Collect, then freeze every object alive now (once: at start)."""
    gc.collect()
    gc.freeze()
