"""The appliance image, booted by itself under qemu (TCG) and configured the platforms' way: a
NoCloud ``cidata`` seed made by ``cloud-localds`` as a Proxmox VE node writes it (network-config
version 1, Proxmox's own user-data keys, plus ``write_files`` for the agent config and
firewall.yaml and a ``runcmd`` starting the demo backend). Against FRR.

Order matters (one VM for the module): boot -> configured by cloud-init (bgp-lb after it, no
schema warning), the network from the seed -> session up, no route while the backend is
unhealthy -> route after ``rise`` good checks -> HTTP through the VIP and IPVS -> /metrics from
the router -> no password login -> hardening -> ``bgp-lb doctor`` exit 0 -> stop withdraws by
UPDATE -> SIGKILL of the agent drops the route within 1 s.

The BGPLB disk and the OpenStack config-2 drive are booted by ``make test-image-full``
(test_image_bgplb_disk.py, test_image_config2.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from .conftest import IMAGE, NODE_IP, ROUTER_IP, VIP, RouterSide
from .guest import GUEST_MAC
from .node import (
    Node,
    assert_announced_only_after_rise,
    assert_configured_and_active,
    assert_configured_by_cloud_init,
    boot,
    run_doctor,
    wait_for,
)
from .seeds import API_PORT, agent_config, proxmox_v1_seed

pytestmark = pytest.mark.image

RISE = 4
INTERVAL = 1.0
GRACE = 5.0
CONFIG = agent_config(RISE, GRACE, INTERVAL)
HOSTNAME = "lbnode-v1"

__all__ = ["CONFIG", "Node", "wait_for"]  # (shared with the other image modules)


@pytest.fixture(scope="module")
def node(router_side: RouterSide, firmware: str) -> Iterator[Node]:
    seed = proxmox_v1_seed(router_side.workdir, router_side.public_key, HOSTNAME, CONFIG)
    console = f"console-configured-v1-{firmware}.log"
    with boot(router_side, console, [seed], firmware=firmware) as booted:
        yield booted


def test_boots_configured_by_cloud_init_and_agent_active(node: Node, firmware: str) -> None:
    assert_configured_and_active(node)
    print(f"\nqemu start -> BGPLB-BOOT configured (v1 seed): {node.boot_seconds:.1f} s wall (TCG)")
    # bgp-lb after cloud-init and bgp-lb-cloud-init; every stage done, no errors, and cloud-init's
    # schema check of the image's config plus this user-data passes (no "Invalid cloud-config")
    assert_configured_by_cloud_init(node, "DataSourceNoCloud", "nocloud")
    # the agent config and the firewall the seed wrote are the ones in force
    assert f"router_id: {NODE_IP}" in node.ssh.run("cat /etc/bgp-lb/config.yaml")
    ruleset = node.ssh.run("nft list table inet bgplb_filter")
    assert ROUTER_IP in ruleset, ruleset  # the configured policy (BGP from the peer) ...
    assert "UNCONFIGURED" not in ruleset, ruleset  # ... was loaded over the early one
    assert node.ssh.run("hostname").strip() == HOSTNAME
    # Self-booted: the firmware + boot loader from the disk itself, root by PARTUUID.
    assert "root=PARTUUID=" in node.ssh.run("cat /proc/cmdline")
    booted_by = node.ssh.run("test -d /sys/firmware/efi && echo uefi || echo bios").strip()
    assert booted_by == ("bios" if firmware == "bios" else "uefi")


def test_network_from_the_v1_seed_and_only_networkd_renders_it(node: Node) -> None:
    # cloud-init renamed the NIC (matched by MAC) to eth0 and rendered Proxmox's v1 config for
    # systemd-networkd; the image bakes no .network for a NIC (nothing for the seed's to lose
    # against), and nothing else (ifupdown, netplan, NetworkManager) holds one.
    nic = node.ssh.run(f"ip -o link | awk -F': ' '/{GUEST_MAC}/ {{print $2}}'").strip()
    assert nic == "eth0", nic
    assert f"{NODE_IP}/24" in node.ssh.run("ip -br -4 addr show dev eth0")
    baked = node.ssh.run("ls /usr/lib/systemd/network/ /etc/systemd/network/").split()
    for name in baked:
        if name.endswith(".network"):
            assert name.startswith(("80-", "10-cloud-init-")), baked  # systemd's: not NICs
    rendered = node.ssh.run("cat /etc/systemd/network/10-cloud-init-eth0.network")
    assert f"MACAddress={GUEST_MAC}" in rendered, rendered
    status = node.ssh.run("networkctl status eth0")
    assert "Network File: /etc/systemd/network/10-cloud-init-eth0.network" in status, status
    leftovers = node.ssh.run(
        "find /etc/network/interfaces.d /etc/netplan /etc/NetworkManager/system-connections "
        "-type f 2>/dev/null; dpkg -l ifupdown netplan.io network-manager 2>/dev/null | grep ^ii; "
        "command -v ifup netplan NetworkManager; true"
    )
    assert leftovers.strip() == "", leftovers
    # no wait-online stall: the unit is masked
    wait_online = node.ssh.run(
        "systemctl is-enabled systemd-networkd-wait-online.service", check=False
    )
    assert wait_online.strip().startswith("masked"), wait_online
    # Proxmox's gateway and nameserver
    assert f"default via {ROUTER_IP}" in node.ssh.run("ip -4 route show default")
    assert "DNS=192.0.2.1" in rendered.replace(" ", ""), rendered


def test_appliance_cloud_init_modules_stay_off(node: Node) -> None:
    log = node.ssh.run("cat /var/log/cloud-init.log")
    # cloud-init logs "Running config-<module> using lock" as the module list spells the name
    ran = {
        name.replace("-", "_") for name in re.findall(r"Running config-([\w-]+) using lock", log)
    }
    # package_upgrade: true in the user-data: the module that would run apt is not configured
    for module in ("package_update_upgrade_install", "growpart", "resizefs", "apt_configure",
                   "set_passwords", "mounts", "phone_home"):  # fmt: skip
        assert module not in ran, (module, ran)
    assert "write_files" in ran, ran
    # root logs in with the seed's key (no "Please login as" prefix); no default user was made
    assert "command=" not in node.ssh.run("cat /root/.ssh/authorized_keys")
    assert node.ssh.run("getent passwd debian", check=False).strip() == ""


def test_session_up_and_nothing_announced_while_unhealthy(node: Node) -> None:
    wait_for(lambda: node.bgp_state() == "Established", 120, 0.5, "BGP session Established")
    since = time.monotonic() - node.guest.started_at
    print(f"\nqemu start -> BGP session Established (as FRR sees it): {since:.1f} s")
    node.wait_demo_backend()  # its /ok is 404 until touched
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
    assert_announced_only_after_rise(node, RISE)


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


def test_doctor_passes_in_the_guest(node: Node) -> None:
    report = run_doctor(node, "configured v1")
    assert f"peer {ROUTER_IP}: Established" in report, report
    assert f"service web {VIP}: VIP and IPVS service present" in report, report


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
