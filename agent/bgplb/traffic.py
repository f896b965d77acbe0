"""A service's inbound traffic per VIP: which IPVS virtual services carry each VIP, and sums.

Pure: the metrics (``bgplb_vip_inbound_packets_per_second``), the status and the API's
``/api/v1/services/{name}/traffic`` read the same sums from IPVS counters. An announce-mode
service has no IPVS virtual services, hence no counters: its map is empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .config import ServiceConfig
from .model import IPAddress, IPVSCounters, ServiceMode, VirtualServiceKey
from .status import TrafficResponse, VipTraffic

# (service name, VIP) -> the virtual services (one per port) that carry that VIP
VipServices = Mapping[tuple[str, IPAddress], tuple[VirtualServiceKey, ...]]


def service_vips(svc: ServiceConfig) -> dict[IPAddress, tuple[VirtualServiceKey, ...]]:
    """Per VIP of an ipvs-mode service, its virtual services; empty in announce mode."""
    if svc.mode is not ServiceMode.IPVS:
        return {}
    return {
        vip: tuple(VirtualServiceKey(vip, p.port, p.protocol) for p in svc.ports)
        for vip in dict.fromkeys(svc.vips)
    }


def vip_services(
    services: Iterable[ServiceConfig],
) -> dict[tuple[str, IPAddress], tuple[VirtualServiceKey, ...]]:
    """:data:`VipServices` of every ipvs-mode service in the config."""
    return {(svc.name, vip): keys for svc in services for vip, keys in service_vips(svc).items()}


@dataclass(frozen=True)
class VipSums:
    """One VIP's inbound counters, summed over those of its virtual services the kernel has."""

    packets_in: int
    packets_in_per_second: int  # the kernel's estimator (smoothed)
    virtual_services: int  # how many of the VIP's virtual services were found


def vip_sums(
    keys: Iterable[VirtualServiceKey], counters: Mapping[VirtualServiceKey, IPVSCounters]
) -> VipSums:
    found = [counters[k] for k in keys if k in counters]
    return VipSums(
        packets_in=sum(c.packets_in for c in found),
        packets_in_per_second=sum(c.packets_in_per_second for c in found),
        virtual_services=len(found),
    )


def traffic_response(
    svc: ServiceConfig, counters: Mapping[VirtualServiceKey, IPVSCounters], monotonic: float
) -> TrafficResponse:
    """The API's answer for one service from counters read at ``monotonic``."""
    vips = service_vips(svc)
    rows = []
    for vip, keys in vips.items():
        sums = vip_sums(keys, counters)
        rows.append(
            VipTraffic(
                vip=vip,
                packets_in=sums.packets_in,
                packets_in_per_second=sums.packets_in_per_second,
                virtual_services=sums.virtual_services,
            )
        )
    return TrafficResponse(
        service=svc.name,
        mode=svc.mode,
        ipvs=svc.mode is ServiceMode.IPVS,
        monotonic=monotonic,
        vips=rows,
    )


def inbound_rates(
    svc: ServiceConfig, counters: Mapping[VirtualServiceKey, IPVSCounters]
) -> dict[str, int]:
    """The status's per-VIP estimator (VIPs none of whose virtual services exist left out)."""
    out = {}
    for vip, keys in service_vips(svc).items():
        sums = vip_sums(keys, counters)
        if sums.virtual_services:
            out[str(vip)] = sums.packets_in_per_second
    return out
