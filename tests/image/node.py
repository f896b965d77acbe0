"""One booted appliance node seen from the router's namespace, and the checks every boot shares.

``boot()`` starts a guest with the given extra disks (a BGPLB disk, a cidata seed, a config-2
drive), waits for the console's BGPLB-BOOT marker and for SSH, and yields a :class:`Node`.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.harness.frr import fib

from .conftest import BOOT_TIMEOUT, NODE_IP, VIP, RouterSide
from .guest import Guest, Ssh

GUEST_BGP_LB = "/opt/bgp-lb/venv/bin/bgp-lb"
# cloud-init's schema check of the merged config (image cfg + user-data), logged on every boot
SCHEMA_WARNING = "Invalid cloud-config provided"


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - start


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

    def in_ns(self, *argv: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.side.ns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout + 5,
            check=False,
        )

    def curl(self, url: str, timeout: float = 10.0) -> tuple[int, str]:
        res = self.in_ns("curl", "-s", "-m", str(timeout), "-w", "\n%{http_code}", url,
                         timeout=timeout)  # fmt: skip
        body, _, code = res.stdout.rpartition("\n")
        return int(code or 0), body

    def wait_demo_backend(self, timeout: float = 120) -> float:
        """The seed's runcmd (cloud-final, ``--no-block``) starts the demo backend, which can
        come after the agent's BGP session: wait until the unit is active."""
        return wait_for(
            lambda: self.ssh.run(
                "systemctl is-active bgp-lb-demo-backend.service", check=False
            ).startswith("active"),
            timeout,
            1,
            "demo backend started by the seed's runcmd",
        )

    def agent_events(self) -> list[dict[str, object]]:
        """The agent's JSON log lines of this boot."""
        journal = self.ssh.run("journalctl -b -u bgp-lb.service -o cat --no-pager")
        events = []
        for line in journal.splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events


@contextlib.contextmanager
def boot(
    side: RouterSide, console: str, disks: list[Path], firmware: str = "bios"
) -> Iterator[Node]:
    """Boot the image with ``disks`` attached read-only (in this order) and SSH into it."""
    guest = Guest(side.ns, side.image, side.workdir / console, firmware=firmware)
    for disk in disks:
        guest.extra_args += ["-drive", f"file={disk},if=virtio,format=raw,readonly=on"]
    guest.start()
    ssh = Ssh(side.ns, NODE_IP, side.key, side.workdir)
    try:
        guest.wait_console(r"BGPLB-BOOT state=\S+ bgp-lb=\S+", BOOT_TIMEOUT)
        boot_seconds = time.monotonic() - guest.started_at
        ssh.wait_ready(120)
        yield Node(guest, ssh, side, boot_seconds)
    finally:
        ssh.close()
        guest.stop()


def assert_configured_and_active(node: Node) -> None:
    line = node.guest.wait_console(r"BGPLB-BOOT .*$", 1).group(0)
    assert "state=configured bgp-lb=active" in line, node.guest.console_text()[-4000:]
    assert node.ssh.run("systemctl is-active bgp-lb.service").strip() == "active"
    assert node.ssh.run("systemctl is-active bgp-lb-unconfigured.service", check=False).strip() in (
        "inactive",
        "unknown",
    )


def assert_configured_by_cloud_init(node: Node, datasource: str, cloud_id: str) -> None:
    """Configured from this instance's user-data, bgp-lb started after cloud-init, every stage
    done without errors, and cloud-init's schema check of the merged config passed."""
    journal = node.ssh.run("journalctl -b -u bgp-lb-cloud-init.service -o cat --no-pager")
    assert f"CONFIGURED from cloud-init ({datasource}" in journal, journal
    assert node.ssh.run("cloud-id").strip() == cloud_id
    stamps = node.ssh.run(
        "systemctl show -p ActiveEnterTimestampMonotonic --value cloud-init.service "
        "bgp-lb-cloud-init.service; "
        "systemctl show -p ExecMainStartTimestampMonotonic --value bgp-lb.service"
    ).split()
    cloud_init_done, ours_done, agent_start = (int(x) for x in stamps)
    assert 0 < cloud_init_done <= ours_done <= agent_start, stamps
    status = json.loads(node.ssh.run("cloud-init status --wait --format json", timeout=300))
    assert status["status"] == "done", status
    assert status["errors"] == [], status
    assert status["datasource"] == cloud_id, status
    # the boot finished with no failed unit (chrony-wait held multi-user.target 180 s without
    # an NTP server and then failed: the image masks it)
    state = node.ssh.run("systemctl is-system-running --wait", timeout=120, check=False).strip()
    failed = node.ssh.run("systemctl --failed --no-legend --plain", check=False)
    assert state == "running", (state, failed)
    assert_no_schema_warning(node)


def assert_no_schema_warning(node: Node, user_data: bool = True) -> None:
    """No "Invalid cloud-config provided" in this boot (console, cloud-init.log): the image's
    own cloud.cfg.d passes cloud-init's schema. With ``user_data``, also
    ``cloud-init schema --system`` (this instance's user-data) exits 0."""
    assert SCHEMA_WARNING not in node.guest.console_text(), node.guest.console_text()[-4000:]
    log = node.ssh.run("cat /var/log/cloud-init.log")
    assert SCHEMA_WARNING not in log, [x for x in log.splitlines() if "schema" in x]
    if user_data:
        res = node.ssh.run("cloud-init schema --system 2>&1; echo rc=$?", timeout=120)
        assert res.rstrip().endswith("rc=0"), res


def assert_announced_only_after_rise(node: Node, rise: int) -> None:
    """The agent's log: the check went up after ``rise`` successes, and only then was the
    service announced."""
    events = node.agent_events()
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
    assert up, events[-30:]
    assert announce, events[-30:]
    successes = events[up[0]]["successes"]
    assert isinstance(successes, int), events[up[0]]
    assert successes >= rise, events[up[0]]
    assert up[0] < announce[0], "announced before the check was up"


def assert_ipvs_serves_the_vip(node: Node) -> None:
    ipvs = node.ssh.run("ipvsadm -Ln")
    assert f"{VIP}:" in ipvs, ipvs
    assert f"{NODE_IP}:" in ipvs, ipvs


def run_doctor(node: Node, label: str) -> str:
    """``bgp-lb doctor`` in the guest: the whole path; Ssh.run fails on any exit but 0."""
    report = node.ssh.run(f"{GUEST_BGP_LB} doctor /etc/bgp-lb/config.yaml", timeout=180)
    print(f"\n[{label}] bgp-lb doctor (exit 0):\n{report}")
    return report


def assert_unconfigured_api_says(guest: Guest, reason: str) -> None:
    """An unconfigured node's console report: /api/v1/status 200 ``unconfigured`` whose reason
    names ``reason``, /readyz 503, ``bgplb_unconfigured 1`` on /metrics."""
    m = guest.wait_console(r"BGPLB-API-STATUS (\d+) (.*)$", 1)
    assert m.group(1) == "200"
    status = json.loads(json.loads(m.group(2)))
    assert status["state"] == "unconfigured"
    assert reason in status["reason"]
    assert guest.wait_console(r"BGPLB-API-READYZ (\d+)", 1).group(1) == "503"
    metrics = guest.wait_console(r"BGPLB-API-METRICS (\d+) (.*)$", 1)
    assert metrics.group(1) == "200"
    assert "bgplb_unconfigured 1.0" in metrics.group(2)


def assert_nothing_announced(guest: Guest, router_side: RouterSide) -> None:
    """No BGP session and no ExaBGP on the node, no VIP route and no Established session at r1."""
    m = guest.wait_console(r"BGPLB-BGP sessions=(\d+) exabgp_processes=(\d+)", 1)
    assert m.groups() == ("0", "0")
    assert fib(router_side.ns, f"{VIP}/32") == []
    data = router_side.router.vtysh_json(f"show bgp neighbors {NODE_IP} json")
    info = data.get(NODE_IP, {})
    assert isinstance(info, dict)
    assert info.get("bgpState") != "Established"
