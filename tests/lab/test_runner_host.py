"""The lab runner on this host: namespaces, veths, exec lines, FRR, backends, teardown (root).

No agents here (they need IPVS/dummy: see test_ecmp.py). The lab gets its own name, so a
lab someone has up is never touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.harness.netns import alive, run

from .runner import REPO, Lab, LabState, list_namespaces, teardown
from .topology import Topology, load_topology

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, FRR)"),
]

MINIMAL = REPO / "containerlab" / "minimal.clab.yml"


def _renamed(tmp_path: Path, name: str) -> Path:
    """minimal.clab.yml under another lab name, bind sources made absolute."""
    data = yaml.safe_load(MINIMAL.read_text())
    data["name"] = name
    for node in data["topology"]["nodes"].values():
        node["binds"] = [
            f"{MINIMAL.parent / b.split(':', 1)[0]}:{b.split(':', 1)[1]}"
            for b in node.get("binds", [])
        ]
    out = tmp_path / f"{name}.clab.yml"
    out.write_text(yaml.safe_dump(data))
    return out


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    name = f"ht{os.getpid() % 100000}"
    yield load_topology(_renamed(tmp_path, name))
    teardown(name)


def test_minimal_lab_is_built_as_the_file_says_and_removed(topology: Topology) -> None:
    lab = Lab(topology, agents=False)
    lab.up()
    try:
        names = {lab.ns(n.name) for n in topology.nodes}
        assert names <= set(list_namespaces())
        addrs = json.loads(run("ip", "-n", lab.ns("lb1"), "-j", "addr", "show", "dev", "eth1"))
        local = {(a["local"], a["prefixlen"]) for a in addrs[0]["addr_info"]}
        assert {("10.1.1.2", 24), ("fd00:1:1::2", 64)} <= local
        route = json.loads(run("ip", "-n", lab.ns("c1"), "-j", "route", "show", "10.99.0.0/24"))
        assert route[0]["gateway"] == "10.1.100.1"
        assert lab.exec_in("r1", "sysctl", "-n", "net.ipv6.fib_multipath_hash_policy") == "1\n"
        # zebra got the daemons file's long options: IPv6 routes replaced in place
        zebra = Path(f"/proc/{lab.routers['r1'].pids['zebra']}/cmdline").read_bytes()
        assert b"--v6-rr-semantics" in zebra.split(b"\0")
        summary = lab.routers["r1"].vtysh_json("show bgp ipv4 unicast summary json")
        assert set(summary["peers"]) == {"10.1.1.2", "10.1.2.2"}  # type: ignore[call-overload]
        # the backend answers with the node's name, on the node's own address
        deadline_ok = False
        for _ in range(50):
            try:
                out = lab.exec_in("lb2", "curl", "-sf", "-g", "http://[fd00:1:2::2]:8080/")
            except RuntimeError:
                subprocess.run(["sleep", "0.1"], check=True)
                continue
            deadline_ok = out.strip() == "lb2"
            break
        assert deadline_ok
        procs = LabState.load(lab.state_file).processes
        pids = [p.pid for p in procs]
        # common/daemons: bfdd=yes (the ecmp lab's BFD), so r1 runs zebra, bfdd and bgpd
        assert sorted(p.name for p in procs) == ["backend", "backend", "bfdd", "bgpd", "zebra"]
    finally:
        removed = lab.down()
    assert not any(alive(p) for p in pids)
    assert not names & set(list_namespaces())
    assert not lab.dir.exists()
    assert any(r.startswith("netns ") for r in removed)


def test_down_cleans_up_after_a_lost_state_file(topology: Topology) -> None:
    """`up` from the CLI leaves the lab running; with its state file gone (a crash before it
    was written, or a wiped /run), `down` still finds the namespaces and their processes."""
    res = subprocess.run(
        [sys.executable, "-m", "tests.lab", "up", "--no-agents", str(topology.path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    lab = Lab(topology)
    pids = [p.pid for p in LabState.load(lab.state_file).processes]
    assert pids
    assert all(alive(p) for p in pids)
    lab.state_file.unlink()
    out = subprocess.run(
        [sys.executable, "-m", "tests.lab", "down", topology.name],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert f"netns bgplab-{topology.name}-r1" in out
    assert not any(alive(p) for p in pids)
    assert not [ns for ns in list_namespaces() if ns.startswith(f"bgplab-{topology.name}-")]


def test_up_refuses_a_lab_that_is_already_up(topology: Topology) -> None:
    lab = Lab(topology, agents=False)
    lab.up()
    try:
        with pytest.raises(RuntimeError, match="already up"):
            Lab(topology, agents=False).up()
        assert lab.state_file.exists()  # the refused attempt removed nothing
    finally:
        lab.down()


def test_invalid_topology_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    bad = tmp_path / "bad.clab.yml"
    data = yaml.safe_load(MINIMAL.read_text())
    data["name"] = "htbad"
    data["topology"]["nodes"]["r1"]["startup-config"] = "r1.cfg"
    bad.write_text(yaml.safe_dump(data))
    res = subprocess.run(
        [sys.executable, "-m", "tests.lab", "up", "--no-agents", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 2
    assert f"{bad}: topology.nodes.r1.startup-config: key not supported" in res.stderr
    assert not [ns for ns in list_namespaces() if ns.startswith("bgplab-htbad-")]
