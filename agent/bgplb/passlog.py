"""What a reconcile pass logs: service decisions that changed, pool tables rebuilt or out of
order (moved out of reconciler.py; the events keep the reconciler's logger)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from .logs import log_event
from .model import VirtualServiceKey
from .policy import ServiceDecision
from .pool import PoolView

log = logging.getLogger("bgplb.reconciler")

SLOW_PASS_SECONDS = 2.0  # a pass this long is logged with where its time went


class PassTimer:
    """Seconds spent per phase of one pass, on the injected clock; ``log_if_slow`` logs one
    ``reconcile_slow`` WARNING with them when the pass took ``SLOW_PASS_SECONDS`` or more (a
    starved host: the lab's TCG guest took 9 s between a drain call and its decision)."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self.started = self._last = now()
        self.phases: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        """The time since the previous mark goes to ``phase``."""
        t = self._now()
        self.phases[phase] = self.phases.get(phase, 0.0) + (t - self._last)
        self._last = t

    def log_if_slow(self) -> None:
        total = self._last - self.started
        if total >= SLOW_PASS_SECONDS:
            phases = {f"{k}_seconds": round(v, 3) for k, v in self.phases.items()}
            log_event(log, "reconcile_slow", logging.WARNING, seconds=round(total, 3), **phases)


def log_pools(
    views: tuple[PoolView, ...],
    rebuilt: frozenset[VirtualServiceKey],
    warned: set[VirtualServiceKey],
) -> set[VirtualServiceKey]:
    """One WARNING when a pool table's order goes wrong while announced (the agent does
    not touch it then), one INFO per re-creation. Returns the tables warned about (pass it
    back next time: ``warned``)."""
    for key in sorted(rebuilt):
        log_event(log, "pool_table_rebuilt", vip=key.vip, port=key.port, protocol=key.protocol)
    wrong = {v.key: v for v in views if not v.order_ok}
    for key, v in sorted(wrong.items()):
        if key not in warned:
            log_event(
                log,
                "pool_table_order_wrong",
                logging.WARNING,
                service=v.service,
                vip=key.vip,
                port=key.port,
                protocol=key.protocol,
                observed=" ".join(str(k) for k in v.observed),
                fix="drain the node to let the agent rebuild the table",
            )
    return set(wrong)


def log_changes(
    before: Mapping[str, ServiceDecision], decisions: Mapping[str, ServiceDecision]
) -> None:
    """One line per service whose decision or reason changed since the last pass."""
    for name, d in decisions.items():
        old = before.get(name)
        if old is None or (old.decision, old.reason) != (d.decision, d.reason):
            log_event(
                log,
                "service_decision",
                service=name,
                decision=d.decision.value,
                reason=d.reason.value,
                detail=d.detail,
            )
