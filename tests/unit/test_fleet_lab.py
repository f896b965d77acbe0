"""The ecmp lab's node configs are generated from containerlab/ecmp/fleet.yaml by `fleet render`."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import yaml

from bgplb.config import load_config
from bgplb.fleet.load import load_fleet
from bgplb.fleet.render import render_fleet
from tests.lab.topology import AGENT_CONF, load_topology

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
