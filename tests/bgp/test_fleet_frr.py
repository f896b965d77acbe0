"""A router configured by nothing but `fleet render`'s snippet takes the nodes' VIPs (ECMP over
both), refuses anything else, and the nodes run with their rendered configs."""

from __future__ import annotations

import ipaddress
import os
import shutil
from pathlib import Path

import pytest
import yaml

from bgplb.bgp.exabgp import ExaBGPSpeaker
from bgplb.config import parse_config
from bgplb.config.loader import decode
from bgplb.fleet.load import load_fleet
from bgplb.fleet.render import render_fleet
from bgplb.model import PeerState, Route
from tests.harness.frr import Router, wait_until
from tests.harness.netns import Lab, tempdir

pytestmark = pytest.mark.bgp

VIP4 = ipaddress.ip_network("10.99.0.1/32")
VIP6 = ipaddress.ip_network("fd00:99::1/128")
OTHER = ipaddress.ip_network("10.98.0.1/32")  # not a VIP: the snippet's route-map drops it


class SnippetRouter(Router):
    """An FRR whose whole BGP config is the rendered snippet."""

    snippet: str = ""

    def config(self) -> str:
        return (
            "frr defaults traditional\n"
            f"hostname {self.ns}\n"
            f"log file {self.directory}/frr.log debugging\n"
            "no zebra nexthop kernel enable\n"
            "bgp route-map delay-timer 0\n" + self.snippet
        )


def fleet_file(tmp: Path, rundirs: list[Path]) -> Path:
    data = {
        "defaults": {"local_as": 65001},
        "routers": [{"name": "r1", "asn": 65000, "hold_time": 3}],
        "nodes": [
            {
                "name": f"lb{n}",
                "node": {"router_id": f"10.0.{n}.2", "runtime_dir": str(rundirs[n - 1])},
                "sessions": [
                    {"router": "r1", "address": f"10.0.{n}.1", "next_hop_v6": f"fd00:{n}::2"}
                ],
            }
            for n in (1, 2)
        ],
        "services": [
            {
                "name": "web",
                "vips": [str(VIP4.network_address), str(VIP6.network_address)],
                "ports": [{"port": 80}],
                "real_servers": [{"address": "10.0.0.100"}, {"address": "fd00::100"}],
            }
        ],
    }
    path = tmp / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def test_a_router_from_the_snippet_takes_the_vips_with_ecmp(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("vtysh"):
        pytest.skip("needs root and FRR")
    rundirs = [tempdir("run"), tempdir("run")]
    rendering = render_fleet(load_fleet(fleet_file(tmp_path, rundirs)))
    files = {str(p): t for p, t in rendering.files.items()}
    lab = Lab()
    workdir = tempdir("frr")
    os.chmod(workdir, 0o755)
    speakers: list[ExaBGPSpeaker] = []
    router: SnippetRouter | None = None
    try:
        r1 = lab.add_ns("r1")
        lbs = []
        for n in (1, 2):
            ns = lab.add_ns(f"lb{n}")
            lab.link(
                r1,
                f"lb{n}",
                ns,
                "eth0",
                [f"10.0.{n}.1/24", f"fd00:{n}::1/64"],
                [f"10.0.{n}.2/24", f"fd00:{n}::2/64"],
            )
            lbs.append(ns)
        router = SnippetRouter(r1, 65000, "10.0.0.1", [], workdir / "frr-r1", command_timeout=30)
        router.snippet = files["routers/r1.frr.conf"]
        router.start()
        running = router.vtysh("show running-config")
        for line in (
            " bgp bestpath as-path multipath-relax",
            " neighbor BGPLB peer-group",
            " neighbor 10.0.1.2 peer-group BGPLB",
            " neighbor 10.0.2.2 description lb2",
            "  maximum-paths 8",
            "route-map BGPLB-OUT deny 10",
        ):
            assert line in running.splitlines(), (line, running)
        for n, ns in ((1, lbs[0]), (2, lbs[1])):
            config = parse_config(decode(files[f"nodes/lb{n}/config.yaml"], "config.yaml"))
            speaker = ExaBGPSpeaker(netns=ns)
            speakers.append(speaker)
            await speaker.start(config, lambda: None)
            peer = f"10.0.{n}.1"
            next_hop6 = ipaddress.ip_address(f"fd00:{n}::2")
            await speaker.set_routes(
                {peer: frozenset({Route(VIP4, None), Route(VIP6, next_hop6), Route(OTHER, None)})}
            )
        await wait_until(
            lambda: router is not None and router.fib(str(VIP4)) == ["10.0.1.2", "10.0.2.2"], 30
        )
        await wait_until(
            lambda: router is not None and router.fib(str(VIP6)) == ["fd00:1::2", "fd00:2::2"], 30
        )
        assert router.fib(str(OTHER)) == []
        for speaker in speakers:
            assert all(p.state is PeerState.UP for p in speaker.peers().values())
    finally:
        for speaker in speakers:
            await speaker.stop()
        if router is not None:
            router.stop()
        lab.close()
        for d in (workdir, *rundirs):
            shutil.rmtree(d, ignore_errors=True)
