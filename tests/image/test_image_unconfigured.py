"""The appliance image booted WITHOUT a config disk: unconfigured, the API says why, and nothing
is announced (no BGP session, no ExaBGP, no route on the router)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import BOOT_TIMEOUT, RouterSide
from .guest import Guest
from .node import assert_nothing_announced, assert_unconfigured_api_says

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
    assert_unconfigured_api_says(bare_guest, "no config disk")


def test_nothing_is_announced(bare_guest: Guest, router_side: RouterSide) -> None:
    assert_nothing_announced(bare_guest, router_side)
