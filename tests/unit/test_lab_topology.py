"""The lab runner's strict reading of containerlab topology files (pure: no root, no network)."""

from __future__ import annotations

import copy
import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgplb.config import parse_config
from bgplb.config.crosschecks import check_config
from tests.lab.netcmd import (
    AddrAdd,
    BridgeAdd,
    ExecLineError,
    LinkMaster,
    LinkUp,
    RouteAdd,
    parse_exec_line,
)
from tests.lab.topology import (
    AGENT_CONF,
    FRR_CONF,
    TopologyError,
    load_topology,
    parse_topology,
    with_agent_configs,
)

LAB_DIR = Path(__file__).resolve().parents[2] / "containerlab"
ECMP = LAB_DIR / "ecmp.clab.yml"
MINIMAL = LAB_DIR / "minimal.clab.yml"


def _ecmp_data() -> dict[str, Any]:
    data = yaml.safe_load(ECMP.read_text())
    assert isinstance(data, dict)
    return data


def _errors(data: object) -> list[str]:
    with pytest.raises(TopologyError) as info:
        parse_topology(data, ECMP)
    return [f"{i.path}: {i.message}" for i in info.value.issues]


def test_ecmp_file_resolves_to_the_documented_lab() -> None:
    t = load_topology(ECMP)
    assert t.name == "ecmp"
    assert [n.name for n in t.by_role("router")] == ["r1", "r2"]
    assert [n.name for n in t.by_role("lb")] == ["lb1", "lb2", "lb3"]
    assert [n.name for n in t.by_role("client")] == ["c1"]
    r1 = t.node("r1")
    assert r1.image.startswith("quay.io/frrouting/frr:")
    assert r1.interfaces == ("eth1", "eth2", "eth3", "eth4")
    assert ("net.ipv6.fib_multipath_hash_policy", "1") in r1.sysctls
    assert ("net.ipv4.fib_multipath_hash_policy", "1") in r1.sysctls
    lb2 = t.node("lb2")
    assert lb2.image == "bgp-lb-node:dev"  # inherited from kinds.linux
    assert lb2.backend_addresses == (
        ipaddress.ip_address("10.1.2.2"),
        ipaddress.ip_address("fd00:1:2::2"),
    )
    assert lb2.backend_port == 8080
    first = lb2.commands[0]
    assert isinstance(first, AddrAdd)
    assert first.iface == "eth1"
    assert first.address == ipaddress.ip_interface("10.1.2.2/24")
    assert len(t.links) == 8


def test_minimal_file_has_one_router_two_lbs() -> None:
    t = load_topology(MINIMAL)
    assert [n.name for n in t.by_role("router")] == ["r1"]
    assert [n.name for n in t.by_role("lb")] == ["lb1", "lb2"]


@pytest.mark.parametrize("path", [ECMP, MINIMAL], ids=["ecmp", "minimal"])
def test_every_bound_agent_config_is_valid_for_the_agent(path: Path) -> None:
    for node in load_topology(path).by_role("lb"):
        source = node.bind_source(AGENT_CONF)
        assert source is not None
        config = parse_config(yaml.safe_load(source.read_text()))
        assert check_config(config) == []
        assert str(config.node.router_id) in {str(a) for a in node.backend_addresses}
        # the backend addresses are the node's own: present in its exec lines
        own = {c.address.ip for c in node.commands if isinstance(c, AddrAdd)}
        assert set(node.backend_addresses) <= own


def test_every_router_has_bgp_neighbors_for_its_lb_links() -> None:
    t = load_topology(ECMP)
    for r in t.by_role("router"):
        conf = r.bind_source(FRR_CONF)
        assert conf is not None
        text = conf.read_text()
        assert "\n exit\n" not in text
        assert not any(x.strip() == "exit" for x in text.splitlines())
        assert "address-family ipv6 unicast" in text
        assert text.count("peer-group LB\n") == 3


def test_unknown_key_names_file_path_and_supported_keys() -> None:
    data = _ecmp_data()
    data["topology"]["nodes"]["lb1"]["ports"] = ["8080:80"]
    (err,) = _errors(data)
    assert err.startswith("topology.nodes.lb1.ports: key not supported by the lab runner")
    assert "binds" in err
    assert "exec" in err
    with pytest.raises(TopologyError, match=r"ecmp\.clab\.yml: topology\.nodes\.lb1\.ports"):
        parse_topology(data, ECMP)


def test_unknown_top_level_and_link_keys_are_refused() -> None:
    data = _ecmp_data()
    data["mgmt"] = {"network": "x"}
    data["topology"]["links"][0]["mtu"] = 9000
    errs = _errors(data)
    assert any(e.startswith("mgmt: key not supported") for e in errs)
    assert any(e.startswith("topology.links[0].mtu: key not supported") for e in errs)


def test_other_kinds_and_missing_role_are_refused() -> None:
    data = _ecmp_data()
    data["topology"]["nodes"]["r2"]["kind"] = "nokia_srlinux"
    del data["topology"]["nodes"]["c1"]["labels"]
    errs = _errors(data)
    assert any(e.startswith("topology.nodes.r2.kind:") for e in errs)
    assert any(e.startswith("topology.nodes.c1.labels:") for e in errs)


def test_unsupported_exec_line_is_refused_with_the_supported_forms() -> None:
    data = _ecmp_data()
    data["topology"]["nodes"]["c1"]["exec"].append("iptables -A INPUT -j DROP")
    (err,) = _errors(data)
    assert err.startswith("topology.nodes.c1.exec[8]: only `ip` commands are supported")
    assert "ip [-4|-6] addr add" in err


def test_exec_line_naming_a_foreign_interface_is_refused() -> None:
    data = _ecmp_data()
    data["topology"]["nodes"]["lb1"]["exec"][0] = "ip addr add 10.1.1.2/24 dev eth3"
    (err,) = _errors(data)
    assert "lb1 has no interface 'eth3'" in err


def test_links_must_name_nodes_and_unique_interfaces() -> None:
    data = _ecmp_data()
    links = data["topology"]["links"]
    links.append({"endpoints": ["r1:eth1", "zz:eth1"]})
    links.append({"endpoints": ["r1:eth0", "c1:eth9"]})
    errs = _errors(data)
    assert any("'r1:eth1' is already used by topology.links[0]" in e for e in errs)
    assert any("no node named 'zz'" in e for e in errs)
    assert any("eth0 is containerlab's management interface" in e for e in errs)


def test_role_requirements() -> None:
    data = copy.deepcopy(_ecmp_data())
    nodes = data["topology"]["nodes"]
    nodes["r1"]["binds"] = [b for b in nodes["r1"]["binds"] if "frr.conf" not in b]
    nodes["lb2"]["env"] = {"BGPLB_BACKEND_PORT": "8080", "DEBUG": "1"}
    nodes["c1"]["cmd"] = "python3 -m http.server"
    nodes["lb3"]["sysctls"]["kernel.pid_max"] = 100
    errs = _errors(data)
    assert "topology.nodes.r1.binds: a router needs a bind to /etc/frr/frr.conf" in errs
    assert any(e.startswith("topology.nodes.lb2.env.DEBUG: not supported") for e in errs)
    assert "topology.nodes.lb2.env: an lb node needs BGPLB_BACKEND_ADDRS" in errs
    assert any(e.startswith("topology.nodes.c1.cmd:") for e in errs)
    assert any(e.startswith("topology.nodes.lb3.sysctls.kernel.pid_max:") for e in errs)


def test_bind_sources_must_exist(tmp_path: Path) -> None:
    data = _ecmp_data()
    data["topology"]["nodes"]["lb1"]["binds"][0] = "nope/config.yaml:/etc/bgp-lb/config.yaml"
    errs = _errors(data)
    assert any(e.startswith("topology.nodes.lb1.binds[0]:") and "no file" in e for e in errs)


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "dup.clab.yml"
    f.write_text("name: a\nname: b\ntopology: {nodes: {}}\n")
    with pytest.raises(TopologyError, match="duplicate key 'name'"):
        load_topology(f)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ip addr add 10.0.0.1/24 dev eth1", "addr add 10.0.0.1/24 dev eth1"),
        ("ip -6 address add fd00::1/64 dev eth1 nodad", "addr add fd00::1/64 dev eth1 nodad"),
        ("ip route add 10.9.0.0/16 via 10.0.0.2", "route add 10.9.0.0/16 via 10.0.0.2"),
        (
            "ip -6 route add fd00:9::/64 nexthop via fd00::2 dev eth1 nexthop via fd00:1::2 dev eth2",  # noqa: E501
            "route add fd00:9::/64 nexthop via fd00::2 dev eth1 nexthop via fd00:1::2 dev eth2",
        ),
        ("ip link set dev eth1 up", "link set dev eth1 up"),
        ("ip link set eth2 up", "link set dev eth2 up"),
    ],
)
def test_exec_lines_round_trip_to_ip_batch(line: str, expected: str) -> None:
    cmd = parse_exec_line(line)
    assert isinstance(cmd, AddrAdd | RouteAdd | LinkUp)
    assert cmd.batch_line() == expected


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("ip -6 addr add 10.0.0.1/24 dev eth1", "`-6` with an IPv4 address"),
        ("ip addr add 10.0.0.1 dev eth1", "needs a prefix length"),
        ("ip addr add 10.0.0.1/24 dev eth1 nodad", "`nodad` is IPv6 only"),
        ("ip route add 10.9.0.0/16 via fd00::1", "does not match"),
        ("ip route add 10.9.0.0/16 dev eth1", "expected `via GATEWAY`"),
        ("ip route del 10.9.0.0/16 via 10.0.0.1", "`ip route del` is not supported"),
        ("ip link set eth1 down", "expected `link set [dev] IFACE up`"),
        ("ip route add 10.9.0.0/16 nexthop via 10.0.0.2 nexthop via 10.0.0.2", "duplicate gateway"),
        ("sysctl -w net.ipv4.ip_forward=1", "only `ip` commands"),
    ],
)
def test_unsupported_exec_lines(line: str, why: str) -> None:
    with pytest.raises(ExecLineError, match=re.escape(why)):
        parse_exec_line(line)


POOL = LAB_DIR / "pool.clab.yml"
POOL_CONTROL = LAB_DIR / "pool" / "control"


def test_pool_file_resolves_to_the_documented_lab() -> None:
    t = load_topology(POOL)
    assert [n.name for n in t.by_role("router")] == ["r1", "r2"]
    assert [n.name for n in t.by_role("lb")] == ["lb1", "lb2", "lb3", "lb4"]
    assert [n.name for n in t.by_role("server")] == ["s1", "s2", "s3", "s4"]
    [sw] = t.by_role("switch")
    assert [c.batch_line() for c in sw.commands if isinstance(c, BridgeAdd)] == [
        "link add br0 type bridge",
        "link add br1 type bridge",
    ]
    masters = {c.iface: c.master for c in sw.commands if isinstance(c, LinkMaster)}
    assert sorted(masters.values()).count("br0") == 10  # 4 lbs, 4 servers, 2 routers
    assert sorted(masters.values()).count("br1") == 4  # the sync segment: the lbs only
    for r in t.by_role("router"):
        assert dict(r.sysctls)["net.ipv4.fib_multipath_hash_policy"] == "1"
        conf = r.bind_source(FRR_CONF)
        assert conf is not None
        assert conf.read_text().count("peer-group LB\n") == 4
    for s in t.by_role("server"):
        own = {str(c.address) for c in s.commands if isinstance(c, AddrAdd)}
        assert "10.99.0.1/32" in own  # the VIP on lo (dr)
        assert dict(s.sysctls)["net.ipv4.conf.all.arp_ignore"] == "1"
        assert s.echo_port == 7
        assert s.backend_port == 80


def test_pool_and_control_agent_configs() -> None:
    for node in load_topology(POOL).by_role("lb"):
        source = node.bind_source(AGENT_CONF)
        assert source is not None
        for path, pool in ((source, True), (POOL_CONTROL / node.name / "config.yaml", False)):
            config = parse_config(yaml.safe_load(path.read_text()))
            assert check_config(config) == []
            [svc] = config.services
            assert svc.preserve_connections is pool
            assert {p.scheduler for p in svc.ports} == {"mh" if pool else "wlc"}
            assert {rs.forward for rs in svc.real_servers} == {"dr"}
            assert (config.node.connection_sync is not None) is pool


def test_with_agent_configs_swaps_only_the_agent_binds() -> None:
    t = load_topology(POOL)
    c = with_agent_configs(t, POOL_CONTROL, "poolctl")
    assert c.name == "poolctl"
    for a, b in zip(t.nodes, c.nodes, strict=True):
        if a.role == "lb":
            assert b.bind_source(AGENT_CONF) == (POOL_CONTROL / a.name / "config.yaml").resolve()
        else:
            assert a == b


def test_bridge_exec_lines() -> None:
    assert parse_exec_line("ip link add br0 type bridge") == BridgeAdd("br0")
    cmd = parse_exec_line("ip link set dev p1 master br0")
    assert cmd == LinkMaster("p1", "br0")
    assert cmd.batch_line() == "link set dev p1 master br0"
    with pytest.raises(ExecLineError, match="type bridge"):
        parse_exec_line("ip link add br0 type vxlan")


def test_master_must_be_a_bridge_the_node_made() -> None:
    data = _ecmp_data()
    data["topology"]["nodes"]["c1"]["exec"].append("ip link set eth1 master br9")
    assert any("no interface 'br9'" in e for e in _errors(data))
    data["topology"]["nodes"]["c1"]["exec"].insert(0, "ip link add br9 type bridge")
    parse_topology(data, ECMP)  # no error


def test_server_role_requirements() -> None:
    data = _ecmp_data()
    c1 = data["topology"]["nodes"]["c1"]
    c1["labels"]["bgplb-lab.role"] = "server"
    del c1["cmd"]
    errors = _errors(data)
    assert any("a server needs BGPLB_BACKEND_ADDRS" in e for e in errors)
    c1["env"] = {"BGPLB_BACKEND_ADDRS": "10.1.100.2", "BGPLB_BACKEND_PORT": "80", "X": "1"}
    errors = _errors(data)
    assert any("env.X: not supported" in e for e in errors)
    del c1["env"]["X"]
    assert parse_topology(data, ECMP).node("c1").role == "server"
