"""The appliance image configured by an OpenStack config drive (label ``config-2``, made with
genisoimage as nova makes it: meta_data.json, the fleet seed's user-data, network_data.json).
Run by ``make test-image-full``.

Checks: configured by cloud-init's ConfigDrive datasource (bgp-lb after it, no schema warning),
the network from network_data.json rendered for networkd, the VIP announced only after the
check's rise, HTTP through the VIP and IPVS, ``bgp-lb doctor`` exit 0.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .conftest import NODE_IP, ROUTER_IP, VIP, RouterSide
from .guest import GUEST_MAC
from .node import (
    Node,
    assert_announced_only_after_rise,
    assert_configured_and_active,
    assert_configured_by_cloud_init,
    assert_ipvs_serves_the_vip,
    boot,
    run_doctor,
    wait_for,
)
from .seeds import config2_drive

pytestmark = [pytest.mark.image, pytest.mark.image_full]

RISE = 3
HOSTNAME = "lbnode-c2"


@pytest.fixture(scope="module")
def node(router_side: RouterSide) -> Iterator[Node]:
    drive = config2_drive(router_side.workdir, router_side.public_key, HOSTNAME, RISE)
    with boot(router_side, "console-config2.log", [drive]) as booted:
        yield booted


def test_configured_by_the_config_drive(node: Node) -> None:
    assert_configured_and_active(node)
    print(f"\n[config-2] qemu start -> BGPLB-BOOT configured: {node.boot_seconds:.1f} s")
    assert_configured_by_cloud_init(node, "DataSourceConfigDrive", "configdrive")
    assert node.ssh.run("hostname").strip() == HOSTNAME
    # network_data.json rendered for networkd; a config drive keeps the kernel's NIC name
    nic = node.ssh.run(f"ip -o link | awk -F': ' '/{GUEST_MAC}/ {{print $2}}'").strip()
    assert f"{NODE_IP}/24" in node.ssh.run(f"ip -br -4 addr show dev {nic}")
    status = node.ssh.run(f"networkctl status {nic}")
    assert f"Network File: /etc/systemd/network/10-cloud-init-{nic}.network" in status, status


def test_vip_after_rise_http_through_the_vip_and_doctor(node: Node) -> None:
    wait_for(lambda: node.bgp_state() == "Established", 120, 0.5, "BGP session Established")
    wait_for(lambda: node.fib() == [NODE_IP], 120, 0.05, "VIP in the router's FIB")
    assert_announced_only_after_rise(node, RISE)
    code, body = node.curl(f"http://{VIP}/")
    assert code == 200, body
    assert f"bgp-lb demo backend on {HOSTNAME}" in body, body
    assert_ipvs_serves_the_vip(node)
    report = run_doctor(node, "config-2")
    assert f"peer {ROUTER_IP} (r1): Established" in report, report
