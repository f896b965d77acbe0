"""The SAME appliance image configured by cloud-init, as a platform would: a NoCloud ``cidata``
seed made by the standard tool (``cloud-localds`` from cloud-image-utils), no BGPLB disk.

Two boots (one VM each, module-scoped and parametrized):

* ``v1``: the seed a Proxmox VE node writes (meta-data with a hash instance-id, network-config
  version 1 with ``physical``/``static``/``nameserver``, and ``#cloud-config`` user-data with its
  hostname, ``manage_etc_hosts``, ``package_upgrade: true``) plus our ``write_files`` (the agent
  config and firewall.yaml) and a ``runcmd`` starting the demo backend;
* ``v2``: the seed ``bgp-lb fleet render`` writes (network-config version 2), unchanged.

Each: configured by cloud-init (bgp-lb after cloud-init, the network from the seed and nothing
else rendering it), SSH as root with the seed's key, the session up, the VIP announced only once
its check passes, traffic through the VIP and IPVS, ``bgp-lb doctor`` exit 0 in the guest.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.frr import fib

from .conftest import (
    BOOT_TIMEOUT,
    NODE_AS,
    NODE_IP,
    ROUTER_AS,
    ROUTER_IP,
    VIP,
    RouterSide,
    cloud_localds,
)
from .guest import GUEST_MAC, Guest, Ssh

pytestmark = pytest.mark.image

API_PORT = 9180
RISE = 3
BGP_LB = Path(sys.executable).with_name("bgp-lb")  # the venv's: `bgp-lb fleet render`
GUEST_BGP_LB = "/opt/bgp-lb/venv/bin/bgp-lb"

AGENT_CONFIG = f"""\
node:
  router_id: {NODE_IP}
  local_as: {NODE_AS}
  shutdown_grace: 5
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
        interval: 1
        fast_interval: 1
        timeout: 0.8
        rise: {RISE}
        fall: 2
"""

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


def _indent(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.splitlines())


def proxmox_user_data(key: str) -> str:
    # Proxmox's own user-data keys (hostname, manage_etc_hosts, fqdn, chpasswd, package_upgrade)
    # with a `cicustom` user part: the agent config, firewall.yaml and the demo backend.
    return (
        "#cloud-config\n"
        "hostname: lbnode-v1\n"
        "manage_etc_hosts: true\n"
        "fqdn: lbnode-v1.example.net\n"
        f"ssh_authorized_keys:\n  - {key}\n"
        "chpasswd:\n  expire: False\n"
        "package_upgrade: true\n"
        "write_files:\n"
        "  - path: /etc/bgp-lb/config.yaml\n"
        "    permissions: '0600'\n"
        "    content: |\n" + _indent(AGENT_CONFIG, 6) + "  - path: /etc/bgp-lb/firewall.yaml\n"
        "    content: |\n"
        f"      api_sources: [{ROUTER_IP}/32]\n"
        "runcmd:\n"
        "  - [systemctl, start, --no-block, bgp-lb-demo-backend.service]\n"
    )


FLEET = f"""\
defaults:
  local_as: {NODE_AS}
  shutdown_grace: 5
  api: {{listen: 0.0.0.0, port: {API_PORT}}}
  log: {{format: json, level: info}}
ssh_authorized_keys: ["{{key}}"]
routers:
  - name: r1
    asn: {ROUTER_AS}
    hold_time: 3
nodes:
  - name: lbnode-v2
    node: {{router_id: {NODE_IP}}}
    sessions: [{{router: r1, address: {ROUTER_IP}}}]
    network:
      interfaces:
        - name: eth0
          mac: "{GUEST_MAC}"
          addresses: [{NODE_IP}/24]
services:
  # sshd is the backend: the fleet seed is used as rendered, with nothing to start a demo server
  - name: ssh
    vips: [{VIP}]
    ports: [{{port: 22}}]
    checks: [{{type: tcp, port: 22, interval: 1, fast_interval: 1, timeout: 0.8, rise: {RISE}}}]
"""


def seed_v1(workdir: Path, key: str) -> Path:
    seed = workdir / "seed-v1"
    seed.mkdir()
    (seed / "user-data").write_text(proxmox_user_data(key))
    (seed / "meta-data").write_text("instance-id: 5b0b0f8c1e8d2c3b7a4e9f6d0c1b2a3948576f01\n")
    (seed / "network-config").write_text(PROXMOX_NETWORK_V1)
    return cloud_localds(workdir / "seed-v1.iso", seed)


def seed_v2(workdir: Path, key: str) -> Path:
    fleet = workdir / "fleet.yaml"
    fleet.write_text(FLEET.replace("{key}", key))
    out = workdir / "fleet-out"
    subprocess.run(
        [str(BGP_LB), "fleet", "render", str(fleet), str(out)],
        check=True,
        timeout=120,
        capture_output=True,
    )
    seed = out / "nodes/lbnode-v2/seed"
    assert "version: 2" in (seed / "network-config").read_text()
    return cloud_localds(workdir / "seed-v2.iso", seed)


def seed_config2(workdir: Path, key: str) -> Path:
    """An OpenStack config drive (label config-2) as nova writes it: meta_data.json, the v2
    case's user-data (from `bgp-lb fleet render`) and network_data.json; genisoimage, as nova."""
    drive = workdir / "config-2"
    latest = drive / "openstack/latest"
    latest.mkdir(parents=True)
    rendered = workdir / "fleet-out/nodes/lbnode-v2/seed/user-data"
    if not rendered.exists():
        seed_v2(workdir, key)
    (latest / "user_data").write_text(rendered.read_text())
    meta = {
        "uuid": "6f1d1b2e-7c1a-4c55-9f4e-1b2c3d4e5f60",
        "name": "lbnode-c2",
        "hostname": "lbnode-c2",
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


# case -> (how its seed is made, hostname, cloud-id, datasource class, NIC renamed to eth0)
CASES: dict[str, tuple[Callable[[Path, str], Path], str, str, str, bool]] = {
    "v1": (seed_v1, "lbnode-v1", "nocloud", "DataSourceNoCloud", True),
    "v2": (seed_v2, "lbnode-v2", "nocloud", "DataSourceNoCloud", True),
    "config2": (seed_config2, "lbnode-c2", "configdrive", "DataSourceConfigDrive", False),
}


@dataclass
class CloudNode:
    case: str  # v1 | v2 | config2
    hostname: str
    cloud_id: str
    datasource: str
    renamed: bool
    guest: Guest
    ssh: Ssh
    side: RouterSide
    boot_seconds: float

    def fib(self) -> list[str]:
        return fib(self.side.ns, f"{VIP}/32")

    def bgp_state(self) -> str:
        data = self.side.router.vtysh_json(f"show bgp neighbors {NODE_IP} json")
        info = data.get(NODE_IP, {})
        return str(info.get("bgpState", "")) if isinstance(info, dict) else ""

    def in_ns(self, *argv: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.side.ns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - start


@pytest.fixture(scope="module", params=list(CASES))
def cloud_node(
    request: pytest.FixtureRequest, image: Path, router_side: RouterSide
) -> Iterator[CloudNode]:
    case = request.param
    key = router_side.key.with_suffix(".pub").read_text().strip()
    make, hostname, cloud_id, datasource, renamed = CASES[case]
    seed = make(router_side.workdir, key)
    console = router_side.workdir / f"console-cloudinit-{case}.log"
    guest = Guest(router_side.ns, image, console, seed)
    guest.start()
    ssh = Ssh(router_side.ns, NODE_IP, router_side.key, router_side.workdir)
    try:
        guest.wait_console(r"BGPLB-BOOT state=\S+ bgp-lb=\S+", BOOT_TIMEOUT)
        boot = time.monotonic() - guest.started_at
        ssh.wait_ready(120)
        yield CloudNode(
            case, hostname, cloud_id, datasource, renamed, guest, ssh, router_side, boot
        )
    finally:
        ssh.close()
        guest.stop()


def test_configured_by_cloud_init_after_cloud_init(cloud_node: CloudNode) -> None:
    node = cloud_node
    line = node.guest.wait_console(r"BGPLB-BOOT .*$", 1).group(0)
    assert "state=configured bgp-lb=active" in line, node.guest.console_text()[-4000:]
    print(f"\n[{node.case}] qemu start -> BGPLB-BOOT configured: {node.boot_seconds:.1f} s (TCG)")
    # bgp-lb-cloud-init.service took the config from cloud-init's NoCloud datasource
    journal = node.ssh.run("journalctl -b -u bgp-lb-cloud-init.service -o cat --no-pager")
    assert f"CONFIGURED from cloud-init ({node.datasource}" in journal, journal
    assert node.ssh.run("cloud-id").strip() == node.cloud_id
    # bgp-lb started only after cloud-init's init stage (write_files) and our unit were done
    stamps = node.ssh.run(
        "systemctl show -p ActiveEnterTimestampMonotonic --value cloud-init.service "
        "bgp-lb-cloud-init.service; "
        "systemctl show -p ExecMainStartTimestampMonotonic --value bgp-lb.service"
    ).split()
    cloud_init_done, ours_done, agent_start = (int(x) for x in stamps)
    assert 0 < cloud_init_done <= ours_done <= agent_start, stamps
    # every cloud-init stage finished (cloud-final too: runcmd), without errors
    status = json.loads(node.ssh.run("cloud-init status --wait --format json", timeout=300))
    assert status["status"] == "done", status
    assert status["errors"] == [], status
    assert status["datasource"] == node.cloud_id, status
    # the agent config and the firewall the seed wrote are the ones in force
    conf = node.ssh.run("cat /etc/bgp-lb/config.yaml")
    assert f"router_id: {NODE_IP}" in conf
    ruleset = node.ssh.run("nft list table inet bgplb_filter")
    assert ROUTER_IP in ruleset, ruleset  # the configured policy (BGP from the peer) ...
    assert "UNCONFIGURED" not in ruleset, ruleset  # ... was loaded over the early one
    assert node.ssh.run("hostname").strip() == node.hostname


def test_network_from_the_seed_and_only_networkd_renders_it(cloud_node: CloudNode) -> None:
    node = cloud_node
    # cloud-init renamed the NIC (matched by MAC) to eth0 (NoCloud; a config drive keeps the
    # kernel's name) and rendered the seed's network config (v1, v2, OpenStack's
    # network_data.json) for systemd-networkd; nothing else (ifupdown, netplan) holds one.
    nic = node.ssh.run(f"ip -o link | awk -F': ' '/{GUEST_MAC}/ {{print $2}}'").strip()
    if node.renamed:
        assert nic == "eth0", nic
    addr = node.ssh.run(f"ip -br -4 addr show dev {nic}")
    assert f"{NODE_IP}/24" in addr, addr
    files = node.ssh.run("ls /etc/systemd/network/ /run/systemd/network/ 2>/dev/null; true")
    assert f"10-cloud-init-{nic}.network" in files, files
    # the image bakes no .network of its own for a NIC: nothing for the seed's to lose against
    baked = node.ssh.run("ls /usr/lib/systemd/network/ /etc/systemd/network/").split()
    for name in baked:
        if name.endswith(".network"):
            assert name.startswith(("80-", "10-cloud-init-")), baked  # systemd's: not NICs
    rendered = node.ssh.run(f"cat /etc/systemd/network/10-cloud-init-{nic}.network")
    assert f"MACAddress={GUEST_MAC}" in rendered, rendered
    status = node.ssh.run(f"networkctl status {nic}")
    assert f"Network File: /etc/systemd/network/10-cloud-init-{nic}.network" in status, status
    # (cloud-init's package ships an inert NetworkManager dispatcher hook: no NetworkManager here)
    leftovers = node.ssh.run(
        "find /etc/network/interfaces.d /etc/netplan /etc/NetworkManager/system-connections "
        "-type f 2>/dev/null; dpkg -l ifupdown netplan.io network-manager 2>/dev/null | grep ^ii; "
        "command -v ifup netplan NetworkManager; true"
    )
    assert leftovers.strip() == "", leftovers
    assert (
        node.ssh.run("systemctl is-enabled systemd-networkd-wait-online.service", check=False)
        .strip()
        .startswith("masked")
    )
    if node.case == "v1":  # the v1 seed has Proxmox's gateway and nameserver
        assert f"default via {ROUTER_IP}" in node.ssh.run("ip -4 route show default")
        assert "DNS=192.0.2.1" in rendered.replace(" ", ""), rendered


def test_appliance_modules_stay_off(cloud_node: CloudNode) -> None:
    node = cloud_node
    log = node.ssh.run("cat /var/log/cloud-init.log")
    # cloud-init logs "Running config-<module> using lock" as the module list spells the name
    ran = set(re.findall(r"Running config-([\w-]+) using lock", log))
    ran = {name.replace("-", "_") for name in ran}
    # package_upgrade: true in the v1 user-data: the module that would run apt is not configured
    for module in ("package_update_upgrade_install", "growpart", "resizefs", "apt_configure",
                   "set_passwords", "mounts", "phone_home"):  # fmt: skip
        assert module not in ran, (module, ran)
    assert "write_files" in ran, ran
    # root logs in with the seed's key (no "Please login as" prefix); no usable password anywhere
    keys = node.ssh.run("cat /root/.ssh/authorized_keys")
    assert "command=" not in keys, keys
    for line in node.ssh.run("cat /etc/shadow").splitlines():
        user, pw = line.split(":")[:2]
        assert pw.startswith(("!", "*")), f"{user} has a usable password field"
    assert "passwordauthentication no" in node.ssh.run("sshd -T")


def test_vip_announced_only_once_healthy(cloud_node: CloudNode) -> None:
    node = cloud_node
    wait_for(lambda: node.bgp_state() == "Established", 120, 0.5, "BGP session Established")
    since = time.monotonic() - node.guest.started_at
    print(f"\n[{node.case}] qemu start -> BGP session Established: {since:.1f} s")
    if node.case == "v1":
        # runcmd (cloud-final) started the demo backend; its /ok is 404 until touched
        wait_for(
            lambda: (
                node.ssh.run("systemctl is-active bgp-lb-demo-backend.service", check=False)
                .strip()
                .startswith("active")
            ),
            120,
            1,
            "demo backend started by runcmd",
        )
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert node.fib() == [], "VIP announced although its health check fails"
            time.sleep(0.1)
        node.ssh.run("touch /run/bgp-lb-demo/ok")
    took = wait_for(lambda: node.fib() == [NODE_IP], 90, 0.05, "VIP in the router's FIB")
    print(f"[{node.case}] -> VIP in r1's FIB after {took:.1f} s")
    # the agent's log: the check went up after RISE successes, and only then was it announced
    journal = node.ssh.run("journalctl -b -u bgp-lb.service -o cat --no-pager")
    events = []
    for line in journal.splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    up = [
        i
        for i, e in enumerate(events)
        if e.get("event") == "health_check_changed" and e.get("status") == "up"
    ]
    announce = [
        i
        for i, e in enumerate(events)
        if e.get("event") == "service_decision" and e.get("decision") == "announce"
    ]
    assert up, journal[-3000:]
    assert announce, journal[-3000:]
    assert events[up[0]]["successes"] >= RISE
    assert up[0] < announce[0], "announced before the check was up"


def test_traffic_through_the_vip_and_doctor_passes(cloud_node: CloudNode) -> None:
    node = cloud_node
    wait_for(lambda: node.fib() == [NODE_IP], 90, 0.2, "VIP in the router's FIB")
    if node.case == "v1":
        res = node.in_ns("curl", "-s", "-m", "10", f"http://{VIP}/")
        assert "bgp-lb demo backend" in res.stdout, res
        # /metrics reachable from the router: firewall.yaml from write_files is in force
        res = node.in_ns("curl", "-s", "-m", "10", f"http://{NODE_IP}:{API_PORT}/metrics")
        assert re.search(r"^bgplb_bgp_session_up\{[^}]*\} 1(\.0)?$", res.stdout, re.M), res
    else:
        # sshd's banner through the VIP: IPVS to the node's own port 22
        res = node.in_ns(
            "python3", "-c",
            f"import socket; s = socket.create_connection(('{VIP}', 22), 10); "
            "print(s.recv(64).decode())",
        )  # fmt: skip
        assert res.stdout.startswith("SSH-2.0-"), res
    ipvs = node.ssh.run("ipvsadm -Ln")
    assert f"{VIP}:" in ipvs, ipvs
    assert f"{NODE_IP}:" in ipvs, ipvs
    # the whole path, checked on the node: exit 0 (run() fails on any other exit code)
    report = node.ssh.run(f"{GUEST_BGP_LB} doctor /etc/bgp-lb/config.yaml", timeout=120)
    print(f"[{node.case}] bgp-lb doctor:\n{report}")
