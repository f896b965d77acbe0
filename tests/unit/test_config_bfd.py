"""``peers[].bfd`` (issue 14, item 1): opt-in per peer, bfdd's ranges, field paths, exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bgplb.cli import main
from bgplb.config import BfdConfig, ConfigError, parse_config

NODE = {"router_id": "10.0.0.10", "local_as": 65001}


def raw(**bfd: Any) -> dict[str, Any]:
    peer: dict[str, Any] = {"address": "10.0.0.1", "asn": 65000}
    if bfd:
        peer["bfd"] = bfd.get("value", bfd)
    return {"node": NODE, "peers": [{"address": "10.0.1.1", "asn": 65000}, peer]}


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [str(e) for e in info.value.errors]


def test_off_unless_set_and_defaults_when_empty() -> None:
    cfg = parse_config(raw())
    assert [p.bfd for p in cfg.peers] == [None, None]
    cfg = parse_config(raw(value={}))
    assert cfg.peers[1].bfd == BfdConfig(interval_ms=300, multiplier=3)
    cfg = parse_config(raw(interval_ms=100, multiplier=3))
    bfd = cfg.peers[1].bfd
    assert bfd is not None
    assert (bfd.interval_ms, bfd.multiplier, bfd.detection_ms) == (100, 3, 300)


@pytest.mark.parametrize(
    ("bfd", "path", "why"),
    [
        ({"interval_ms": 9}, "peers[1].bfd.interval_ms", "greater than or equal to 10"),
        ({"interval_ms": 60001}, "peers[1].bfd.interval_ms", "less than or equal to 60000"),
        ({"multiplier": 1}, "peers[1].bfd.multiplier", "greater than or equal to 2"),
        ({"multiplier": 256}, "peers[1].bfd.multiplier", "less than or equal to 255"),
        ({"interval": 100}, "peers[1].bfd.interval", "unknown"),
    ],
)
def test_out_of_range_names_the_field(bfd: dict[str, Any], path: str, why: str) -> None:
    [message] = errors(raw(value=bfd))
    assert message.startswith(f"{path}: ")
    assert why in message.lower()


def test_check_config_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw(interval_ms=5)))
    rc = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    assert (rc, out) == (2, "")
    assert err.startswith("peers[1].bfd.interval_ms: ")
