"""``load_config_async``: the same config and the same errors as ``load_config``, parsed in a
child process so that the event loop keeps running meanwhile."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from bgplb.config import ConfigError, load_config
from bgplb.config.offloop import load_config_async, main

from .test_agent import raw_config
from .ticker import lateness_ticker


def _services(n: int) -> list[dict[str, object]]:
    return [
        {
            "name": f"s{i}",
            "mode": "announce",
            "interface": "lo",
            "vips": [f"10.99.{1 + i // 250}.{1 + i % 250}"],
            "checks": [{"type": "http", "address": "127.0.0.1", "port": 8080, "path": f"/{i}"}],
        }
        for i in range(n)
    ]


async def test_same_config_as_load_config(tmp_path: Path) -> None:
    raw = raw_config(tmp_path)
    raw["services"] += _services(50)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert await load_config_async(path) == load_config(path)


async def test_same_errors_as_load_config(tmp_path: Path) -> None:
    raw = raw_config(tmp_path)
    raw["services"][0]["vips"] = ["not-an-address"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as want:
        load_config(path)
    with pytest.raises(ConfigError) as got:
        await load_config_async(path)
    assert got.value.errors == want.value.errors
    with pytest.raises(ConfigError, match="cannot read"):
        await load_config_async(tmp_path / "missing.yaml")


async def test_a_child_that_does_not_answer_in_time_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw_config(tmp_path)))
    with pytest.raises(ConfigError, match="not parsed within"):
        await load_config_async(path, limit=0.001)


async def test_the_loop_keeps_running_while_a_big_file_is_parsed(tmp_path: Path) -> None:
    raw = raw_config(tmp_path)
    raw["services"] += _services(400)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    async with lateness_ticker() as lag:
        t0 = time.monotonic()
        config = await load_config_async(path)
        took = time.monotonic() - t0
    assert len(config.services) == 402
    # load_config on the loop would stall it for the whole parse (~took); a thread for
    # pydantic's whole validation. What is left is the unpickling, in a thread.
    assert lag.worst < took / 2, f"the loop stalled {lag.worst:.3f} s of a {took:.3f} s load"


def test_child_main_writes_issues(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    import pickle

    assert main([str(tmp_path / "missing.yaml")]) == 0
    kind, issues = pickle.loads(capsysbinary.readouterr().out)
    assert kind == "error"
    assert "cannot read" in str(issues[0])
