"""node.start_drained: a fresh state_dir (a new disk) starts the node drained; an existing
admin.json wins; the drain survives restarts until an operator undrains."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bgplb.admin import START_DRAINED_REASON, STATE_FILE, AdminStore
from bgplb.clock import FakeClock
from bgplb.config import parse_config


def test_fresh_state_dir_starts_drained_and_writes_the_file(tmp_path: Path) -> None:
    store = AdminStore(tmp_path, FakeClock(), start_drained=True)
    assert store.state.node_drained_at == -math.inf
    assert store.fail_safe == START_DRAINED_REASON
    doc = json.loads((tmp_path / STATE_FILE).read_text())
    assert doc["node_drained"] is True
    assert doc["node_drain_reason"] == START_DRAINED_REASON
    # intentional, not a file problem: bgplb_state_file_ok stays 1
    assert store.health.problem is None


def test_restart_before_undrain_stays_drained(tmp_path: Path) -> None:
    AdminStore(tmp_path, FakeClock(), start_drained=True)
    again = AdminStore(tmp_path, FakeClock(), start_drained=True)
    assert again.state.node_drained_at == -math.inf
    assert again.fail_safe == START_DRAINED_REASON
    assert again.health.problem is None


def test_existing_admin_json_wins(tmp_path: Path) -> None:
    store = AdminStore(tmp_path, FakeClock(), start_drained=True)
    store.undrain(None)
    assert store.state.node_drained_at is None
    restarted = AdminStore(tmp_path, FakeClock(), start_drained=True)
    assert restarted.state.node_drained_at is None
    assert restarted.fail_safe is None


def test_off_by_default(tmp_path: Path) -> None:
    store = AdminStore(tmp_path, FakeClock())
    assert store.state.node_drained_at is None
    assert not (tmp_path / STATE_FILE).exists()


def test_config_field() -> None:
    base = {
        "node": {"router_id": "10.0.0.1", "local_as": 65001},
        "peers": [{"address": "10.0.0.254", "asn": 65000}],
        "services": [],
    }
    assert parse_config(base).node.start_drained is False
    base["node"]["start_drained"] = True  # type: ignore[index]
    assert parse_config(base).node.start_drained is True
