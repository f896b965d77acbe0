"""The ecmp lab's node configs are generated from containerlab/ecmp/fleet.yaml by `fleet render`."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest
import yaml

from bgplb.config import load_config
from bgplb.fleet.load import load_fleet
from bgplb.fleet.render import render_fleet
from tests.lab.runner import Lab
from tests.lab.topology import (
    AGENT_CONF,
    FRR_CONF,
    FRR_DAEMONS,
    frr_daemons,
    load_topology,
    with_agent_configs,
)

LAB = Path(__file__).resolve().parents[2] / "containerlab"


def test_rendering_the_lab_fleet_reproduces_the_committed_node_configs() -> None:
    rendering = render_fleet(load_fleet(LAB / "ecmp" / "fleet.yaml"))
    lbs = load_topology(LAB / "ecmp.clab.yml").by_role("lb")
    assert [n.name for n in lbs] == ["lb1", "lb2", "lb3"]
    for node in lbs:
        bound = node.bind_source(AGENT_CONF)
        assert bound is not None
        text = rendering.files[PurePosixPath("nodes", node.name, "config.yaml")]
        assert text == bound.read_text(), f"{bound}: render containerlab/ecmp/fleet.yaml again"
        assert load_config(bound).node.router_id is not None


def test_the_lab_routers_snippets_name_every_lb_link_address() -> None:
    rendering = render_fleet(load_fleet(LAB / "ecmp" / "fleet.yaml"))
    for router, net in (("r1", "10.1"), ("r2", "10.2")):
        text = rendering.files[PurePosixPath("routers", f"{router}.frr.conf")]
        committed = (LAB / "ecmp" / router / "frr.conf").read_text()
        for n in (1, 2, 3):
            address = f"{net}.{n}.2"
            assert f" neighbor {address} peer-group LB\n" in text
            assert f" neighbor {address} peer-group LB\n" in committed  # the lab's own router
        assert "bgp bestpath as-path multipath-relax" in committed
        assert "maximum-paths 8" in text
    network = yaml.safe_load(rendering.files[PurePosixPath("nodes/lb1/seed/network-config")])
    assert network["version"] == 2
    assert network["ethernets"]["eth1"]["addresses"] == ["10.1.1.2/24", "fd00:1:1::2/64"]


def test_the_lab_runs_bfd_with_the_same_profile_on_both_sides() -> None:
    """fleet.yaml's routers[].bfd: the routers' frr.conf has the render's `bfd` profile block
    and ties the LB peer-group to it; every node config asks for the same intervals; the
    routers run bfdd (the lab runner starts it from the daemons file)."""
    fleet = load_fleet(LAB / "ecmp" / "fleet.yaml")
    rendering = render_fleet(fleet)
    lab = load_topology(LAB / "ecmp.clab.yml")
    for spec in fleet.spec.routers:
        assert spec.bfd is not None, spec.name
        snippet = rendering.files[PurePosixPath("routers", f"{spec.name}.frr.conf")]
        block = snippet[snippet.index("bfd\n") : snippet.index("router bgp")]
        assert f"  receive-interval {spec.bfd.interval_ms}\n" in block
        router = lab.node(spec.name)
        conf = router.bind_source(FRR_CONF)
        assert conf is not None
        committed = conf.read_text()
        assert block in committed, f"{conf}: the fleet render's BFD profile"
        assert committed.index(block) < committed.index("\nrouter bgp ")
        assert " neighbor LB bfd\n" in committed
        assert " neighbor LB bfd profile LB\n" in committed
        daemons = router.bind_source(FRR_DAEMONS)
        assert daemons is not None
        assert "bfdd" in frr_daemons(daemons)
    for node in lab.by_role("lb"):
        bound = node.bind_source(AGENT_CONF)
        assert bound is not None
        peers = load_config(bound).peers
        assert len(peers) == 2
        for peer in peers:
            spec = next(r for r in fleet.spec.routers if r.name == peer.name)
            assert spec.bfd is not None
            assert peer.bfd is not None, f"{node.name} {peer.name}"
            assert (peer.bfd.interval_ms, peer.bfd.multiplier) == (
                spec.bfd.interval_ms,
                spec.bfd.multiplier,
            )


def test_the_lab_runner_takes_the_node_configs_from_the_fleet_render(tmp_path: Path) -> None:
    """At lab-up the runner renders the topology's fleet.yaml (`bgp-lb fleet render`'s code)
    into the lab's directory and writes each agent's config from that, not from the bound
    copy: a fleet change reaches the lab without copying files."""
    topology = load_topology(LAB / "ecmp.clab.yml")
    assert topology.fleet == LAB / "ecmp" / "fleet.yaml"
    data = yaml.safe_load(topology.fleet.read_text())
    data["defaults"]["drain_delay"] = 7  # the committed lbN/config.yaml say 3
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(data))
    lab = Lab(replace(topology, fleet=fleet), root=tmp_path / "run")
    lab.dir.mkdir(parents=True)
    lab.render_fleet()
    assert stat.S_IMODE(lab.fleet_dir.stat().st_mode) == 0o700
    for node in topology.by_role("lb"):
        lab.node_dir(node.name).mkdir()
        written = yaml.safe_load(lab.write_agent_config(node).read_text())
        assert written["node"]["drain_delay"] == 7.0
        assert written["node"]["state_dir"] == str(lab.node_dir(node.name) / "state")
        # the token bind is mapped as before
        assert written["node"]["api"]["token_file"] == str(lab.node_dir(node.name) / "api-token")
    assert lab.vips() == ["10.99.0.1", "fd00:99::1"]


def test_a_fleet_without_a_lab_node_is_an_error(tmp_path: Path) -> None:
    topology = load_topology(LAB / "ecmp.clab.yml")
    assert topology.fleet is not None
    data = yaml.safe_load(topology.fleet.read_text())
    data["nodes"] = [n for n in data["nodes"] if n["name"] != "lb3"]
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(data))
    lab = Lab(replace(topology, fleet=fleet), root=tmp_path / "run")
    lab.dir.mkdir(parents=True)
    with pytest.raises(RuntimeError, match="no node lb3"):
        lab.render_fleet()


def test_only_a_topology_with_a_fleet_file_beside_it_is_rendered() -> None:
    assert load_topology(LAB / "minimal.clab.yml").fleet is None
    pool = load_topology(LAB / "pool.clab.yml")
    control = with_agent_configs(pool, LAB / "pool" / "control", "poolctl")
    assert control.fleet is None  # its agent configs are the control's own files
