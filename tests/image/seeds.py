"""The configuration media the image tests boot with, made by the platforms' standard tools:
NoCloud ``cidata`` seeds (``cloud-localds`` from cloud-image-utils, network-config v1 as
Proxmox writes it or v2 as ``bgp-lb fleet render`` writes it) and an OpenStack ``config-2``
drive (``genisoimage``, as nova makes it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import NODE_AS, NODE_IP, ROUTER_AS, ROUTER_IP, VIP, cloud_localds
from .guest import GUEST_MAC

API_PORT = 9180
BGP_LB = Path(sys.executable).with_name("bgp-lb")  # the venv's: `bgp-lb fleet render`


def agent_config(rise: int, grace: float = 5.0, interval: float = 1.0) -> str:
    """The node's /etc/bgp-lb/config.yaml: one peer (r1), the VIP on port 80 -> the demo
    backend's 8080, checked by HTTP GET /ok."""
    return f"""\
node:
  router_id: {NODE_IP}
  local_as: {NODE_AS}
  shutdown_grace: {grace}
  api:
    listen: 0.0.0.0
    port: {API_PORT}
  log:
    format: json
    level: info
peers:
  - address: {ROUTER_IP}
    asn: {ROUTER_AS}
    hold_time: 3
services:
  - name: web
    vips: [{VIP}]
    ports:
      - port: 80
        target_port: 8080
    checks:
      - type: http
        port: 8080
        path: /ok
        interval: {interval}
        fast_interval: {interval}
        timeout: 0.8
        rise: {rise}
        fall: 2
"""


FIREWALL = f"api_sources: [{ROUTER_IP}/32]\n"

# What Proxmox VE (qemu-server's Cloudinit.pm, nocloud) writes for `ipconfig0: ip=.../24,gw=...`,
# `nameserver`, `searchdomain`: version 1, quoted values, the netmask spelled out.
PROXMOX_NETWORK_V1 = f"""\
version: 1
config:
    - type: physical
      name: eth0
      mac_address: '{GUEST_MAC}'
      subnets:
      - type: static
        address: '{NODE_IP}'
        netmask: '255.255.255.0'
        gateway: '{ROUTER_IP}'
    - type: nameserver
      address:
      - '{ROUTER_IP}'
      search:
      - 'example.net'
"""
# Proxmox's meta-data: the instance-id is a hash of the generated files (a new one per change)
PROXMOX_INSTANCE_ID = "5b0b0f8c1e8d2c3b7a4e9f6d0c1b2a3948576f01"


def _indent(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.splitlines())


def proxmox_user_data(key: str, hostname: str, config: str) -> str:
    """Proxmox's own user-data keys (hostname, manage_etc_hosts, fqdn, chpasswd,
    package_upgrade) with a `cicustom` user part: the agent config, firewall.yaml and a runcmd
    starting the demo backend."""
    return (
        "#cloud-config\n"
        f"hostname: {hostname}\n"
        "manage_etc_hosts: true\n"
        f"fqdn: {hostname}.example.net\n"
        f"ssh_authorized_keys:\n  - {key}\n"
        "chpasswd:\n  expire: False\n"
        "package_upgrade: true\n"
        "write_files:\n"
        "  - path: /etc/bgp-lb/config.yaml\n"
        "    permissions: '0600'\n"
        "    content: |\n" + _indent(config, 6) + "  - path: /etc/bgp-lb/firewall.yaml\n"
        "    content: |\n" + _indent(FIREWALL, 6) + "runcmd:\n"
        "  - [systemctl, start, --no-block, bgp-lb-demo-backend.service]\n"
    )


def proxmox_v1_seed(workdir: Path, key: str, hostname: str, config: str) -> Path:
    """A NoCloud seed as a Proxmox VE node writes it (network-config version 1)."""
    seed = workdir / "seed-v1"
    seed.mkdir()
    (seed / "user-data").write_text(proxmox_user_data(key, hostname, config))
    (seed / "meta-data").write_text(f"instance-id: {PROXMOX_INSTANCE_ID}\n")
    (seed / "network-config").write_text(PROXMOX_NETWORK_V1)
    return cloud_localds(workdir / "seed-v1.iso", seed)


def fleet(key: str, hostname: str, rise: int) -> str:
    """A one-node fleet file: the VIP's port 80 -> the demo backend's 8080 on the node itself."""
    return f"""\
defaults:
  local_as: {NODE_AS}
  shutdown_grace: 5
  api: {{listen: 0.0.0.0, port: {API_PORT}}}
  log: {{format: json, level: info}}
ssh_authorized_keys: ["{key}"]
routers:
  - name: r1
    asn: {ROUTER_AS}
    hold_time: 3
nodes:
  - name: {hostname}
    node: {{router_id: {NODE_IP}}}
    sessions: [{{router: r1, address: {ROUTER_IP}}}]
    network:
      interfaces:
        - name: eth0
          mac: "{GUEST_MAC}"
          addresses: [{NODE_IP}/24]
services:
  - name: web
    vips: [{VIP}]
    ports: [{{port: 80, target_port: 8080}}]
    checks:
      - {{type: http, port: 8080, path: /, interval: 1, fast_interval: 1, timeout: 0.8,
          rise: {rise}}}
"""


# The one line the fleet's user-data gets on top of what `bgp-lb fleet render` wrote: start the
# image's demo backend (python http.server on 8080) from cloud-final's runcmd.
DEMO_RUNCMD = "runcmd:\n  - [systemctl, start, --no-block, bgp-lb-demo-backend.service]\n"


def fleet_seed_dir(workdir: Path, key: str, hostname: str, rise: int) -> Path:
    """`bgp-lb fleet render` of :func:`fleet`: the node's seed directory (network-config v2),
    its user-data plus :data:`DEMO_RUNCMD`."""
    out = workdir / "fleet-out"
    seed = out / f"nodes/{hostname}/seed"
    if not seed.exists():
        (workdir / "fleet.yaml").write_text(fleet(key, hostname, rise))
        subprocess.run(
            [str(BGP_LB), "fleet", "render", str(workdir / "fleet.yaml"), str(out)],
            check=True,
            timeout=120,
            capture_output=True,
        )
        user_data = (seed / "user-data").read_text()
        assert user_data.startswith("#cloud-config\n"), user_data
        assert "\nruncmd:" not in user_data, user_data
        (seed / "user-data").write_text(user_data.rstrip("\n") + "\n" + DEMO_RUNCMD)
    return seed


def fleet_v2_seed(workdir: Path, key: str, hostname: str, rise: int) -> Path:
    """The seed `bgp-lb fleet render` writes (network-config version 2) + the demo runcmd."""
    seed = fleet_seed_dir(workdir, key, hostname, rise)
    assert "version: 2" in (seed / "network-config").read_text()
    return cloud_localds(workdir / "seed-v2.iso", seed)


def config2_drive(workdir: Path, key: str, hostname: str, rise: int) -> Path:
    """An OpenStack config drive (label config-2) as nova writes it: meta_data.json, the fleet
    seed's user-data and network_data.json."""
    drive = workdir / "config-2"
    latest = drive / "openstack/latest"
    latest.mkdir(parents=True)
    rendered = fleet_seed_dir(workdir, key, hostname, rise) / "user-data"
    (latest / "user_data").write_text(rendered.read_text())
    meta = {
        "uuid": "6f1d1b2e-7c1a-4c55-9f4e-1b2c3d4e5f60",
        "name": hostname,
        "hostname": hostname,
        "availability_zone": "nova",
        "launch_index": 0,
        "public_keys": {"ops": key},
    }
    (latest / "meta_data.json").write_text(json.dumps(meta))
    network = {
        "links": [{"id": "tap0", "type": "phy", "ethernet_mac_address": GUEST_MAC, "mtu": 1500}],
        "networks": [
            {
                "id": "network0",
                "link": "tap0",
                "type": "ipv4",
                "ip_address": NODE_IP,
                "netmask": "255.255.255.0",
                "routes": [],
                "network_id": "9d6b1e3c-0a57-4d3e-8c0f-1f2e3d4c5b6a",
            }
        ],
        "services": [],
    }
    (latest / "network_data.json").write_text(json.dumps(network))
    iso = workdir / "config-2.iso"
    subprocess.run(
        ["genisoimage", "-quiet", "-V", "config-2", "-r", "-J", "-o", str(iso), str(drive)],
        check=True,
        timeout=60,
        capture_output=True,
    )
    return iso
