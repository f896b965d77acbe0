"""preserve_connections (pool mode): the refusals check-config prints (exit 2, field path,
why) and the scheduler it fills in (docs/config.md, docs/forwarding.md "Pool mode")."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bgplb.cli import main
from bgplb.config import parse_config

POOL = """\
node: {router_id: 10.0.0.10, local_as: 65001}
peers: [{address: 10.0.0.1, asn: 65000}]
services:
  - name: web
    vips: [10.9.0.1]
    preserve_connections: true
    ports: [{port: 80}, {port: 443, scheduler: mh}]
    real_servers:
      - {address: 10.1.0.1, forward: dr}
      - {address: 10.1.0.2, forward: tunnel}
"""


def check(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str) -> tuple[int, list[str]]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    rc = main(["check-config", str(path)])
    _, err = capsys.readouterr()
    return rc, err.splitlines()


def test_a_dr_and_tunnel_pool_passes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert check(capsys, tmp_path, POOL) == (0, [])


def test_an_unset_scheduler_becomes_mh() -> None:
    config = parse_config(yaml.safe_load(POOL))
    assert [p.scheduler for p in config.services[0].ports] == ["mh", "mh"]
    plain = yaml.safe_load(
        POOL.replace("preserve_connections: true", "preserve_connections: false")
    )
    plain["services"][0]["real_servers"] = [{"address": "10.1.0.1"}]
    assert [p.scheduler for p in parse_config(plain).services[0].ports] == ["wlc", "mh"]


@pytest.mark.parametrize(
    ("old", "new", "path", "why"),
    [
        (
            "ports: [{port: 80}, {port: 443, scheduler: mh}]",
            "ports: [{port: 80}, {port: 443, scheduler: wlc}]",
            "services[0].ports[1].scheduler",
            "wlc with preserve_connections: pool mode needs mh",
        ),
        (
            "{address: 10.1.0.2, forward: tunnel}",
            "{address: 10.1.0.2, forward: masq}",
            "services[0].real_servers[1].forward",
            "replies must bypass the LB node",
        ),
        (
            "preserve_connections: true",
            "preserve_connections: true\n    unhealthy_real_server: remove",
            "services[0].unhealthy_real_server",
            "reshuffles the Maglev table",
        ),
        (
            "    real_servers:\n      - {address: 10.1.0.1, forward: dr}\n"
            "      - {address: 10.1.0.2, forward: tunnel}\n",
            "",
            "services[0].real_servers",
            "the local backend differs per node",
        ),
        (
            "    ports: [{port: 80}, {port: 443, scheduler: mh}]\n    real_servers:\n"
            "      - {address: 10.1.0.1, forward: dr}\n"
            "      - {address: 10.1.0.2, forward: tunnel}\n",
            "    mode: announce\n    interface: lo\n",
            "services[0].preserve_connections",
            "needs mode ipvs",
        ),
    ],
)
def test_refusals_exit_2_with_the_field_and_the_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, old: str, new: str, path: str, why: str
) -> None:
    assert old in POOL
    rc, lines = check(capsys, tmp_path, POOL.replace(old, new))
    assert rc == 2
    assert any(line.startswith(f"{path}: ") and why in line for line in lines), lines


def test_the_same_config_without_pool_mode_is_accepted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = POOL.replace("preserve_connections: true", "preserve_connections: false")
    text = text.replace("forward: tunnel}", "forward: masq}").replace(
        "{port: 80}", "{port: 80, scheduler: wlc}"
    )
    assert check(capsys, tmp_path, text) == (0, [])
