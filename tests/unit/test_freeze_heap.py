"""The heap freezes must not make cyclic garbage immortal (the soak's RSS growth,
bench/NOTES.md), and the deferred one must wait for the collector's own full pass."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from bgplb.heap import deferred_freeze_pending, freeze_after_next_full_collection, freeze_heap


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


def _garbage(n: int = 100) -> list[weakref.ref[_Node]]:
    refs = []
    for _ in range(n):
        node = _Node()
        refs.append(weakref.ref(node))
        del node
    assert all(r() is not None for r in refs)  # garbage, not yet collected
    return refs


def test_cyclic_garbage_is_freed_not_frozen(no_auto_gc: None) -> None:
    refs = _garbage()
    freeze_heap()
    gc.collect()
    assert all(r() is None for r in refs)


def test_live_objects_are_frozen(no_auto_gc: None) -> None:
    live = [_Node() for _ in range(100)]
    before = gc.get_freeze_count()
    freeze_heap()
    assert gc.get_freeze_count() >= before + len(live)
    del live


def test_deferred_freeze_waits_for_a_full_collection_and_keeps_no_garbage(
    no_auto_gc: None,
) -> None:
    freeze_heap()
    before = gc.get_freeze_count()
    freeze_after_next_full_collection()
    refs = _garbage()
    live = [_Node() for _ in range(100)]
    gc.collect(0)
    gc.collect(1)
    assert deferred_freeze_pending()
    assert gc.get_freeze_count() == before  # young collections do not freeze
    gc.collect()  # a full one: the garbage goes, then what is alive is frozen
    assert not deferred_freeze_pending()
    assert all(r() is None for r in refs)
    assert gc.get_freeze_count() >= before + len(live)
    # once: the next full collection does not freeze again
    frozen = gc.get_freeze_count()
    more = [_Node() for _ in range(10)]
    gc.collect()
    assert gc.get_freeze_count() == frozen
    del live, more
