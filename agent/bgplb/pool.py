"""Pure: pool mode's Maglev tables (``preserve_connections``, docs/forwarding.md "Pool mode").

Every LB node must build the same IPVS ``mh`` table for a virtual service. From
net/netfilter/ipvs/ip_vs_mh.c and ip_vs_ctl.c: the table is filled round-robin over
``svc->destinations`` (a collision goes to the earlier destination), a new destination is added
at the *head* of that list, and each destination's share comes from its last non-zero weight
(one added at weight 0 gets no slots). The hash keys are constants, so equal inputs give equal
tables on every node. Hence the canonical order (the config's ``real_servers`` order), the
destinations created in reverse canonical order at their configured weight, and an unhealthy
one lowered to weight 0 only after all adds (``plan.py``).

:class:`PoolTable` is what the policy wants; :func:`pool_views` compares it with the kernel's
dump (the dump lists ``svc->destinations`` head first) and fingerprints the table's inputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .model import ObservedDataplane, RealServerKey, VirtualServiceKey, VirtualServiceSpec

# CONFIG_IP_VS_MH_TAB_INDEX (default 12) picks primes[INDEX - 8] from
# {251, 509, 1021, 2039, 4093, 8191, ...} in ip_vs_mh.c: 4093 slots. The kernel does not
# report it; we assume the default (every distribution kernel we know uses it) and put it in
# the fingerprint so a node built otherwise can be told apart once this constant is changed.
MH_TABLE_SIZE = 4093


@dataclass(frozen=True)
class PoolTable:
    """One pool-mode virtual service as the config wants it: the real servers in canonical
    order and their intended (configured) weights, whatever their health."""

    service: str
    key: VirtualServiceKey
    order: tuple[RealServerKey, ...]
    weights: tuple[int, ...]

    def weight(self, key: RealServerKey) -> int:
        return self.weights[self.order.index(key)]


@dataclass(frozen=True)
class PoolView:
    """A pool-mode virtual service as the kernel has it."""

    service: str
    key: VirtualServiceKey
    order_ok: bool  # the dump lists the real servers in canonical order
    fingerprint: str  # short hash of the table's inputs ("" while the service is missing)
    observed: tuple[RealServerKey, ...]  # the dump's order


def order_repairable(table: PoolTable, current: Iterable[RealServerKey]) -> bool:
    """True if adding the missing real servers (in reverse canonical order, each at the head)
    to ``current`` (the dump's order; real servers not in the table are about to be removed)
    ends in canonical order: what is there must be the canonical order's tail."""
    wanted = set(table.order)
    kept = tuple(k for k in current if k in wanted)
    return kept == table.order[len(table.order) - len(kept) :]


def fingerprint(
    table: PoolTable,
    spec: VirtualServiceSpec,
    order: Iterable[RealServerKey],
    table_size: int = MH_TABLE_SIZE,
) -> str:
    """16 hex digits of sha256 over what decides the Maglev table: the dump's order of
    address:port, the intended weights (not the weight 0 of an unhealthy server: nodes whose
    checks disagree for a moment still build the same table), the flags, the scheduler and the
    table size. Real servers the config does not name count with weight 0."""
    wanted = dict(zip(table.order, table.weights, strict=True))
    parts = [
        f"scheduler={spec.scheduler}",
        f"mh_fallback={int(spec.mh_fallback)}",
        f"mh_port={int(spec.mh_port)}",
        f"persistence={spec.persistence or 0}",
        f"table_size={table_size}",
        *(f"{k}={wanted.get(k, 0)}" for k in order),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def pool_views(
    tables: Mapping[VirtualServiceKey, PoolTable], observed: ObservedDataplane
) -> tuple[PoolView, ...]:
    """Every pool-mode virtual service the kernel has (ours), compared and fingerprinted."""
    specs = {s.key: s for s in observed.owned.services}
    views = []
    for key, table in tables.items():
        spec = specs.get(key)
        if spec is None:
            continue
        order = tuple(observed.dest_order.get(key, ()))
        views.append(
            PoolView(
                table.service, key, order == table.order, fingerprint(table, spec, order), order
            )
        )
    return tuple(sorted(views, key=lambda v: (v.service, str(v.key))))
