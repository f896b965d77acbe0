"""AdminStore: drains persisted atomically, reloaded as long-past drains."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest

from bgplb.admin import STATE_FILE, AdminState, AdminStateError, AdminStore
from bgplb.clock import FakeClock


def test_starts_empty_without_a_file(tmp_path: Path) -> None:
    store = AdminStore(tmp_path / "state", FakeClock())
    assert store.state == AdminState(None, {})
    assert not (tmp_path / "state" / STATE_FILE).exists()


def test_drain_service_and_node_record_clock_time(tmp_path: Path) -> None:
    clock = FakeClock(start=100.0)
    store = AdminStore(tmp_path, clock)
    store.drain("web")
    clock._t = 105.0
    store.drain(None)
    assert store.state.drained == {"web": 100.0}
    assert store.state.node_drained_at == 105.0
    assert store.state.drained_since("web") == 100.0
    assert store.state.drained_since("dns") == 105.0


def test_draining_again_keeps_the_first_time(tmp_path: Path) -> None:
    clock = FakeClock(start=100.0)
    store = AdminStore(tmp_path, clock)
    store.drain("web")
    store.drain(None)
    clock._t = 200.0
    store.drain("web")
    store.drain(None)
    assert store.state.drained["web"] == 100.0
    assert store.state.node_drained_at == 100.0


def test_undrain(tmp_path: Path) -> None:
    store = AdminStore(tmp_path, FakeClock())
    store.drain("web")
    store.drain("api")
    store.drain(None)
    store.undrain(None)
    assert store.state.node_drained_at is None
    assert set(store.state.drained) == {"web", "api"}
    store.undrain("web")
    store.undrain("unknown")  # idempotent, no error
    assert set(store.state.drained) == {"api"}


def test_persisted_before_return_and_reloaded_as_minus_inf(tmp_path: Path) -> None:
    store = AdminStore(tmp_path, FakeClock())
    store.drain("web")
    store.drain(None)
    doc = json.loads((tmp_path / STATE_FILE).read_text())
    assert doc["node_drained"] is True
    assert doc["drained"] == ["web"]
    again = AdminStore(tmp_path, FakeClock())
    assert again.state.node_drained_at == -math.inf
    assert again.state.drained == {"web": -math.inf}
    again.undrain(None)
    again.undrain("web")
    assert AdminStore(tmp_path, FakeClock()).state == AdminState(None, {})


def test_unknown_service_names_are_kept(tmp_path: Path) -> None:
    store = AdminStore(tmp_path, FakeClock())
    store.drain("not-in-config-any-more")
    assert "not-in-config-any-more" in AdminStore(tmp_path, FakeClock()).state.drained


def test_file_mode_and_no_temp_left(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        AdminStore(tmp_path, FakeClock()).drain("web")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / STATE_FILE).stat().st_mode)
    assert mode == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'{"version": 99}', b'{"version": 1, "node_drained": "yes"}'],
)
def test_corrupt_file_is_an_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / STATE_FILE).write_bytes(content)
    with pytest.raises(AdminStateError, match=STATE_FILE):
        AdminStore(tmp_path, FakeClock())


def test_write_failure_leaves_state_unchanged(tmp_path: Path) -> None:
    store = AdminStore(tmp_path / "d", FakeClock())
    (tmp_path / "d").write_text("a file where the directory should be")
    with pytest.raises(AdminStateError):
        store.drain("web")
    assert store.state == AdminState(None, {})
