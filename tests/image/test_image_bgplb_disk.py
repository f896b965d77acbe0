"""The appliance image configured by the home-made ``BGPLB`` disk (image/make-config-disk.sh),
with a cidata seed attached beside it that must change nothing: the BGPLB disk wins, cloud-init
is off for the boot (datasource None, network disabled). Run by ``make test-image-full``.

Checks: configured from the disk (its config and address, not the seed's), no cloud-init network
file, no schema warning, the VIP announced only after the check's rise, HTTP through the VIP and
IPVS, ``bgp-lb doctor`` exit 0.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .conftest import NODE_IP, ROUTER_IP, VIP, RouterSide, cloud_localds, make_config_disk
from .node import (
    Node,
    assert_announced_only_after_rise,
    assert_configured_and_active,
    assert_ipvs_serves_the_vip,
    assert_no_schema_warning,
    boot,
    run_doctor,
    wait_for,
)
from .seeds import FIREWALL, agent_config

pytestmark = [pytest.mark.image, pytest.mark.image_full]

RISE = 3
NETWORK = f"""\
[Match]
MACAddress=52:54:00:00:00:10

[Network]
Address={NODE_IP}/24
LinkLocalAddressing=no
IPv6AcceptRA=no
"""
# The cidata seed beside the BGPLB disk: cloud-init would write another config and address.
IGNORED_USER_DATA = """\
#cloud-config
write_files:
  - path: /etc/bgp-lb/config.yaml
    content: |
      node: {router_id: 203.0.113.99, local_as: 65099}
"""
IGNORED_NETWORK = """\
version: 2
ethernets:
  eth0:
    match: {macaddress: '52:54:00:00:00:10'}
    set-name: eth0
    addresses: [192.0.2.99/24]
"""


@pytest.fixture(scope="module")
def node(router_side: RouterSide) -> Iterator[Node]:
    disk = make_config_disk(
        router_side.workdir / "node1.iso",
        {"config.yaml": agent_config(RISE), "10-uplink.network": NETWORK,
         "firewall.yaml": FIREWALL},
        router_side.key.with_suffix(".pub"),
        ["bgp-lb-demo-backend.service"],
    )  # fmt: skip
    seed = router_side.workdir / "ignored-seed"
    seed.mkdir()
    (seed / "user-data").write_text(IGNORED_USER_DATA)
    (seed / "meta-data").write_text("instance-id: ignored-1\nlocal-hostname: ignored\n")
    (seed / "network-config").write_text(IGNORED_NETWORK)
    iso = cloud_localds(router_side.workdir / "ignored-seed.iso", seed)
    with boot(router_side, "console-bgplb-disk.log", [disk, iso]) as booted:
        yield booted


def test_the_bgplb_disk_wins_over_a_seed(node: Node) -> None:
    assert_configured_and_active(node)
    print(f"\n[BGPLB disk] qemu start -> BGPLB-BOOT configured: {node.boot_seconds:.1f} s")
    # cloud-init was off for this boot (datasource None, network disabled): it wrote nothing and
    # rendered no network config; the disk's config and address are in force
    assert "router_id: 192.0.2.10" in node.ssh.run("cat /etc/bgp-lb/config.yaml")
    assert "datasource_list: [ None ]" in node.ssh.run("cat /run/cloud-init/cloud.cfg")
    assert "192.0.2.99" not in node.ssh.run("ip -4 addr")
    assert "10-cloud-init" not in node.ssh.run("ls /etc/systemd/network/ /run/systemd/network/")
    assert_no_schema_warning(node, user_data=False)  # (datasource None: no user-data)


def test_vip_after_rise_http_through_the_vip_and_doctor(node: Node) -> None:
    wait_for(lambda: node.bgp_state() == "Established", 120, 0.5, "BGP session Established")
    assert node.fib() == [], "announced while the demo backend's /ok is 404"
    node.ssh.run("touch /run/bgp-lb-demo/ok")
    wait_for(lambda: node.fib() == [NODE_IP], 90, 0.05, "VIP in the router's FIB")
    assert_announced_only_after_rise(node, RISE)
    code, body = node.curl(f"http://{VIP}/")
    assert code == 200, body
    assert "bgp-lb demo backend" in body, body
    assert_ipvs_serves_the_vip(node)
    report = run_doctor(node, "BGPLB disk")
    assert f"peer {ROUTER_IP}: Established" in report, report
