"""A second, short boot of the SAME image, configured by the NoCloud seed ``bgp-lb fleet render``
writes (network-config version 2; its user-data plus one ``runcmd`` starting the image's demo
backend), made into a ``cidata`` ISO by ``cloud-localds``.

Checks: configured by cloud-init (bgp-lb after it, no schema warning), the v2 network, the agent
active, the VIP announced only after the check's rise, traffic through the VIP and IPVS, and
``bgp-lb doctor`` exit 0 in the guest.

This boot runs under OVMF (UEFI: OVMF -> shim -> GRUB on the ESP) while test_image_configured.py
boots the same disk under SeaBIOS: one disk, both firmwares, both in `make test-image`. The
firmware is a parameter (``BGPLB_IMAGE_FIRMWARE_V2``: bios | uefi; default uefi).
"""

from __future__ import annotations

import os
import time
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
from .seeds import fleet_v2_seed

pytestmark = pytest.mark.image

RISE = 3
HOSTNAME = "lbnode-v2"
FIRMWARE = os.environ.get("BGPLB_IMAGE_FIRMWARE_V2", "uefi")


@pytest.fixture(scope="module")
def firmware() -> str:
    """This boot's firmware (conftest's ``firmware`` fixture, overridden for this module)."""
    return FIRMWARE


@pytest.fixture(scope="module")
def node(router_side: RouterSide, firmware: str) -> Iterator[Node]:
    seed = fleet_v2_seed(router_side.workdir, router_side.public_key, HOSTNAME, RISE)
    console = f"console-cloudinit-v2-{firmware}.log"
    with boot(router_side, console, [seed], firmware=firmware) as booted:
        yield booted


def test_configured_by_the_v2_seed_and_agent_active(node: Node, firmware: str) -> None:
    assert_configured_and_active(node)
    print(f"\n[v2, {firmware}] qemu start -> BGPLB-BOOT configured: {node.boot_seconds:.1f} s")
    assert_configured_by_cloud_init(node, "DataSourceNoCloud", "nocloud")
    assert node.ssh.run("hostname").strip() == HOSTNAME
    # the v2 network-config: the NIC matched by MAC, renamed eth0, rendered for networkd
    assert f"{NODE_IP}/24" in node.ssh.run("ip -br -4 addr show dev eth0")
    rendered = node.ssh.run("cat /etc/systemd/network/10-cloud-init-eth0.network")
    assert f"MACAddress={GUEST_MAC}" in rendered, rendered
    booted_by = node.ssh.run("test -d /sys/firmware/efi && echo uefi || echo bios").strip()
    assert booted_by == ("bios" if firmware == "bios" else "uefi")
    if firmware != "bios":  # OVMF's own boot manager started the disk (its ESP), not SeaBIOS
        assert "BdsDxe: starting" in node.guest.console_text(), node.guest.console_text()[:3000]


def test_vip_announced_only_after_rise(node: Node) -> None:
    wait_for(lambda: node.bgp_state() == "Established", 120, 0.5, "BGP session Established")
    since = time.monotonic() - node.guest.started_at
    print(f"\n[v2] qemu start -> BGP session Established: {since:.1f} s")
    took = wait_for(lambda: node.fib() == [NODE_IP], 90, 0.05, "VIP in the router's FIB")
    print(f"[v2] -> VIP in r1's FIB after {took:.1f} s more")
    assert_announced_only_after_rise(node, RISE)


def test_traffic_through_the_vip_and_doctor_passes(node: Node) -> None:
    wait_for(lambda: node.fib() == [NODE_IP], 90, 0.2, "VIP in the router's FIB")
    code, body = node.curl(f"http://{VIP}/")
    assert code == 200, body
    assert f"bgp-lb demo backend on {HOSTNAME}" in body, body
    assert_ipvs_serves_the_vip(node)
    report = run_doctor(node, "v2")
    assert f"peer {ROUTER_IP} (r1): Established" in report, report
    assert f"service web {VIP}: VIP and IPVS service present" in report, report
