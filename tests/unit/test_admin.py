"""AdminStore: drains persisted atomically, reloaded as long-past drains."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import stat
from pathlib import Path

import pytest

from bgplb import admin as admin_module
from bgplb.admin import FORMAT_VERSION, RETRY_INTERVAL, STATE_FILE, AdminState, AdminStore
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
def test_corrupt_file_is_set_aside_and_the_node_starts_drained(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Was: AdminStateError at construction -> exit 1 -> a systemd restart loop."""
    (tmp_path / STATE_FILE).write_bytes(content)
    clock = FakeClock(start=0.0, wall_offset=1_700_000_000.0)
    with caplog.at_level(logging.ERROR):
        store = AdminStore(tmp_path, clock)
    assert store.state.node_drained_at == -math.inf  # fail-safe: drained, no drain delay
    assert store.fail_safe is not None
    assert STATE_FILE in store.fail_safe
    assert store.problem == store.fail_safe
    assert (tmp_path / f"{STATE_FILE}.corrupt-1700000000").read_bytes() == content
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert STATE_FILE in str(errors[0].__dict__["file"])
    # the fresh file says so: a restart before the operator acts stays drained, with the reason
    again = AdminStore(tmp_path, clock)
    assert again.state.node_drained_at == -math.inf
    assert again.fail_safe == store.fail_safe
    # the operator undrains: the node is back, the problem gone, on disk too
    again.undrain(None)
    assert again.state.node_drained_at is None
    assert again.problem is None
    assert AdminStore(tmp_path, clock).state == AdminState(None, {})


def test_unreadable_file_starts_drained(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).mkdir()  # EISDIR on read
    store = AdminStore(tmp_path, FakeClock())
    assert store.state.node_drained_at is not None
    assert "cannot read" in (store.fail_safe or "")


def test_version_1_file_is_migrated(tmp_path: Path) -> None:
    """An N-1 file (what 5a7e1fe wrote) loads as it did, and is rewritten as version 2."""
    v1 = {"version": 1, "node_drained": True, "drained": ["web"], "written_at": 1_600_000_000.5}
    (tmp_path / STATE_FILE).write_text(json.dumps(v1))
    store = AdminStore(tmp_path, FakeClock())
    assert store.state == AdminState(-math.inf, {"web": -math.inf})
    assert store.fail_safe is None
    assert store.problem is None
    store.drain("api")
    doc = json.loads((tmp_path / STATE_FILE).read_text())
    assert doc["version"] == FORMAT_VERSION == 2
    assert doc["drained_since"]["web"] == 1_600_000_000.5  # the best time v1 knew
    assert doc["node_drained_since"] == 1_600_000_000.5
    assert doc["drained"] == ["api", "web"]


def test_version_2_records_wall_times(tmp_path: Path) -> None:
    clock = FakeClock(start=0.0, wall_offset=1_700_000_000.0)
    store = AdminStore(tmp_path, clock)
    store.drain("web")
    doc = json.loads((tmp_path / STATE_FILE).read_text())
    assert doc["drained_since"] == {"web": 1_700_000_000.0}
    assert doc["node_drained"] is False
    assert doc["node_drained_since"] is None


def _full(*_args: object, **_kw: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize(
    ("code", "text"),
    [(errno.ENOSPC, "no space left on device"), (errno.EROFS, "read-only file system")],
)
def test_disk_full_drain_is_in_force_not_persisted_then_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, text: str
) -> None:
    """Was: AdminStateError out of drain() -> 500 {"error": "internal error"}."""
    clock = FakeClock()
    store = AdminStore(tmp_path, clock)

    def refused(*_args: object, **_kw: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(admin_module, "write_atomic", refused)
    store.drain(None)
    assert store.state.node_drained_at is not None  # the safe direction: in force at once
    assert not store.persisted
    assert store.problem == f"state_dir {tmp_path}: {text}"
    store.drain("web")
    assert set(store.state.drained) == {"web"}
    assert not store.retry()  # still full
    monkeypatch.undo()
    assert not store.retry()  # not before RETRY_INTERVAL
    clock._t += RETRY_INTERVAL
    assert store.retry()
    assert store.persisted
    assert store.problem is None
    assert AdminStore(tmp_path, FakeClock()).state == AdminState(-math.inf, {"web": -math.inf})


def test_undrain_on_a_full_disk_is_in_force_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = AdminStore(tmp_path, FakeClock())
    store.drain("web")
    monkeypatch.setattr(admin_module, "write_atomic", _full)
    store.undrain("web")
    assert store.state.drained == {}
    assert not store.persisted
    monkeypatch.undo()
    store.undrain("web")  # the next call retries at once
    assert store.persisted
    assert AdminStore(tmp_path, FakeClock()).state == AdminState(None, {})


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_read_only_state_dir(tmp_path: Path) -> None:
    store = AdminStore(tmp_path, FakeClock())
    tmp_path.chmod(0o500)
    try:
        store.drain("web")
    finally:
        tmp_path.chmod(0o700)
    assert "web" in store.state.drained
    assert not store.persisted


def test_write_failure_keeps_the_change_in_memory(tmp_path: Path) -> None:
    store = AdminStore(tmp_path / "d", FakeClock())
    (tmp_path / "d").write_text("a file where the directory should be")
    store.drain("web")
    assert "web" in store.state.drained
    assert not store.persisted
    assert store.problem is not None
