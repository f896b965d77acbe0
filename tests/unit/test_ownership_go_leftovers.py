"""Started from the Go command line, a node without an ownership record adopts what the Go
bgp-lb left (issue 16 item 4): its untagged dummy named after the service, the VIP on it
(no IFA_PROTO), the IPVS service exactly as the config wants. `bgp-lb run` still adopts
nothing on a first start (test_ownership_rebuild.py). Stub rtnetlink/IPVS tables, no kernel."""

from __future__ import annotations

from pathlib import Path

from bgplb.dataplane.netlink import NetlinkDataplane
from bgplb.dataplane.owned import adoptable, owns_link
from bgplb.dataplane.ownership import RECORD_NAME, OwnershipRecord
from bgplb.dataplane.rtnl import KernelAddress, KernelLink
from bgplb.model import AddressSpec

from .test_dataplane_claim import StubRtnl
from .test_ownership_rebuild import DESIRED, VIP, VS, StubIpvs

GO_DUMMY = KernelLink(index=2, name="web", kind="dummy", alias=None, up=True)


def go_kernel(tmp_path: Path, link: KernelLink = GO_DUMMY) -> StubRtnl:
    rtnl = StubRtnl(tmp_path / RECORD_NAME, None)
    rtnl.links_.append(link)
    rtnl.addrs.append(KernelAddress(link.index, link.name, VIP, 32, None))
    return rtnl


def adapter(tmp_path: Path, rtnl: StubRtnl, adopt: bool) -> NetlinkDataplane:
    dp = NetlinkDataplane(tmp_path, adopt_first_start=adopt)
    dp._rtnl = rtnl  # type: ignore[assignment]
    dp._ipvs = StubIpvs()  # type: ignore[assignment]
    dp.set_desired_source(lambda: DESIRED)
    return dp


async def test_go_command_line_adopts_the_go_tools_dummy_vip_and_ipvs(tmp_path: Path) -> None:
    dp = adapter(tmp_path, go_kernel(tmp_path), adopt=True)
    observed = await dp.observe()
    assert "web" not in observed.foreign_links
    assert observed.owned.addresses == {AddressSpec("web", VIP)}
    assert observed.owned.service_keys() == frozenset({VS})  # OTHER differs: stays foreign
    assert (tmp_path / RECORD_NAME).exists()  # durable before anything is changed


async def test_bgp_lb_run_first_start_still_adopts_nothing(tmp_path: Path) -> None:
    dp = adapter(tmp_path, go_kernel(tmp_path), adopt=False)
    observed = await dp.observe()
    assert "web" in observed.foreign_links
    assert observed.owned.service_keys() == frozenset()


def test_only_an_untagged_dummy_with_a_wanted_name_is_adopted() -> None:
    for link in (
        KernelLink(2, "web", "veth", None, True),  # not a dummy
        KernelLink(2, "web", "dummy", "someone-else", True),  # another tool's alias
        KernelLink(2, "other", "dummy", None, True),  # not a configured service
    ):
        part = adoptable(DESIRED, [link], [], None, OwnershipRecord())
        assert part.links == frozenset(), link
    part = adoptable(DESIRED, [GO_DUMMY], [], None, OwnershipRecord())
    assert part.links == {"web"}
    assert owns_link(GO_DUMMY, part)
