"""The appliance image with a cloud-init seed (made by ``cloud-localds``) whose user-data is bad
YAML: cloud-init applies none of it, so the node is unconfigured, says why (naming cloud-init's
datasource and what cloud-init logged), and announces nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import BOOT_TIMEOUT, RouterSide, cloud_localds
from .guest import Guest
from .node import assert_nothing_announced, assert_unconfigured_api_says

pytestmark = pytest.mark.image

# An unterminated quoted scalar: not YAML at all.
BAD_USER_DATA = """\
#cloud-config
write_files:
  - path: /etc/bgp-lb/config.yaml
    content: "node: {router_id: 192.0.2.10
"""


@pytest.fixture(scope="module")
def bad_seed_guest(image: Path, router_side: RouterSide) -> Iterator[Guest]:
    seed = router_side.workdir / "seed-bad"
    seed.mkdir()
    (seed / "user-data").write_text(BAD_USER_DATA)
    (seed / "meta-data").write_text("instance-id: bad-user-data-1\nlocal-hostname: lbnode-bad\n")
    iso = cloud_localds(router_side.workdir / "seed-bad.iso", seed)
    console = router_side.workdir / "console-cloudinit-bad.log"
    guest = Guest(router_side.ns, image, console, iso)
    guest.start()
    try:
        guest.wait_console(r"BGPLB-BGP sessions=\d+", BOOT_TIMEOUT)
        print(f"\nboot (bad user-data) to report: {time.monotonic() - guest.started_at:.1f} s")
        yield guest
    finally:
        guest.stop()


def test_bad_user_data_means_unconfigured(bad_seed_guest: Guest) -> None:
    boot = bad_seed_guest.wait_console(r"BGPLB-BOOT (.*)$", 1).group(1)
    assert "state=unconfigured" in boot
    assert "bgp-lb=inactive" in boot
    reason = bad_seed_guest.wait_console(r"BGPLB-REASON (.*)$", 1).group(1)
    assert "cloud-init (DataSourceNoCloud" in reason, reason
    assert "no write_files entry for /etc/bgp-lb/config.yaml" in reason, reason
    print(f"\nreason: {reason}")


def test_unconfigured_api_says_why(bad_seed_guest: Guest) -> None:
    assert_unconfigured_api_says(bad_seed_guest, "cloud-init")


def test_nothing_is_announced(bad_seed_guest: Guest, router_side: RouterSide) -> None:
    assert_nothing_announced(bad_seed_guest, router_side)
