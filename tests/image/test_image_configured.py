"""The appliance image, booted by itself under qemu (TCG) with a config disk, against FRR.

Order matters (one VM for the module): boot -> session up, no route while the backend is
unhealthy -> route after ``rise`` good checks -> HTTP through the VIP and IPVS -> /metrics from
the router -> no password login -> hardening -> stop withdraws by UPDATE -> SIGKILL of the
agent drops the route within 1 s.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.frr import fib

from .conftest import (
    BOOT_TIMEOUT,
    IMAGE,
    NODE_AS,
    NODE_IP,
    ROUTER_AS,
    ROUTER_IP,
    VIP,
    RouterSide,
    cloud_localds,
    make_config_disk,
)
from .guest import Guest, Ssh

pytestmark = pytest.mark.image

RISE = 4
INTERVAL = 1.0
GRACE = 5.0
API_PORT = 9180

CONFIG = f"""\
node:
  router_id: {NODE_IP}
  local_as: {NODE_AS}
  shutdown_grace: {GRACE}
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
        interval: {INTERVAL}
        fast_interval: {INTERVAL}
        timeout: 0.8
        rise: {RISE}
        fall: 2
"""
NETWORK = f"""\
[Match]
MACAddress=52:54:00:00:00:10

[Network]
Address={NODE_IP}/24
LinkLocalAddressing=no
IPv6AcceptRA=no
"""
FIREWALL = f"api_sources: [{ROUTER_IP}/32]\n"
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


@dataclass
class Node:
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

    def curl(self, url: str, timeout: float = 10.0) -> tuple[int, str]:
        res = subprocess.run(
            ["ip", "netns", "exec", self.side.ns, "curl", "-s", "-m", str(timeout), "-w",
             "\n%{http_code}", url],
            capture_output=True, text=True, timeout=timeout + 5, check=False,
        )  # fmt: skip
        body, _, code = res.stdout.rpartition("\n")
        return int(code or 0), body


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "") -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what or predicate} not within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def node(image: Path, router_side: RouterSide) -> Iterator[Node]:
    disk = make_config_disk(
        router_side.workdir / "node1.iso",
        {"config.yaml": CONFIG, "10-uplink.network": NETWORK, "firewall.yaml": FIREWALL},
        router_side.key.with_suffix(".pub"),
        ["bgp-lb-demo-backend.service"],
    )
    # A cloud-init seed attached as well must change nothing: the BGPLB disk wins (docs/image.md).
    seed = router_side.workdir / "ignored-seed"
    seed.mkdir()
    (seed / "user-data").write_text(IGNORED_USER_DATA)
    (seed / "meta-data").write_text("instance-id: ignored-1\nlocal-hostname: ignored\n")
    (seed / "network-config").write_text(IGNORED_NETWORK)
    iso = cloud_localds(router_side.workdir / "ignored-seed.iso", seed)
    guest = Guest(router_side.ns, image, router_side.workdir / "console-1.log", disk)
    guest.extra_args += ["-drive", f"file={iso},if=virtio,format=raw,readonly=on"]
    guest.start()
    ssh = Ssh(router_side.ns, NODE_IP, router_side.key, router_side.workdir)
    try:
        guest.wait_console(r"BGPLB-BOOT state=\S+ bgp-lb=\S+", BOOT_TIMEOUT)
        boot = time.monotonic() - guest.started_at
        ssh.wait_ready(120)
        yield Node(guest, ssh, router_side, boot)
    finally:
        ssh.close()
        guest.stop()


def test_boots_configured_and_agent_active(node: Node) -> None:
    line = node.guest.wait_console(r"BGPLB-BOOT .*$", 1).group(0)
    assert "state=configured" in line, node.guest.console_text()[-4000:]
    assert node.ssh.run("systemctl is-active bgp-lb.service").strip() == "active"
    assert node.ssh.run("systemctl is-active bgp-lb-unconfigured.service", check=False).strip() in (
        "inactive",
        "unknown",
    )
    # The BGPLB disk won over the cidata seed beside it: cloud-init was off for this boot
    # (datasource None, network disabled), wrote nothing and rendered no network config.
    assert "router_id: 192.0.2.10" in node.ssh.run("cat /etc/bgp-lb/config.yaml")
    assert "datasource_list: [ None ]" in node.ssh.run("cat /run/cloud-init/cloud.cfg")
    assert "192.0.2.99" not in node.ssh.run("ip -4 addr")
    assert "10-cloud-init" not in node.ssh.run("ls /etc/systemd/network/ /run/systemd/network/")
    # Self-booted: SeaBIOS + extlinux from the disk itself, root by PARTUUID.
    cmdline = node.ssh.run("cat /proc/cmdline")
    assert "root=PARTUUID=" in cmdline
    print(f"\nboot to BGPLB-BOOT marker: {node.boot_seconds:.1f} s wall (TCG)")


def test_session_up_and_nothing_announced_while_unhealthy(node: Node) -> None:
    wait_for(lambda: node.bgp_state() == "Established", 120, 0.5, "BGP session Established")
    since = time.monotonic() - node.guest.started_at
    print(f"\nqemu start -> BGP session Established (as FRR sees it): {since:.1f} s")
    deadline = time.monotonic() + 3 * INTERVAL
    while time.monotonic() < deadline:
        assert node.fib() == [], "VIP announced although its health check fails"
        time.sleep(0.1)


def test_route_only_after_rise_good_checks(node: Node) -> None:
    assert node.fib() == []
    node.ssh.run("touch /run/bgp-lb-demo/ok")
    # The check can pass from (slightly before) here on; `took` is a lower bound of the delay.
    took = wait_for(lambda: node.fib() == [NODE_IP], 60, 0.02, "VIP in the router's FIB")
    since = time.monotonic() - node.guest.started_at
    print(f"\nbackend healthy -> VIP in r1's FIB: {took:.2f} s ({since:.1f} s after qemu start)")
    # RISE successes at INTERVAL apart: the first may come at once, the RISE-th not before
    # (RISE - 1) * INTERVAL (small tolerance for scheduling jitter).
    assert took >= (RISE - 1) * INTERVAL - 0.3, f"announced after {took:.2f}s < rise {RISE}"
    code, body = node.curl(f"http://{NODE_IP}:{API_PORT}/api/v1/status")
    assert code == 200, body
    status = json.loads(body)
    text = json.dumps(status)
    assert '"web"' in text
    built = IMAGE.with_name("build-info.txt")  # image/build.sh: image_version=...
    if built.is_file():  # (absent for a BGPLB_IMAGE built elsewhere)
        version = dict(x.split("=", 1) for x in built.read_text().splitlines() if "=" in x)
        assert status["node"]["image_version"] == version["image_version"], status["node"]
    assert status["node"]["image_version"], "the image's os-release carries IMAGE_VERSION"
    successes = [int(x) for x in re.findall(r'"successes":\s*(\d+)', text)]
    assert successes, text
    assert max(successes) >= RISE, text
    # The agent's log: the check went up after RISE successes, and only then was "web" announced.
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


def test_http_through_the_vip_reaches_the_backend_via_ipvs(node: Node) -> None:
    code, body = node.curl(f"http://{VIP}/")
    assert code == 200
    assert "bgp-lb demo backend" in body
    ipvs = node.ssh.run("ipvsadm -Ln")
    assert f"{VIP}:80" in ipvs, ipvs
    assert f"{NODE_IP}:8080" in ipvs, ipvs


def test_metrics_from_the_router_show_the_session_up(node: Node) -> None:
    code, body = node.curl(f"http://{NODE_IP}:{API_PORT}/metrics")
    assert code == 200
    assert re.search(r"^bgplb_bgp_session_up\{[^}]*\} 1(\.0)?$", body, re.M), body[:2000]


def test_no_password_login_for_any_account(node: Node) -> None:
    shadow = node.ssh.run("cat /etc/shadow")
    for line in shadow.splitlines():
        user, pw = line.split(":")[:2]
        assert pw.startswith(("!", "*")), f"{user} has a usable password field {pw[:3]}..."
    sshd = node.ssh.run("sshd -T")
    for setting in ("passwordauthentication no", "kbdinteractiveauthentication no",
                    "permitemptypasswords no"):  # fmt: skip
        assert setting in sshd, setting
    assert re.search(r"^permitrootlogin (without-password|prohibit-password)$", sshd, re.M)
    if shutil.which("sshpass"):
        res = subprocess.run(
            ["ip", "netns", "exec", node.side.ns, "sshpass", "-p", "root", "ssh",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "PubkeyAuthentication=no", "-o", "ConnectTimeout=15",
             "-o", "PreferredAuthentications=password,keyboard-interactive",
             f"root@{NODE_IP}", "true"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert res.returncode != 0
        assert "Permission denied" in res.stderr, res.stderr


def test_unit_hardening_and_exabgp_in_the_agents_cgroup(node: Node) -> None:
    props = node.ssh.run(
        "systemctl show bgp-lb.service -p Type -p KillMode -p CapabilityBoundingSet "
        "-p NoNewPrivileges -p ProtectSystem -p TimeoutStopUSec -p WatchdogUSec -p Restart "
        "-p StartLimitBurst -p PrivateTmp -p StartLimitIntervalUSec"
    )
    values = dict(line.split("=", 1) for line in props.splitlines() if "=" in line)
    assert values["Type"] == "notify"
    assert values["StartLimitBurst"] == "5"
    assert values["StartLimitIntervalUSec"] == "10min"
    assert values["KillMode"] == "mixed"
    assert set(values["CapabilityBoundingSet"].split()) == {
        "cap_net_admin", "cap_net_bind_service", "cap_net_raw",
        "cap_setuid", "cap_setgid", "cap_kill",
        "cap_sys_admin", "cap_chown",  # FRR's zebra + bfdd for peers[].bfd (docs/bgp.md)
    }  # fmt: skip
    # no second zebra: Debian's own FRR service is masked (the agent runs its own)
    assert node.ssh.run("systemctl is-enabled frr.service || true").strip() == "masked"
    assert values["NoNewPrivileges"] == "yes"
    assert values["ProtectSystem"] == "strict"
    assert values["Restart"] == "on-failure"
    assert values["WatchdogUSec"] == "30s"
    # Up for longer than WatchdogSec without a restart: the agent's WATCHDOG=1 pings arrive.
    mono = node.ssh.run(
        "systemctl show -p ActiveEnterTimestampMonotonic -p NRestarts bgp-lb.service; "
        "cat /proc/uptime"
    ).split()
    shown = dict(x.split("=", 1) for x in mono if "=" in x)
    uptime = float(mono[-2])
    active_for = uptime - int(shown["ActiveEnterTimestampMonotonic"]) / 1e6
    assert shown["NRestarts"] == "0"
    if active_for < 35:
        time.sleep(35 - active_for)
    assert node.ssh.run("systemctl show -p NRestarts --value bgp-lb.service").strip() == "0"
    assert node.ssh.run("systemctl is-active bgp-lb.service").strip() == "active"
    procs = node.ssh.run("cat /sys/fs/cgroup/system.slice/bgp-lb.service/cgroup.procs")
    cmdlines = node.ssh.run(
        "for p in $(cat /sys/fs/cgroup/system.slice/bgp-lb.service/cgroup.procs); do "
        "tr '\\0' ' ' < /proc/$p/cmdline; echo; done"
    )
    assert "exabgp" in cmdlines, (procs, cmdlines)
    assert node.ssh.run("systemctl is-enabled exabgp.service", check=False).strip() in (
        "masked",
        "",
    )
    ruleset = node.ssh.run("nft list table inet bgplb_filter")
    assert ROUTER_IP in ruleset, ruleset
    assert f"{VIP} . tcp . 80" in ruleset, ruleset


def test_stop_withdraws_by_update_and_keeps_the_session_for_the_grace(node: Node) -> None:
    assert node.fib() == [NODE_IP]
    node.ssh.run("systemctl stop --no-block bgp-lb.service")
    t0 = time.monotonic()
    took = wait_for(lambda: node.fib() == [], 30, 0.02, "route withdrawn")
    # Withdrawn by UPDATE: the session is still up when the route is gone ...
    assert node.bgp_state() == "Established"
    print(f"\nsystemctl stop -> route gone: {took:.2f} s (session still up)")
    # ... and stays up for most of the grace period.
    while time.monotonic() - t0 < took + GRACE - 1.5:
        assert node.bgp_state() == "Established", "session dropped before shutdown_grace"
        time.sleep(0.2)
    wait_for(lambda: node.bgp_state() != "Established", GRACE + 30, 0.2, "session closed")
    wait_for(
        lambda: (
            node.ssh.run("systemctl is-active bgp-lb.service", check=False).strip() == "inactive"
        ),
        60,
        0.5,
        "bgp-lb inactive",
    )
    assert node.ssh.run("pgrep -fc exabgp", check=False).strip() == "0", "ExaBGP left running"


def test_sigkill_of_the_agent_drops_the_route_within_a_second(node: Node) -> None:
    node.ssh.run("systemctl reset-failed bgp-lb.service; systemctl start bgp-lb.service", 180)
    wait_for(lambda: node.fib() == [NODE_IP], 120, 0.05, "route back after start")
    t_noop = time.monotonic()
    node.ssh.run("true")
    ssh_latency = time.monotonic() - t_noop
    t0 = time.monotonic()
    node.ssh.run("systemctl kill --kill-who=main -s KILL bgp-lb.service")
    took = wait_for(lambda: node.fib() == [], 10, 0.01, "route gone after SIGKILL")
    upper = time.monotonic() - t0
    # The kill ran inside the ssh round trip, about half a no-op round trip before it returned.
    since_kill = took + ssh_latency / 2
    print(
        f"\nSIGKILL -> route gone: ~{since_kill:.2f} s (after ssh returned {took:.2f} s, "
        f"upper bound incl. the whole ssh call {upper:.2f} s, no-op ssh {ssh_latency:.2f} s)"
    )
    assert since_kill <= 1.0, f"route gone {since_kill:.2f}s after SIGKILL"
    # Restart=on-failure brings it back (after RestartSec) without an operator.
    wait_for(lambda: node.fib() == [NODE_IP], 120, 0.2, "route back after auto-restart")
    assert int(node.ssh.run("systemctl show -p NRestarts --value bgp-lb.service")) >= 1
