"""ExaBGP config rendering: golden file, secrets, modes, changed-block detection."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from bgplb.bgp import render
from bgplb.config import Config

GOLDEN = Path(__file__).parent / "golden" / "exabgp.conf"
RELAY = ["/venv/bin/python", "-m", "bgplb.bgp.relay", "/run/bgp-lb/api.sock"]


def config(peers: list[dict[str, Any]], router_id: str = "10.0.1.2") -> Config:
    return Config.model_validate(
        {"node": {"router_id": router_id, "local_as": 65001}, "peers": peers}
    )


PEERS: list[dict[str, Any]] = [
    {"address": "10.0.1.1", "asn": 65000, "local_address": "10.0.1.2", "hold_time": 3},
    {
        "address": "fd00:1::1",
        "asn": 65000,
        "local_address": "fd00:1::2",
        "passive": True,
        "port": 1179,
        "multihop": 4,
    },
]


def test_golden() -> None:
    out = render.render(config(PEERS), RELAY, {"fd00:1::1": "s3cret pass;{x}"})
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(out.text)
    assert out.text == GOLDEN.read_text()
    assert "s3cret" not in out.text  # base64 only
    assert "graceful-restart disable;" in out.text
    assert set(out.blocks) == {"10.0.1.1", "fd00:1::1"}


def test_block_changes_only_for_the_changed_peer() -> None:
    a = render.render(config(PEERS), RELAY, {})
    changed = [dict(PEERS[0]), dict(PEERS[1], hold_time=30)]
    b = render.render(config(changed), RELAY, {})
    assert a.blocks["10.0.1.1"] == b.blocks["10.0.1.1"]
    assert a.blocks["fd00:1::1"] != b.blocks["fd00:1::1"]


def test_router_id_change_changes_every_block() -> None:
    a = render.render(config(PEERS), RELAY, {})
    b = render.render(config(PEERS, router_id="10.0.1.99"), RELAY, {})
    assert all(a.blocks[k] != b.blocks[k] for k in a.blocks)


def test_passive_needs_local_address() -> None:
    with pytest.raises(render.RenderError, match="local_address"):
        render.render(config([{"address": "10.0.1.1", "asn": 1, "passive": True}]), RELAY, {})


def test_unsafe_relay_argument_refused() -> None:
    with pytest.raises(render.RenderError):
        render.render(config(PEERS), ["/a b/python"], {})


def test_read_secret(tmp_path: Path) -> None:
    f = tmp_path / "key"
    f.write_text("abc\n")
    f.chmod(0o600)
    assert render.read_secret(f) == "abc"
    f.chmod(0o644)
    with pytest.raises(render.RenderError, match="0600"):
        render.read_secret(f)
    with pytest.raises(render.RenderError, match="cannot read"):
        render.read_secret(tmp_path / "missing")
    f.chmod(0o600)
    f.write_text("x" * 81)
    with pytest.raises(render.RenderError, match="1-80"):
        render.read_secret(f)


def test_write_private(tmp_path: Path) -> None:
    d = tmp_path / "run"
    render.ensure_dir(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    p = d / "exabgp.conf"
    render.write_private(p, "one\n")
    render.write_private(p, "two\n" * 10000)
    assert p.read_text() == "two\n" * 10000
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert [x.name for x in d.iterdir()] == ["exabgp.conf"]


def test_write_private_regenerates_a_corrupt_file(tmp_path: Path) -> None:
    p = tmp_path / "exabgp.conf"
    p.write_bytes(b"\x00\xffneighbor {{{ garbage")
    p.chmod(0o644)
    render.write_private(p, "good\n")
    assert p.read_text() == "good\n"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
