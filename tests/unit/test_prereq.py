"""``check-node``: modules and sysctls, read from a fake root tree."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bgplb.config import load_config
from bgplb.dataplane.prereq import check_prerequisites, run_check_node

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RELEASE = "6.1.0-99-amd64"
GOOD_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv4.vs.conntrack": "1",
    "net.ipv4.vs.expire_nodest_conn": "1",
    "net.ipv4.vs.expire_quiescent_template": "1",
    "net.ipv4.conf.all.arp_ignore": "1",
    "net.ipv4.conf.all.arp_announce": "2",
}


def make_root(
    tmp_path: Path,
    loaded: tuple[str, ...] = ("ip_vs", "dummy"),
    available: tuple[str, ...] = ("ip_vs_wlc", "ip_vs_rr", "ip_vs_sh", "ip_vs_mh"),
    sysctls: dict[str, str] | None = None,
) -> Path:
    root = tmp_path / "root"
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/osrelease").write_text(RELEASE + "\n")
    for name in loaded:
        (root / "sys/module" / name).mkdir(parents=True)
    mods = root / "lib/modules" / RELEASE
    mods.mkdir(parents=True)
    (mods / "modules.dep").write_text(
        "".join(f"kernel/net/netfilter/ipvs/{m}.ko.xz: kernel/x.ko\n" for m in available)
    )
    for key, value in (GOOD_SYSCTLS if sysctls is None else sysctls).items():
        path = root / "proc/sys" / key.replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    return root


def by_name(root: Path, config_file: str | None = None) -> dict[str, tuple[bool, str, str]]:
    config = load_config(EXAMPLES / config_file) if config_file else None
    return {p.name: (p.ok, p.detail, p.fix) for p in check_prerequisites(config, root)}


def test_everything_checked_without_a_config_and_all_good(tmp_path: Path) -> None:
    results = by_name(make_root(tmp_path))
    assert set(results) == {
        "module dummy",
        "module ip_vs",
        "module ip_vs_wlc",
        *(f"sysctl {k}" for k in GOOD_SYSCTLS),
    }
    assert all(ok for ok, _, _ in results.values())
    assert all(fix == "" for _, _, fix in results.values())


def test_bad_values_and_missing_modules_come_with_their_fix(tmp_path: Path) -> None:
    sysctls = dict(GOOD_SYSCTLS, **{"net.ipv4.ip_forward": "0"})
    del sysctls["net.ipv4.vs.conntrack"]
    root = make_root(tmp_path, loaded=(), available=("ip_vs", "dummy"), sysctls=sysctls)
    results = by_name(root)

    ok, detail, fix = results["module ip_vs"]
    assert not ok
    assert "not loaded" in detail
    assert fix.startswith("modprobe ip_vs")
    ok, detail, _ = results["module dummy"]  # loaded by the kernel on first use
    assert ok
    assert "first use" in detail
    ok, detail, fix = results["module ip_vs_wlc"]
    assert not ok
    assert "not in this kernel" in detail
    assert "linux-image" in fix
    ok, detail, fix = results["sysctl net.ipv4.ip_forward"]
    assert not ok
    assert detail.startswith("0, want 1")
    assert fix.startswith("sysctl -w net.ipv4.ip_forward=1")
    ok, detail, fix = results["sysctl net.ipv4.vs.conntrack"]
    assert not ok
    assert "absent" in detail
    assert "load ip_vs" in fix


def test_config_decides_what_is_needed(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    single = by_name(root, "single-service.yaml")  # v4 only, local backend (masq), no persistence
    assert "sysctl net.ipv4.vs.expire_quiescent_template" not in single
    assert "sysctl net.ipv6.conf.all.forwarding" not in single
    assert "sysctl net.ipv4.ip_forward" in single
    assert {"module ip_vs_wlc"} == {n for n in single if n.startswith("module ip_vs_")}

    pool = by_name(root, "dual-stack-pool.yaml")  # persistence, v6 masq real server
    assert "sysctl net.ipv4.vs.expire_quiescent_template" in pool
    assert "sysctl net.ipv6.conf.all.forwarding" in pool


@pytest.mark.parametrize(("bad", "status"), [(False, 0), (True, 1)])
def test_run_check_node_exit_status_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: bool, status: int
) -> None:
    sysctls = dict(GOOD_SYSCTLS, **({"net.ipv4.conf.all.arp_ignore": "0"} if bad else {}))
    root = make_root(tmp_path, sysctls=sysctls)
    args = argparse.Namespace(config=None, json=True, root=str(root))
    assert run_check_node(args) == status
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows if not r["ok"]} == (
        {"sysctl net.ipv4.conf.all.arp_ignore"} if bad else set()
    )


def test_run_check_node_table_and_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path, sysctls=dict(GOOD_SYSCTLS, **{"net.ipv4.ip_forward": "0"}))
    args = argparse.Namespace(config=None, json=False, root=str(root))
    assert run_check_node(args) == 1
    out = capsys.readouterr().out
    assert "BAD  sysctl net.ipv4.ip_forward" in out
    assert "fix: sysctl -w net.ipv4.ip_forward=1" in out
    assert out.rstrip().endswith("1 prerequisite(s) not met")

    broken = tmp_path / "broken.yaml"
    broken.write_text("node: {}\n")
    assert run_check_node(argparse.Namespace(config=str(broken), json=False)) == 2


def test_ipvs_mode_without_ports_needs_the_dummy_link_but_no_ipvs(tmp_path: Path) -> None:
    """The Go command line without -ipvs-setup: dummy + VIP, no virtual service."""
    from bgplb.gocompat import GoFlags, adjust_config

    config = adjust_config(load_config(EXAMPLES / "seed-format.json"), GoFlags())
    names = {p.name for p in check_prerequisites(config, make_root(tmp_path))}
    assert names == {
        "module dummy",
        "sysctl net.ipv4.conf.all.arp_ignore",
        "sysctl net.ipv4.conf.all.arp_announce",
    }
    announce = adjust_config(config, GoFlags(network_setup=False))
    assert check_prerequisites(announce, make_root(tmp_path / "b")) == []
