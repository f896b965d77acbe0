"""AdminStore with deferred writes (the agent's): a drain is in force at once and the file is
written by persist() in a worker thread, never on the event loop (issue 13 item 8)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
from pathlib import Path

import pytest

from bgplb import admin as admin_module
from bgplb.admin import STATE_FILE, AdminStore
from bgplb.clock import FakeClock


def _on_disk(path: Path) -> list[str]:
    return list(json.loads((path / STATE_FILE).read_text())["drained"])


async def test_a_drain_is_in_force_at_once_and_written_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers: list[str] = []
    real = admin_module.write_atomic

    def spy(path: Path, data: bytes | str, **kw: int) -> None:
        writers.append(threading.current_thread().name)
        real(path, data, **kw)

    monkeypatch.setattr(admin_module, "write_atomic", spy)
    store = AdminStore(tmp_path, FakeClock(), deferred_writes=True)
    store.drain("web")
    assert "web" in store.state.drained  # in force before any write
    assert not (tmp_path / STATE_FILE).exists()
    assert writers == []
    await store.persist()
    assert _on_disk(tmp_path) == ["web"]
    assert store.persisted
    assert writers
    assert threading.main_thread().name not in writers


async def test_overlapping_persists_leave_the_latest_state_on_disk(tmp_path: Path) -> None:
    store = AdminStore(tmp_path, FakeClock(), deferred_writes=True)
    calls = []
    for name in ("a", "b", "c", "d"):
        store.drain(name)
        calls.append(asyncio.ensure_future(store.persist()))
    store.undrain("b")
    calls.append(asyncio.ensure_future(store.persist()))
    await asyncio.gather(*calls)
    assert _on_disk(tmp_path) == ["a", "c", "d"]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no tmp left behind


async def test_a_refused_write_is_reported_and_a_cancelled_caller_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    real = admin_module.write_atomic

    def slow_full(path: Path, data: bytes | str, **kw: int) -> None:
        gate.wait(5)
        raise OSError(errno.ENOSPC, "No space left on device")

    store = AdminStore(tmp_path, FakeClock(), deferred_writes=True)
    monkeypatch.setattr(admin_module, "write_atomic", slow_full)
    store.drain(None)
    caller = asyncio.ensure_future(store.persist())
    await asyncio.sleep(0.05)
    caller.cancel()  # e.g. an API client that went away: the write goes on
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await store.persist()  # waits for the write in flight (one at a time)
    assert store.state.node_drained_at is not None  # never refused
    assert store.persisted is False
    assert "no space left on device" in (store.problem or "")
    monkeypatch.setattr(admin_module, "write_atomic", real)
    store.retry()  # the pass's retry, after RETRY_INTERVAL on the clock
    await store.persist()
    assert store.persisted is False  # not yet due
    store._clock._t += admin_module.RETRY_INTERVAL  # type: ignore[attr-defined]
    store.retry()
    await store.persist()
    assert store.persisted
    assert store.problem is None
    assert json.loads((tmp_path / STATE_FILE).read_text())["node_drained"] is True


async def test_a_stalled_disk_does_not_hold_a_waiter_beyond_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    real = admin_module.write_atomic

    def stalled(path: Path, data: bytes | str, **kw: int) -> None:
        gate.wait(5)
        real(path, data, **kw)

    monkeypatch.setattr(admin_module, "write_atomic", stalled)
    store = AdminStore(tmp_path, FakeClock(), deferred_writes=True)
    store.drain("web")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await store.persist(wait=0.1)
    assert loop.time() - t0 < 1.0
    gate.set()
    await store.persist()
    assert _on_disk(tmp_path) == ["web"]
    assert store.persisted
