"""A lost ownership record is rebuilt from the kernel (issue 13, item 2): links and addresses by
their tags, IPVS services adopted when they are exactly what the config wants. The netlink
adapter runs on stub rtnetlink/IPVS tables (no kernel)."""

from __future__ import annotations

import ipaddress
import json
import logging
from pathlib import Path

import pytest

from bgplb.dataplane.ipvs import IpvsSnapshot
from bgplb.dataplane.netlink import NetlinkDataplane
from bgplb.dataplane.owned import adoptable
from bgplb.dataplane.ownership import RECORD_NAME, OwnershipRecord, decode_record
from bgplb.dataplane.rtnl import ADDRESS_PROTO, LINK_ALIAS, KernelAddress, KernelLink
from bgplb.model import (
    AddressSpec,
    DataplaneState,
    ForwardMethod,
    IPVSCounters,
    LinkSpec,
    Protocol,
    RealServerKey,
    RealServerSpec,
    VirtualServiceKey,
    VirtualServiceSpec,
)

from .test_dataplane_claim import StubRtnl

VIP = ipaddress.ip_address("10.99.0.1")
VS = VirtualServiceKey(VIP, 80, Protocol.TCP)
OTHER = VirtualServiceKey(VIP, 443, Protocol.TCP)
RS = RealServerKey(VS, ipaddress.ip_address("10.0.1.2"), 8080)
RS_OTHER = RealServerKey(OTHER, ipaddress.ip_address("10.0.1.2"), 8443)
WEB = KernelLink(index=2, name="web", kind="dummy", alias=LINK_ALIAS, up=True)
ZERO = IPVSCounters()

DESIRED = DataplaneState(
    links=frozenset({LinkSpec("web")}),
    addresses=frozenset({AddressSpec("web", VIP)}),
    services=frozenset({VirtualServiceSpec(VS, "wlc"), VirtualServiceSpec(OTHER, "wlc")}),
    real_servers=frozenset(
        {RealServerSpec(RS, 1, ForwardMethod.MASQ), RealServerSpec(RS_OTHER, 1, ForwardMethod.MASQ)}
    ),
)


class StubIpvs:
    """The kernel's IPVS table: ``VS`` exactly as desired, ``OTHER`` with another scheduler."""

    def __init__(self) -> None:
        self.services = {VS: VirtualServiceSpec(VS, "wlc"), OTHER: VirtualServiceSpec(OTHER, "rr")}
        self.real_servers = {
            RS: RealServerSpec(RS, 0, ForwardMethod.MASQ),  # weights are ours to set
            RS_OTHER: RealServerSpec(RS_OTHER, 1, ForwardMethod.MASQ),
        }

    async def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def snapshot(self) -> IpvsSnapshot:
        return IpvsSnapshot(
            services=dict(self.services),
            real_servers=dict(self.real_servers),
            service_counters=dict.fromkeys(self.services, ZERO),
            real_server_counters=dict.fromkeys(self.real_servers, ZERO),
        )


def kernel_with_our_objects(tmp_path: Path, proto: int | None = ADDRESS_PROTO) -> StubRtnl:
    rtnl = StubRtnl(tmp_path / RECORD_NAME, proto)
    rtnl.links_.append(WEB)
    rtnl.addrs.append(KernelAddress(WEB.index, "web", VIP, 32, proto))
    return rtnl


def set_aside_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".corrupt-" in p.name]


def adapter(tmp_path: Path, rtnl: StubRtnl) -> NetlinkDataplane:
    dp = NetlinkDataplane(tmp_path)
    dp._rtnl = rtnl  # type: ignore[assignment]
    dp._ipvs = StubIpvs()  # type: ignore[assignment]
    dp.set_desired_source(lambda: DESIRED)
    return dp


@pytest.mark.parametrize("bad", ["{corrupt", '{"version": 7}', "dir"])
async def test_a_lost_record_is_rebuilt_from_the_kernel(
    tmp_path: Path, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Was: every IPVS service we made became foreign (conflicts), and an unreadable record
    (EISDIR, EACCES) raised out of NetlinkDataplane() -> the agent did not start."""
    record = tmp_path / RECORD_NAME
    if bad == "dir":
        record.mkdir()
    else:
        record.write_text(bad)
    with caplog.at_level(logging.ERROR):
        dp = adapter(tmp_path, kernel_with_our_objects(tmp_path))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert RECORD_NAME in str(errors[0].__dict__["file"])
    assert dp.record_health.problem is not None
    assert dp.record_health.errors == 1
    assert set_aside_files(tmp_path)

    observed = await dp.observe()
    assert observed.owned.links == {LinkSpec("web")}  # by its tag
    assert observed.owned.addresses == {AddressSpec("web", VIP)}  # by its tag
    assert observed.owned.service_keys() == {VS}  # exactly as desired: adopted
    assert {r.key for r in observed.owned.real_servers} == {RS}
    assert observed.foreign_services == {OTHER}  # differs (scheduler): still not ours
    on_disk = decode_record(json.loads(record.read_text()))
    assert on_disk.services == {VS}
    assert on_disk.real_servers == {RS}
    assert dp.record_health.problem is None  # written again


async def test_untagged_addresses_on_our_link_are_adopted_on_old_kernels(tmp_path: Path) -> None:
    (tmp_path / RECORD_NAME).write_text("garbage")
    dp = adapter(tmp_path, kernel_with_our_objects(tmp_path, proto=None))
    observed = await dp.observe()
    assert observed.owned.addresses == {AddressSpec("web", VIP)}


async def test_a_missing_record_adopts_nothing(tmp_path: Path) -> None:
    """A first start (no file at all) never takes over an IPVS service: only a lost record."""
    dp = adapter(tmp_path, kernel_with_our_objects(tmp_path))
    observed = await dp.observe()
    assert observed.owned.service_keys() == frozenset()
    assert observed.foreign_services == {VS, OTHER}


def test_a_service_with_other_real_servers_is_not_adopted() -> None:
    snap = IpvsSnapshot(
        services={VS: VirtualServiceSpec(VS, "wlc")},
        real_servers={
            RS: RealServerSpec(RS, 1, ForwardMethod.MASQ),
            RealServerKey(VS, ipaddress.ip_address("10.0.9.9"), 80): RealServerSpec(
                RealServerKey(VS, ipaddress.ip_address("10.0.9.9"), 80), 1, ForwardMethod.MASQ
            ),
        },
        service_counters={},
        real_server_counters={},
    )
    assert adoptable(DESIRED, [WEB], [], snap, OwnershipRecord()).services == frozenset()


def test_the_agent_gives_the_adapter_the_desired_state(tmp_path: Path) -> None:
    import yaml

    from bgplb.agent import Agent
    from bgplb.bgp.fake import FakeSpeaker
    from bgplb.clock import FakeClock
    from bgplb.config import load_config
    from bgplb.eventlog import EventLog

    from .test_agent import raw_config

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw_config(tmp_path)))
    config = load_config(path)
    dp = NetlinkDataplane(tmp_path / "state")
    clock = FakeClock()
    Agent(config, dataplane=dp, speaker=FakeSpeaker(EventLog(clock)), clock=clock)
    assert dp._desired is not None
    assert LinkSpec("web") in dp._desired().links
    assert VS in dp._desired().service_keys()
