"""The SAME disk as test_image_configured.py, booted by UEFI (OVMF -> shim -> GRUB on the ESP)
with the same config disk, against FRR: one short boot that checks the firmware really was UEFI,
the agent is active, the VIP is announced and serves HTTP through IPVS, and `bgp-lb doctor`
passes. The node fixture is test_image_configured.py's own; only ``firmware`` differs.

Part of `make test-image-full`, not of `make test`: `make test-image` already boots the disk under
OVMF (test_image_cloudinit.py, the v2 seed) and SeaBIOS (test_image_configured.py, the v1 seed);
this module is the Secure Boot check and a UEFI boot of the configured node's full setup.

``BGPLB_IMAGE_UEFI=uefi-secureboot`` boots OVMF's Secure Boot build with Microsoft's keys
enrolled instead (q35 + SMM, slower under TCG) and then also checks that Secure Boot was on.
"""

from __future__ import annotations

import os
import time

import pytest

from .conftest import NODE_IP, VIP
from .test_image_configured import (  # the configured boot, reused as it is
    Node,
    node,  # noqa: F401 (a fixture)
    wait_for,
)

pytestmark = [pytest.mark.image, pytest.mark.image_full]

FIRMWARE = os.environ.get("BGPLB_IMAGE_UEFI", "uefi")
# EFI global variable GUID: SecureBoot-<guid> holds 4 attribute bytes, then 1 (on) or 0 (off).
SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"


@pytest.fixture(scope="module")
def firmware() -> str:
    assert FIRMWARE in ("uefi", "uefi-secureboot"), f"BGPLB_IMAGE_UEFI={FIRMWARE!r}"
    return FIRMWARE


def test_uefi_boot_configured_and_agent_active(node: Node) -> None:  # noqa: F811 (the fixture)
    line = node.guest.wait_console(r"BGPLB-BOOT .*$", 1).group(0)
    assert "state=configured" in line, node.guest.console_text()[-4000:]
    # One ssh round trip (each is seconds under TCG): firmware, command line, agent, Secure Boot.
    fw, cmdline, agent, sb, lockdown = node.ssh.run(
        "test -d /sys/firmware/efi && echo uefi || echo bios; cat /proc/cmdline; "
        "systemctl is-active bgp-lb.service || true; "
        f"echo $(od -An -tu1 {SECURE_BOOT_VAR} 2>/dev/null); "
        "cat /sys/kernel/security/lockdown 2>/dev/null || echo"
    ).splitlines()
    # Booted by the firmware's UEFI boot manager from the ESP, not by SeaBIOS.
    assert fw == "uefi"
    console = node.guest.console_text()
    assert "BdsDxe: starting" in console, console[:3000]  # OVMF's boot manager started the disk
    assert "root=PARTUUID=" in cmdline
    assert agent == "active"
    secure = sb.split()
    if FIRMWARE == "uefi-secureboot":
        assert secure[-1:] == ["1"], f"SecureBoot variable: {secure}"
        assert "[integrity]" in lockdown or "[confidentiality]" in lockdown, lockdown
    print(
        f"\n{FIRMWARE}: boot to BGPLB-BOOT marker {node.boot_seconds:.1f} s wall (TCG); "
        f"SecureBoot={secure[-1] if secure else 'absent'} lockdown={lockdown!r}"
    )


def test_uefi_route_announced_and_http_through_the_vip(node: Node) -> None:  # noqa: F811 (the fixture)
    wait_for(lambda: node.bgp_state() == "Established", 120, 0.5, "BGP session Established")
    node.wait_demo_backend()
    node.ssh.run("touch /run/bgp-lb-demo/ok")
    wait_for(lambda: node.fib() == [NODE_IP], 60, 0.1, "VIP in the router's FIB")
    print(f"\nqemu start -> VIP in r1's FIB: {time.monotonic() - node.guest.started_at:.1f} s")
    code, body = node.curl(f"http://{VIP}/")
    assert code == 200, body
    assert "bgp-lb demo backend" in body
    assert f"{VIP}:80" in node.ssh.run("ipvsadm -Ln")


def test_uefi_doctor_passes(node: Node) -> None:  # noqa: F811 (the fixture)
    # check=True: fails with doctor's own report (each failure and its fix) unless it exits 0.
    out = node.ssh.run("/opt/bgp-lb/venv/bin/bgp-lb doctor /etc/bgp-lb/config.yaml", 60)
    assert out.strip(), "doctor printed nothing"
