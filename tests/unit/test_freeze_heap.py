"""freeze_heap() must not make cyclic garbage immortal (the soak's RSS growth, bench/NOTES.md),
and a reload must not freeze at all (objects in use then would be kept for good)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from bgplb.heap import freeze_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it (as pyroute2's messages)


@pytest.fixture
def no_auto_gc() -> Iterator[None]:
    """The automatic collector must not free the garbage before the freeze sees it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()  # the test process's heap back as it was
        if was:
            gc.enable()


def test_cyclic_garbage_is_freed_not_frozen(no_auto_gc: None) -> None:
    refs = []
    for _ in range(100):
        node = _Node()
        refs.append(weakref.ref(node))
        del node
    assert all(r() is not None for r in refs)  # garbage, not yet collected
    freeze_heap()
    gc.collect()
    assert all(r() is None for r in refs)


def test_live_objects_are_frozen(no_auto_gc: None) -> None:
    live = [_Node() for _ in range(100)]
    before = gc.get_freeze_count()
    freeze_heap()
    assert gc.get_freeze_count() >= before + len(live)
    del live
