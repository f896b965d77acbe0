"""``bgp-lb drain --wait``, after the withdraw: watch the node's inbound packets per VIP.

The routers stop sending new flows once the routes are withdrawn, but packets of established
flows may still arrive (a router converging late, a peer that kept the route). The drain is
over when this node *receives* nothing more for the service: every VIP stays below
``threshold`` packets/s for ``quiet`` seconds. Active connection counts are the wrong signal:
in direct routing IPVS sees only the inbound half of a TCP flow, and an entry stays
ESTABLISHED until its timeout (900 s by default) even when no packet flows any more.

The rate is computed here from the ``packets_in`` counters of two
``/api/v1/services/{name}/traffic`` answers (read from the kernel at the request) divided by
the agent's monotonic time between them: it is 0 as soon as the packets stop. The kernel's own
estimator (``packets_in_per_second``, the status and the metric) is smoothed and takes tens
of seconds to decay.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from .status import TrafficResponse

DEFAULT_THRESHOLD = 1.0  # packets/s per VIP
DEFAULT_QUIET = 5.0  # seconds every VIP must stay below the threshold
POLL_INTERVAL = 1.0  # seconds between two reads of the counters
MAX_LISTED = 8  # VIPs listed per line; beyond that only the busiest are named

Fetch = Callable[[str], Any]  # GET path -> decoded JSON (client.request bound to a target)


class StillBusy(Exception):
    """The timeout passed with traffic still arriving; the message says where and how much."""


def traffic_path(service: str) -> str:
    return f"/api/v1/services/{urllib.parse.quote(service, safe='')}/traffic"


@dataclass
class _Vip:
    packets_in: int
    virtual_services: int
    at: float


@dataclass
class RateTracker:
    """Per-VIP rates from successive traffic answers, and how long every VIP has been quiet.

    A sample covers the agent-time interval since the previous answer; the quiet run starts at
    the beginning of the first sample in which every VIP was below the threshold, so it
    measures time the node really received (almost) nothing. A counter that went backwards or
    a VIP whose set of virtual services changed gives no rate for that sample (unknown: the
    quiet run restarts)."""

    threshold: float = DEFAULT_THRESHOLD
    last: dict[str, _Vip] = field(default_factory=dict)
    quiet_since: float | None = None
    now: float | None = None

    def update(self, answers: Sequence[TrafficResponse]) -> dict[str, float | None]:
        """The rate per ``service/vip`` for this round (None: unknown). Every answer must
        be an ipvs-mode one."""
        rates: dict[str, float | None] = {}
        start: float | None = None
        for answer in answers:
            for vip in answer.vips:
                name = f"{answer.service}/{vip.vip}"
                prev = self.last.get(name)
                self.last[name] = _Vip(vip.packets_in, vip.virtual_services, answer.monotonic)
                if prev is None or prev.virtual_services != vip.virtual_services:
                    rates[name] = None
                    continue
                if vip.virtual_services == 0:
                    rates[name] = 0.0  # no IPVS service for this VIP: nothing is forwarded
                    start = prev.at if start is None else max(start, prev.at)
                    continue
                span = answer.monotonic - prev.at
                delta = vip.packets_in - prev.packets_in
                if span <= 0 or delta < 0:
                    rates[name] = None
                    continue
                rates[name] = delta / span
                start = prev.at if start is None else max(start, prev.at)
            self.now = answer.monotonic if self.now is None else max(self.now, answer.monotonic)
        quiet = bool(rates) and all(r is not None and r < self.threshold for r in rates.values())
        if not quiet:
            self.quiet_since = None
        elif self.quiet_since is None:
            self.quiet_since = start
        return rates

    def quiet_for(self) -> float:
        """Seconds (agent time) every VIP has been below the threshold; 0 when it is not."""
        if self.quiet_since is None or self.now is None:
            return 0.0
        return self.now - self.quiet_since


def _rate_text(rate: float | None) -> str:
    return "?" if rate is None else f"{rate:.1f}/s"


def rate_line(elapsed: float, rates: dict[str, float | None], threshold: float) -> str:
    """One progress line: every VIP's rate, or (many VIPs) the busiest ones."""
    if len(rates) <= MAX_LISTED:
        body = "  ".join(f"{name} {_rate_text(r)}" for name, r in rates.items())
        return f"{elapsed:6.1f}s  {body}"
    busy = sorted(
        ((n, r) for n, r in rates.items() if r is None or r >= threshold),
        key=lambda item: -1.0 if item[1] is None else -item[1],
    )
    named = ", ".join(f"{n} {_rate_text(r)}" for n, r in busy[:5])
    more = f" (+{len(busy) - 5} more)" if len(busy) > 5 else ""
    return f"{elapsed:6.1f}s  {len(rates)} VIPs, {len(busy)} at or above {threshold:g}/s" + (
        f": {named}{more}" if busy else ""
    )


def announce_only(services: Sequence[str], out: TextIO) -> None:
    """Say which services have no IPVS counters (announce mode): only their withdraw counts."""
    if not services:
        return
    names = ", ".join(services[:5]) + (f" (+{len(services) - 5} more)" if len(services) > 5 else "")
    out.write(
        f"{names}: announce mode, the node has no IPVS counters for "
        f"{'it' if len(services) == 1 else 'them'}: waited for the withdraw only\n"
    )


@dataclass(frozen=True)
class WatchSettings:
    threshold: float = DEFAULT_THRESHOLD
    quiet: float = DEFAULT_QUIET
    interval: float = POLL_INTERVAL


def watch_traffic(
    fetch: Fetch,
    services: Sequence[str],
    out: TextIO,
    *,
    settings: WatchSettings,
    deadline: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    """Poll the services' traffic until every VIP stayed quiet for ``settings.quiet`` seconds;
    raise :class:`StillBusy` when ``clock()`` passes ``deadline`` first."""
    answers = [TrafficResponse.model_validate(fetch(traffic_path(s))) for s in services]
    ipvs = [a for a in answers if a.ipvs]
    announce_only([a.service for a in answers if not a.ipvs], out)
    if not any(a.vips for a in ipvs):
        return
    names = [a.service for a in ipvs]
    out.write(
        f"watching inbound packets per VIP (counter deltas, about every {settings.interval:g} s)"
        f" until each stays below {settings.threshold:g}/s for {settings.quiet:g} s\n"
    )
    tracker = RateTracker(settings.threshold)
    tracker.update(ipvs)
    started = clock()
    rates: dict[str, float | None] = {}
    while True:
        before = clock()
        if before >= deadline:
            busy = {n: r for n, r in rates.items() if r is None or r >= settings.threshold}
            shown = ", ".join(f"{n} {_rate_text(r)}" for n, r in list(busy.items())[:5])
            raise StillBusy(f"traffic still arriving at the timeout: {shown or 'unknown'}")
        sleep(max(0.0, settings.interval - (clock() - before)))
        round_ = [TrafficResponse.model_validate(fetch(traffic_path(s))) for s in names]
        rates = tracker.update(round_)
        out.write(rate_line(clock() - started, rates, settings.threshold) + "\n")
        if tracker.quiet_for() >= settings.quiet:
            out.write(
                f"quiet: every VIP below {settings.threshold:g}/s for {tracker.quiet_for():.1f} s\n"
            )
            return
