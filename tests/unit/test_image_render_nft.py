"""image/rootfs/usr/libexec/bgp-lb/render-nft: the boot-time nftables policy from the config."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from bgplb.config import parse_config

SCRIPT = Path(__file__).resolve().parents[2] / "image/rootfs/usr/libexec/bgp-lb/render-nft"


def _load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("render_nft", str(SCRIPT))
    spec = importlib.util.spec_from_loader("render_nft", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_nft"] = module  # dataclasses look the module up by name
    loader.exec_module(module)
    return module


rn = _load()

CONFIG = {
    "node": {
        "router_id": "192.0.2.10",
        "backend_v6": "2001:db8::10",
        "local_as": 65001,
        "api": {"port": 9180, "metrics_listen": "0.0.0.0", "metrics_port": 9181},
    },
    "peers": [
        {"address": "192.0.2.1", "asn": 65000, "next_hop_v6": "2001:db8::10"},
        {"address": "2001:db8::1", "asn": 65000, "next_hop_v4": "192.0.2.10"},
    ],
    "services": [
        {
            "name": "web",
            "vips": ["10.99.0.1", "2001:db8:99::1"],
            "ports": [{"port": 80, "target_port": 8080}, {"port": 53, "protocol": "udp"}],
        },
        {
            "name": "pool",
            "vips": ["10.99.0.2"],
            "ports": [{"port": 443}],
            "real_servers": [{"address": "198.51.100.7"}, {"address": "192.0.2.10", "port": 8443}],
        },
    ],
}


def render(config: dict[str, object] = CONFIG, firewall: object = None) -> str:
    return str(rn.render(rn.build_policy(parse_config(config), rn.parse_firewall(firewall))))


def test_bgp_only_from_the_configured_peers() -> None:
    text = render()
    assert "elements = { 192.0.2.1 }" in text
    assert "elements = { 2001:db8::1 }" in text
    assert "tcp dport 179 ip saddr @bgp_peers4 accept" in text
    assert "tcp dport 179 ip6 saddr @bgp_peers6 accept" in text
    assert "tcp dport 179 accept" not in text


def test_vip_service_ports_per_family_and_protocol() -> None:
    text = render()
    assert "10.99.0.1 . tcp . 80, 10.99.0.1 . udp . 53, 10.99.0.2 . tcp . 443" in text
    assert "2001:db8:99::1 . tcp . 80, 2001:db8:99::1 . udp . 53" in text
    assert "ip daddr . meta l4proto . th dport @vip_services4 accept" in text


def test_local_backends_but_not_remote_real_servers() -> None:
    text = render()
    # "web" has no real servers: the node's own address at the target ports; "pool" lists
    # this node (192.0.2.10:8443) and a remote server that needs no input rule.
    assert "192.0.2.10 . tcp . 8080, 192.0.2.10 . udp . 53, 192.0.2.10 . tcp . 8443" in text
    assert "198.51.100.7" not in text


def test_api_closed_unless_sources_are_given() -> None:
    closed = render()
    assert "tcp dport { 9180, 9181 } ip saddr @api_sources4 accept" in closed
    api_set = closed.split("set api_sources4 {")[1].split("}")[0]
    assert "elements" not in api_set
    opened = render(firewall={"api_sources": ["192.0.2.0/24", "2001:db8::/64"]})
    assert "elements = { 192.0.2.0/24 }" in opened
    assert "elements = { 2001:db8::/64 }" in opened


def test_ssh_open_by_default_restricted_on_request() -> None:
    assert "tcp dport 22 accept" in render()
    limited = render(firewall={"ssh_sources": ["10.0.0.0/8"]})
    assert "tcp dport 22 accept" not in limited
    assert "tcp dport 22 ip saddr @ssh_sources4 accept" in limited


def test_default_drop_and_stateful_forward() -> None:
    text = render()
    assert "type filter hook input priority filter; policy drop;" in text
    assert "type filter hook forward priority filter; policy drop;" in text
    assert text.count("ct state established,related accept") == 2


def test_bad_firewall_file_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        rn.parse_firewall({"api_source": ["10.0.0.0/8"]})
    with pytest.raises(ValueError, match="list"):
        rn.parse_firewall({"api_sources": "10.0.0.0/8"})
    with pytest.raises(ValueError, match="not-a-network"):
        rn.parse_firewall({"api_sources": ["not-a-network"]})


def test_unconfigured_policy_only_ssh_and_the_explaining_api() -> None:
    text = rn.render_unconfigured()
    assert "tcp dport { 22, 9180 } accept" in text
    assert "179" not in text


def test_cli_writes_the_file_and_rejects_a_bad_config(tmp_path: Path) -> None:
    good = tmp_path / "config.yaml"
    good.write_text(
        "node: {router_id: 192.0.2.10, local_as: 65001}\n"
        "peers: [{address: 192.0.2.1, asn: 65000}]\n"
    )
    out = tmp_path / "ruleset.nft"
    assert rn.main(["--config", str(good), "--output", str(out)]) == 0
    assert "table inet bgplb_filter" in out.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("node: {local_as: 65001}\n")
    assert rn.main(["--config", str(bad), "--output", str(tmp_path / "x.nft")]) == 2
    assert not (tmp_path / "x.nft").exists()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("unshare") is None,
    reason="nft -c needs root (run in a private network namespace)",
)
@pytest.mark.parametrize("kind", ["configured", "unconfigured"])
def test_nft_accepts_the_ruleset(kind: str) -> None:
    text = (
        render(firewall={"api_sources": ["192.0.2.0/24"]})
        if kind == "configured"
        else rn.render_unconfigured()
    )
    res = subprocess.run(
        ["unshare", "-n", "nft", "-c", "-f", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, res.stderr
