"""`bgp-lb fleet render`: the fleet file's validation, the seeds, the snippets, the output."""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from bgplb.cli import main
from bgplb.config import ConfigError, PeerConfig, load_config, parse_config
from bgplb.config.loader import decode
from bgplb.fleet.cli import run_fleet
from bgplb.fleet.load import load_fleet
from bgplb.fleet.render import FILE_SD, render_fleet

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExample0 ops@example"
FLEET: dict[str, Any] = {
    "defaults": {"local_as": 65001, "api": {"metrics_port": 9181}},
    "ssh_authorized_keys": [KEY],
    "routers": [
        {"name": "tor1", "asn": 65000, "hold_time": 9},
        {"name": "tor2", "asn": 65000},
    ],
    "nodes": [
        {
            "name": f"lb{n}",
            "node": {"router_id": f"192.0.2.{n}", "api": {"metrics_listen": f"192.0.2.{n}"}},
            "sessions": [
                {"router": "tor1", "address": "192.0.2.254", "next_hop_v6": f"2001:db8::{n}"},
                {"router": "tor2", "address": "192.0.2.253", "next_hop_v6": f"2001:db8::{n}"},
            ],
            "network": {
                "interfaces": [
                    {
                        "name": "eth0",
                        "mac": f"52:54:00:00:00:0{n}",
                        "addresses": [f"192.0.2.{n}/24", f"2001:db8::{n}/64"],
                        "gateway4": "192.0.2.254",
                        "gateway6": "2001:db8::fe",
                        "routes": [
                            {"to": "198.51.100.0/24", "via": "192.0.2.253"},
                            {"to": "2001:db8:5::/48", "via": "2001:db8::fd"},
                        ],
                    }
                ],
                "nameservers": ["192.0.2.53"],
                "search": ["example.net"],
            },
        }
        for n in (1, 2)
    ],
    "services": [
        {
            "name": "web",
            "vips": ["203.0.113.10", "2001:db8:f::10"],
            "ports": [{"port": 80}],
            "real_servers": [{"address": "10.0.0.10"}, {"address": "2001:db8:1::10"}],
        },
        {
            "name": "dns",
            "vips": ["203.0.113.53"],
            "ports": [{"port": 53, "protocol": "udp"}],
            "local_real_server": {"checks": [{"type": "tcp", "port": 53}]},
            "peers": ["tor1"],
        },
    ],
}


def fleet(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(FLEET)
    data.update(changes)
    return data


def write(tmp_path: Path, data: object, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def errors(tmp_path: Path, data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        render_fleet(load_fleet(write(tmp_path, data)))
    return [str(i) for i in info.value.errors]


def render(tmp_path: Path, data: object, *args: str) -> tuple[int, str, str, Path]:
    out = tmp_path / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["fleet", "render", str(write(tmp_path, data)), str(out), *args]
    from bgplb.cli import _parser

    code = run_fleet(_parser().parse_args(argv), stdout, stderr)
    return code, stdout.getvalue(), stderr.getvalue(), out


def seed(out: Path, node: str, name: str) -> Any:
    return yaml.safe_load((out / "nodes" / node / "seed" / name).read_text())


# --------------------------------------------------------------------------- validation


def test_an_unknown_key_is_named_by_its_fleet_path(tmp_path: Path) -> None:
    data = fleet()
    data["nodes"][1]["sessions"][0]["routr"] = "tor1"
    assert "nodes[1].sessions[0].routr: unknown key (did you mean 'router'?)" in errors(
        tmp_path, data
    )


def test_cross_references_are_checked(tmp_path: Path) -> None:
    data = fleet()
    data["nodes"][0]["sessions"][1]["router"] = "tor9"
    data["nodes"][1]["services"] = ["web", "ftp"]
    data["nodes"][1]["name"] = "LB1"  # host names are case-insensitive
    data["services"][1]["peers"] = ["tor3"]
    assert errors(tmp_path, data) == [
        "nodes[1].name: node 'lb1' again (first at [0])",
        "nodes[0].sessions[1].router: unknown router 'tor9' (routers: tor1, tor2)",
        "nodes[1].services[1]: unknown service 'ftp'",
        "services[1].peers[0]: unknown router 'tor3'",
    ]


def test_node_section_errors_point_at_defaults_or_at_the_node(tmp_path: Path) -> None:
    data = fleet()
    data["defaults"]["shutdown_grace"] = -1
    data["nodes"][0]["node"]["api"]["port"] = 70000
    del data["nodes"][1]["node"]["router_id"]
    errs = errors(tmp_path, data)
    assert "defaults.shutdown_grace: Input should be greater than or equal to 0 (got -1)" in errs
    assert any(e.startswith("nodes[0].node.api.port: ") for e in errs)
    assert "nodes[1].node.router_id: required key is missing" in errs


def test_the_agents_cross_checks_run_on_every_rendered_config(tmp_path: Path) -> None:
    data = fleet()
    data["services"][0]["mode"] = "announce"  # announce mode needs an interface
    errs = errors(tmp_path, data)
    assert errs[0] == (
        "nodes[0]: the rendered config of lb1: services[0].interface: "
        "required in announce mode (e.g. lo)"
    )
    assert all(
        e.startswith(
            (
                "nodes[0]: the rendered config of lb1: services[0]",
                "nodes[1]: the rendered config of lb2: services[0]",
            )
        )
        for e in errs
    )


def test_two_nodes_one_router_id_and_one_neighbor_address(tmp_path: Path) -> None:
    data = fleet()
    data["nodes"][1]["node"]["router_id"] = "192.0.2.1"
    errs = errors(tmp_path, data)
    assert "nodes[1].node.router_id: 192.0.2.1 is also lb1's" in errs
    assert any(e.startswith("nodes[1].sessions[0].local_address: router tor1") for e in errs)


def test_cli_exit_2_and_field_paths_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = fleet()
    data["routers"][0]["asn"] = 0
    path = write(tmp_path, data)
    assert main(["fleet", "render", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: routers[0].asn: Input should be greater than or equal to 1" in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- output


def test_render_writes_every_file_0600_in_0700_directories(tmp_path: Path) -> None:
    code, out_text, err, out = render(tmp_path, fleet())
    assert code == 0, err
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "nodes/lb1/config.yaml",
        "nodes/lb1/seed/meta-data",
        "nodes/lb1/seed/network-config",
        "nodes/lb1/seed/user-data",
        "nodes/lb2/config.yaml",
        "nodes/lb2/seed/meta-data",
        "nodes/lb2/seed/network-config",
        "nodes/lb2/seed/user-data",
        "prometheus/bgp-lb.json",
        "routers/tor1.frr.conf",
        "routers/tor2.frr.conf",
    ]
    for p in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), p
    assert "node lb1: 2 peers, 2 services, instance-id bgplb-lb1-" in out_text
    assert "router tor1: 2 neighbors" in out_text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_every_rendered_config_passes_the_agents_loader(tmp_path: Path) -> None:
    code, _, err, out = render(tmp_path, fleet())
    assert code == 0, err
    for node in ("lb1", "lb2"):
        config = load_config(out / "nodes" / node / "config.yaml")
        assert [p.name for p in config.peers] == ["tor1", "tor2"]
        assert config.peers[0].hold_time == 9
        dns = config.service("dns")
        assert dns is not None
        n = node[-1]
        assert [str(r.address) for r in dns.real_servers] == [f"192.0.2.{n}"]
        (written,) = [
            f
            for f in seed(out, node, "user-data")["write_files"]
            if f["path"] == "/etc/bgp-lb/config.yaml"
        ]
        assert written["permissions"] == "0600"
        assert parse_config(decode(written["content"], "user-data")) == config


def test_a_non_empty_out_is_refused_unless_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("mine")
    code, _, err, _ = render(tmp_path, fleet())
    assert code == 2
    assert "not empty (--force replaces it)" in err
    assert [p.name for p in out.iterdir()] == ["keep"]
    code, _, err, _ = render(tmp_path, fleet(), "--force")
    assert code == 0, err
    assert not (out / "keep").exists()
    assert (out / "prometheus" / "bgp-lb.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet.yaml", "out"]


def test_an_empty_out_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    assert render(tmp_path, fleet())[0] == 0


def test_render_is_idempotent_and_the_instance_id_follows_the_content(tmp_path: Path) -> None:
    first = render_fleet(load_fleet(write(tmp_path, fleet())))
    again = render_fleet(load_fleet(write(tmp_path, fleet())))
    assert first.files == again.files
    data = fleet()
    data["nodes"][1]["node"]["drain_delay"] = 7
    changed = render_fleet(load_fleet(write(tmp_path, data)))

    def iid(r: Any, node: str) -> str:
        meta = yaml.safe_load(r.files[PurePosixPath("nodes", node, "seed", "meta-data")])
        assert meta["local-hostname"] == node
        return str(meta["instance-id"])

    assert iid(changed, "lb1") == iid(first, "lb1")
    assert iid(changed, "lb2") != iid(first, "lb2")
    assert iid(first, "lb2").startswith("bgplb-lb2-")
    data["nodes"][1]["network"]["nameservers"] = ["192.0.2.54"]  # network-config is content too
    assert iid(render_fleet(load_fleet(write(tmp_path, data))), "lb2") != iid(changed, "lb2")


# --------------------------------------------------------------------------- seeds


def test_user_data_is_cloud_config_with_keys_and_secrets(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret-token\n")
    (tmp_path / "tor1.md5").write_text("md5-key\n")
    data = fleet(api_token_source="token")
    data["routers"][0]["md5_password_source"] = "tor1.md5"
    data["nodes"][1]["ssh_authorized_keys"] = [KEY.replace("ops@", "lb2@")]
    code, _, err, out = render(tmp_path, data)
    assert code == 0, err
    text = (out / "nodes/lb2/seed/user-data").read_text()
    assert text.startswith("#cloud-config\n")
    ud = yaml.safe_load(text)
    assert ud["ssh_authorized_keys"] == [KEY, KEY.replace("ops@", "lb2@")]
    files = {f["path"]: f for f in ud["write_files"]}
    assert set(files) == {
        "/etc/bgp-lb/config.yaml",
        "/etc/bgp-lb/api-token",
        "/etc/bgp-lb/bgp-tor1.key",
    }
    assert {f["permissions"] for f in files.values()} == {"0600"}
    assert files["/etc/bgp-lb/api-token"]["content"] == "s3cret-token\n"
    assert files["/etc/bgp-lb/bgp-tor1.key"]["content"] == "md5-key\n"
    # (load_config would also look for the key files: they are on the node, not here)
    config = parse_config(decode((out / "nodes/lb2/config.yaml").read_text(), "config.yaml"))
    assert str(config.node.api.token_file) == "/etc/bgp-lb/api-token"
    assert str(config.peers[0].md5_password_file) == "/etc/bgp-lb/bgp-tor1.key"
    assert config.peers[1].md5_password_file is None
    assert " neighbor BGPLB password md5-key\n" in (out / "routers/tor1.frr.conf").read_text()


def test_a_missing_secret_or_an_frr_unsafe_key_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bad.md5").write_text("two words\n")
    data = fleet(api_token_source="nope")
    data["routers"][1]["md5_password_source"] = "bad.md5"
    errs = errors(tmp_path, data)
    assert errs[0].startswith("api_token_source: cannot read ")
    assert errs[-1].startswith("routers[1].md5_password_source: the key must be printable")


def test_network_config_v2(tmp_path: Path) -> None:
    code, _, err, out = render(tmp_path, fleet())
    assert code == 0, err
    assert seed(out, "lb1", "network-config") == {
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": "52:54:00:00:00:01"},
                "set-name": "eth0",
                "dhcp4": False,
                "dhcp6": False,
                "addresses": ["192.0.2.1/24", "2001:db8::1/64"],
                # not routes to 0.0.0.0/0 and ::/0: cloud-init 22.4 makes ::/0 into ::/64
                "gateway4": "192.0.2.254",
                "gateway6": "2001:db8::fe",
                "routes": [
                    {"to": "198.51.100.0/24", "via": "192.0.2.253"},
                    {"to": "2001:db8:5::/48", "via": "2001:db8::fd"},
                ],
                "nameservers": {"addresses": ["192.0.2.53"], "search": ["example.net"]},
            }
        },
    }


def test_network_config_v1_on_request(tmp_path: Path) -> None:
    code, _, err, out = render(tmp_path, fleet(), "--network-config", "v1")
    assert code == 0, err
    assert seed(out, "lb1", "network-config") == {
        "version": 1,
        "config": [
            {
                "type": "physical",
                "name": "eth0",
                "mac_address": "52:54:00:00:00:01",
                "subnets": [
                    {
                        "type": "static",
                        "address": "192.0.2.1/24",
                        "gateway": "192.0.2.254",
                        "routes": [
                            {
                                "network": "198.51.100.0",
                                "netmask": "255.255.255.0",
                                "gateway": "192.0.2.253",
                            }
                        ],
                    },
                    {
                        "type": "static6",
                        "address": "2001:db8::1/64",
                        "gateway": "2001:db8::fe",
                        "routes": [
                            {"network": "2001:db8:5::", "prefix": 48, "gateway": "2001:db8::fd"}
                        ],
                    },
                ],
            },
            {"type": "nameserver", "address": ["192.0.2.53"], "search": ["example.net"]},
        ],
    }


def test_no_network_no_network_config(tmp_path: Path) -> None:
    data = fleet()
    del data["nodes"][0]["network"]
    code, _, err, out = render(tmp_path, data)
    assert code == 0, err
    assert sorted(p.name for p in (out / "nodes/lb1/seed").iterdir()) == ["meta-data", "user-data"]


def test_a_gateway_needs_an_address_of_its_family(tmp_path: Path) -> None:
    data = fleet()
    data["nodes"][0]["network"]["interfaces"][0]["addresses"] = ["192.0.2.1/24"]
    assert errors(tmp_path, data) == [
        "nodes[0].network.interfaces[0]: gateway6 needs an IPv6 address in addresses"
    ]


# --------------------------------------------------------------------------- prometheus


def test_file_sd_targets_are_the_metrics_listeners(tmp_path: Path) -> None:
    data = fleet()
    data["nodes"][1]["node"]["api"] = {"listen": "2001:db8::2", "port": 9180, "metrics_port": None}
    data["nodes"].append(copy.deepcopy(data["nodes"][0]))
    data["nodes"][2].update(name="lb3")
    data["nodes"][2]["node"] = {"router_id": "192.0.2.3", "api": {"metrics_port": None}}
    for s in data["nodes"][2]["sessions"]:
        s["local_address"] = "192.0.2.3"
    code, out_text, err, out = render(tmp_path, data)
    assert code == 0, err
    assert json.loads((out / FILE_SD).read_text()) == [
        {"targets": ["192.0.2.1:9181"], "labels": {"node": "lb1", "router_id": "192.0.2.1"}},
        {"targets": ["[2001:db8::2]:9180"], "labels": {"node": "lb2", "router_id": "192.0.2.2"}},
    ]
    assert "note: node lb3: its metrics listen on loopback only" in out_text


# --------------------------------------------------------------------------- FRR


def snippet(out: Path, router: str) -> str:
    return (out / "routers" / f"{router}.frr.conf").read_text()


def test_the_router_snippet(tmp_path: Path) -> None:
    code, _, err, out = render(tmp_path, fleet())
    assert code == 0, err
    tor1, tor2 = snippet(out, "tor1"), snippet(out, "tor2")
    for line in (
        "ip prefix-list BGPLB-VIPS4 seq 10 permit 203.0.113.10/32",
        "ip prefix-list BGPLB-VIPS4 seq 20 permit 203.0.113.53/32",
        "ipv6 prefix-list BGPLB-VIPS6 seq 10 permit 2001:db8:f::10/128",
        "router bgp 65000",
        " bgp bestpath as-path multipath-relax",
        " neighbor 192.0.2.1 remote-as 65001",
        " neighbor 192.0.2.1 peer-group BGPLB",
        " neighbor 192.0.2.2 description lb2",
        " neighbor 192.0.2.2 timers 3 9",
        "  maximum-paths 8",
        "  neighbor BGPLB route-map BGPLB-OUT out",
        "!   sysctl -w net.ipv4.fib_multipath_hash_policy=1",
        "!   sysctl -w net.ipv6.fib_multipath_hash_policy=1",
    ):
        assert line in tor1.splitlines(), line
    assert "203.0.113.53" not in tor2  # dns is announced to tor1 only
    assert " neighbor 192.0.2.1 timers 9 27" not in tor2
    assert " neighbor 192.0.2.1 timers 3 9" in tor2  # the agent's default hold time
    assert "\n exit\n" not in tor1
    assert "bfd" not in tor1
    assert "maximum-paths ibgp" not in tor1


def test_ibgp_sessions_get_ibgp_multipath(tmp_path: Path) -> None:
    data = fleet()
    data["routers"][0]["asn"] = 65001
    code, _, err, out = render(tmp_path, data)
    assert code == 0, err
    assert "  maximum-paths ibgp 8" in snippet(out, "tor1").splitlines()
    assert "maximum-paths ibgp" not in snippet(out, "tor2")


def test_bfd_is_a_profile_on_the_routers_peer_group(tmp_path: Path) -> None:
    data = fleet()
    data["routers"][1]["bfd"] = {"interval_ms": 150, "multiplier": 4}
    code, out_text, err, out = render(tmp_path, data)
    assert code == 0, err
    lines = snippet(out, "tor2").splitlines()
    at = lines.index("bfd")
    assert lines[at : at + 5] == [
        "bfd",
        " profile BGPLB",
        "  detect-multiplier 4",
        "  receive-interval 150",
        "  transmit-interval 150",
    ]
    assert at < lines.index("router bgp 65000")
    assert " neighbor BGPLB bfd profile BGPLB" in lines
    config = load_config(out / "nodes/lb1/config.yaml")
    if "bfd" in PeerConfig.model_fields:  # the agent's own peers[].bfd, once it has it
        assert getattr(config.peers[1], "bfd", None) is not None
    else:
        assert "note: router tor2: bfd is in its FRR snippet only" in out_text


@pytest.mark.skipif(shutil.which("vtysh") is None, reason="FRR's vtysh is not installed")
def test_frr_accepts_the_snippets(tmp_path: Path) -> None:
    """vtysh --dryrun parses a config with FRR's own command tree (exit 2 on an unknown line)."""
    (tmp_path / "tor1.md5").write_text("md5-key\n")
    data = fleet()
    data["routers"][0].update(bfd={"interval_ms": 100}, md5_password_source="tor1.md5", multihop=2)
    data["routers"][1]["asn"] = 65001
    code, _, err, out = render(tmp_path, data)
    assert code == 0, err
    bad = tmp_path / "bad.conf"
    bad.write_text(snippet(out, "tor1") + " neighbor BGPLB no-such-command\n")
    for path in (out / "routers/tor1.frr.conf", out / "routers/tor2.frr.conf", bad):
        done = subprocess.run(
            ["vtysh", "--dryrun", "-f", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "VTYSH_PAGER": "cat"},
        )
        assert (done.returncode == 0) == (path != bad), (path, done.stdout, done.stderr)


def test_a_failed_write_leaves_out_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("mine")
    calls = []

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    code, _, err, _ = render(tmp_path, fleet(), "--force")
    assert code == 1
    assert "No space left on device" in err
    assert [p.name for p in out.iterdir()] == ["keep"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet.yaml", "out"]  # no temp dirs


def test_the_example_in_docs_fleet_md_renders(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "fleet.md").read_text()
    example = doc.split("## The fleet file\n\n```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "fleet.yaml").write_text(
        example.replace("AAAA...", "AAAAC3NzaC1lZDI1NTE5AAAAIExample")
    )
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "api-token").write_text("tok\n")
    (tmp_path / "secrets" / "tor1.md5").write_text("md5key\n")
    rendering = render_fleet(load_fleet(tmp_path / "fleet.yaml"))
    assert "node lb1: 1 peer, 1 service, instance-id bgplb-lb1-" in rendering.progress[0]
    assert rendering.progress[0] in doc  # the sample output is this render's (same secrets)
