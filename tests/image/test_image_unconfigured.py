"""The appliance image booted WITHOUT a config disk: unconfigured, the API says why, and nothing
is announced (no BGP session, no ExaBGP, no route on the router)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.frr import fib

from .conftest import BOOT_TIMEOUT, NODE_IP, VIP, RouterSide
from .guest import Guest

pytestmark = [pytest.mark.image, pytest.mark.image_full]


@pytest.fixture(scope="module")
def bare_guest(image: Path, router_side: RouterSide) -> Iterator[Guest]:
    guest = Guest(router_side.ns, image, router_side.workdir / "console-unconfigured.log")
    guest.start()
    try:
        guest.wait_console(r"BGPLB-BGP sessions=\d+", BOOT_TIMEOUT)
        print(f"\nboot (no config disk) to report: {time.monotonic() - guest.started_at:.1f} s")
        yield guest
    finally:
        guest.stop()


def test_no_config_disk_means_unconfigured(bare_guest: Guest) -> None:
    boot = bare_guest.wait_console(r"BGPLB-BOOT (.*)$", 1).group(1)
    assert "state=unconfigured" in boot
    assert "bgp-lb=inactive" in boot  # the agent is not even started
    reason = bare_guest.wait_console(r"BGPLB-REASON (.*)$", 1).group(1)
    assert "no config disk" in reason


def test_unconfigured_api_says_why(bare_guest: Guest) -> None:
    m = bare_guest.wait_console(r"BGPLB-API-STATUS (\d+) (.*)$", 1)
    assert m.group(1) == "200"
    status = json.loads(json.loads(m.group(2)))
    assert status["state"] == "unconfigured"
    assert "no config disk" in status["reason"]
    assert bare_guest.wait_console(r"BGPLB-API-READYZ (\d+)", 1).group(1) == "503"
    metrics = bare_guest.wait_console(r"BGPLB-API-METRICS (\d+) (.*)$", 1)
    assert metrics.group(1) == "200"
    assert "bgplb_unconfigured 1.0" in metrics.group(2)


def test_nothing_is_announced(bare_guest: Guest, router_side: RouterSide) -> None:
    m = bare_guest.wait_console(r"BGPLB-BGP sessions=(\d+) exabgp_processes=(\d+)", 1)
    assert m.groups() == ("0", "0")
    assert fib(router_side.ns, f"{VIP}/32") == []
    data = router_side.router.vtysh_json(f"show bgp neighbors {NODE_IP} json")
    info = data.get(NODE_IP, {})
    assert isinstance(info, dict)
    assert info.get("bgpState") != "Established"
