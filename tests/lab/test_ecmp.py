"""Acceptance of the ECMP lab (containerlab/ecmp.clab.yml), run by ``make test-lab``.

Needs root and a kernel with IPVS + dummy: ``python -m tests.lab test`` boots ONE virtme-ng
VM for the lab modules when the host kernel has neither. One lab for the whole run
(conftest.py); the tests run in file order (failure and drain leave the lab as they found it).
"""

from __future__ import annotations

from .death import bfd_states
from .demo import SERVICE, withdraw_bound
from .marks import LAB
from .observe import (
    advertised_metrics,
    agent_get,
    agent_settings,
    agent_status,
    fib_snapshot,
    rib_nodes,
)
from .runner import Lab
from .scenario import drain_under_load, fail_backend, restore_backend, spread

pytestmark = LAB

LBS = ["lb1", "lb2", "lb3"]


def test_both_routers_have_three_next_hops_for_the_v4_and_v6_vip(lab: Lab) -> None:
    snap = fib_snapshot(lab)
    assert set(snap) == {(r, v) for r in ("r1", "r2") for v in ("10.99.0.1", "fd00:99::1")}
    for key, nodes in snap.items():
        assert list(nodes) == LBS, key
    # BFD (fleet.yaml's 1000 ms x 3 on both sides): every router's session to every node is Up
    for router, states in bfd_states(lab).items():
        assert sorted(n for n, st in states.items() if st == "up") == LBS, (router, states)


def test_client_flows_spread_over_both_routers_and_every_node(lab: Lab) -> None:
    sp = spread(lab, count=60)
    assert sp.failures == 0, sp.errors
    for vip, counts in sp.counts.items():
        assert sorted(counts) == LBS, vip
    assert all(p > 50 for p in sp.router_rx.values()), sp.router_rx


def test_ribs_agent_status_and_metrics_agree_on_what_is_advertised(lab: Lab) -> None:
    vips = lab.vips()
    prefixes = {f"{v}/{128 if ':' in v else 32}" for v in vips}
    # routers' RIBs: every lb has a valid path for every VIP on every router
    rib = {(r, v): rib_nodes(lab, r, v) for r in ("r1", "r2") for v in vips}
    assert all(list(nodes) == LBS for nodes in rib.values()), rib
    # agents: status says each VIP is announced to both routers; metrics count the same
    status = agent_status(lab)
    metrics = agent_get(lab, LBS, "/metrics")
    for node in LBS:
        (svc,) = [s for s in status[node]["services"] if s["name"] == SERVICE]  # type: ignore[attr-defined]
        routes = {peer: set(p) for peer, p in svc["routes"].items()}
        assert len(routes) == 2, routes
        assert all(p == prefixes for p in routes.values()), routes
        # the peers are the routers of this node's config
        assert set(routes) == {str(p["address"]) for p in agent_settings(lab, node)["peers"]}
        adv = advertised_metrics(metrics[node], SERVICE)
        assert len(adv) == 2, adv
        assert all(v == len(prefixes) for v in adv.values()), adv


def test_health_failure_withdraws_exactly_that_node_in_time(lab: Lab) -> None:
    bound = withdraw_bound(lab, "lb1")
    gone = fail_backend(lab, "lb1", timeout=60)
    try:
        print(f"lb1 withdrawn from every FIB in {gone.seconds:.2f}s ({gone.polls} polls)")
        assert gone.others_stable, gone.unexpected
        assert gone.seconds <= bound
        after = spread(lab, count=20)
        assert after.failures == 0
        assert all("lb1" not in counts for counts in after.counts.values())
    finally:
        back = restore_backend(lab, "lb1", timeout=90)
    print(f"lb1 back in every FIB {back.seconds:.2f}s after its backend restarted")
    assert back.others_stable, back.unexpected


def test_drain_under_load_loses_no_new_connection(lab: Lab) -> None:
    """Zero failed requests, except a connection open at the very moment a router's ECMP set
    changed: stateless ECMP hashes it to a node without its socket, which resets it (the same
    physics as the long-lived connections). Those are classified by their timing against the
    polled FIB change (scenario.open_across_change), counted and printed, not hidden; any
    other failure (refused, timeout, a reset of a connection opened after the change) fails."""
    d = drain_under_load(lab, "lb2", SERVICE, lab.dir)
    print(
        f"drain: lb2 gone in {d.withdraw_seconds:.2f}s; {d.requests} requests at {d.rate}/s, "
        f"{d.failures} failed {d.errors}; open across the next-hop change and reset: "
        f"{d.in_flight_resets} {d.in_flight_errors}; long-lived connections reset: "
        f"{d.held_reset}/{d.held} {d.held_reset_by_node}; lb2 answers after it left every FIB: "
        f"{d.node_answers_after_gone}"
    )
    assert d.rate >= 20
    assert d.failures == 0, d.errors
    assert d.node_answers_after_gone == 0
    # long-lived flows on lb2 are rehashed to nodes without their state: counted, not hidden
    assert d.held > 0
    assert set(d.held_reset_by_node) <= {"lb2"}
