"""``services[].link_bandwidth``: UCMP from this node's healthy capacity (docs/bgp.md, "UCMP").

The knob lives on the service because capacity is per service (its real servers, or the node's
own backend for it) and because every node of a service must send the community or the routers
fall back to plain ECMP for that prefix. ``link_bandwidth: auto`` is the short form of
``link_bandwidth: {}`` (every default).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from .base import Strict
from .issues import ConfigIssue

U32 = 0xFFFFFFFF
SIGNIFICANT_BITS = 5  # quantization: 5 significant binary digits, a step of at most 1/16


class LinkBandwidthConfig(Strict):
    mode: Literal["auto"] = "auto"
    # services without real_servers (local backend, announce mode): the capacity while
    # healthy, in the units of real-server weights. With real_servers: the sum of the
    # healthy ones' weights (per address family of the VIP); ``capacity`` is refused there.
    capacity: int | None = Field(default=None, ge=1, le=65535)
    # bytes/s announced per unit of capacity (default: 1 Mbit/s); only ratios matter to the
    # routers, but FRR shows the value and takes at most 2^32-1 bytes/s
    unit: int = Field(default=125_000, ge=1, le=U32)
    # seconds after an announced change during which further changes wait (0 capacity and
    # the first value never wait); bounds the UPDATEs to one per hold_down per VIP
    hold_down: float = Field(default=10.0, ge=0, le=3600)


def parse_link_bandwidth(value: Any) -> Any:
    """``auto`` -> every default; anything else goes to the model as is."""
    return {} if value == "auto" else value


def quantize(capacity: int) -> int:
    """``capacity`` rounded (half up) to :data:`SIGNIFICANT_BITS` significant binary digits:
    exact up to 32, then steps of at most 1/16 (an error of at most ~3 %). The routers weigh
    in percent of the total, so finer steps would only send more UPDATEs."""
    if capacity <= 0:
        return 0
    shift = capacity.bit_length() - SIGNIFICANT_BITS
    if shift <= 0:
        return capacity
    return ((capacity + (1 << (shift - 1))) >> shift) << shift


def max_capacity(lb: LinkBandwidthConfig, weights: list[int]) -> int:
    """The largest capacity a VIP can announce: all its family's real servers healthy."""
    return quantize(sum(weights)) if weights else quantize(lb.capacity or 1)


def link_bandwidth_issues(service: Any, p: str) -> Iterator[ConfigIssue]:
    """``service`` is a ServiceConfig (not imported: schema imports this module)."""
    lb: LinkBandwidthConfig | None = service.link_bandwidth
    if lb is None:
        return
    lp = f"{p}.link_bandwidth"
    if lb.capacity is not None and service.real_servers:
        yield ConfigIssue(
            f"{lp}.capacity",
            "capacity is for services without real_servers: with real servers the capacity "
            "is the sum of the healthy ones' weights",
        )
    for k, vip in enumerate(service.vips):
        weights = [rs.weight for rs in service.real_servers if rs.address.version == vip.version]
        top = max_capacity(lb, weights) * lb.unit
        if top > U32:
            yield ConfigIssue(
                f"{lp}.unit",
                f"vips[{k}] can announce {top} bytes/s (capacity x unit), more than the "
                f"{U32} a link-bandwidth community carries: lower unit",
            )
            break
    for state in ("healthy", "degraded", "draining"):
        attrs = getattr(service.attributes, state)
        if attrs is None:
            continue
        for j, text in enumerate(attrs.extended_communities):
            if text.startswith("bandwidth:") or text.lower().startswith("0x4004"):
                yield ConfigIssue(
                    f"{p}.attributes.{state}.extended_communities[{j}]",
                    "a link-bandwidth community set by hand next to link_bandwidth: the "
                    "route would carry two; remove one",
                )
