"""A rolling upgrade of the ECMP lab under client traffic (docs/operations.md#rolling-upgrade-
bgp-lb-fleet-roll), run by ``make test-lab-roll``. It uses the session's lab (conftest.py) and
leaves every node at the new image version, undrained and announced; given with the other lab
modules, list it last.

The lab's agents run from the host's venv, so the "new version" is the new disk's: an empty
state_dir, a new IMAGE_VERSION in the /etc/os-release the agent reads (buildinfo.py), the
seed's config with node.start_drained (the node comes up drained), the agent started again."""

from __future__ import annotations

from bgplb import __version__

from .demo import SERVICE
from .marks import LAB
from .observe import agent_status, fib_snapshot
from .rolling import roll_under_load
from .runner import Lab

pytestmark = LAB

LBS = ["lb1", "lb2", "lb3"]
NEW_IMAGE = "lab-2"


def test_rolling_upgrade_under_traffic_loses_no_new_request(lab: Lab) -> None:
    before = agent_status(lab)
    assert all(before[n]["node"]["image_version"] != NEW_IMAGE for n in LBS)  # type: ignore[index]
    run = roll_under_load(lab, lab.dir, NEW_IMAGE, __version__)
    print(
        f"roll: exit {run.exit_status} in {run.seconds:.1f}s (per node: {run.per_node}); "
        f"{run.requests} requests at {run.rate}/s, {run.failures} failed {run.errors}; open "
        f"across a next-hop change and reset: {run.in_flight_resets} ({run.fib_changes} FIB "
        "changes)"
    )
    assert run.exit_status == 0, run.output
    assert run.summary.get("ok") is True
    assert [n["outcome"] for n in run.summary["nodes"]] == ["rolled"] * 3  # type: ignore[attr-defined]
    # the roll's own counts (the client's log, read after each step) add up
    assert int(run.summary["sent"]) > 0  # type: ignore[call-overload]
    assert run.rate >= 10
    assert run.failures == 0, run.errors
    after = agent_status(lab)
    for n in LBS:
        node = after[n]["node"]
        assert node["image_version"] == NEW_IMAGE, n  # type: ignore[index]
        assert node["version"] == __version__, n  # type: ignore[index]
        assert node["drained"] is False, n  # type: ignore[index]
        (svc,) = [s for s in after[n]["services"] if s["name"] == SERVICE]  # type: ignore[attr-defined]
        assert svc["decision"] == "announce", (n, svc["reason"])
        assert all(svc["routes"].get(p) for p in svc["peers"]), (n, svc["routes"])
    snap = fib_snapshot(lab)
    assert all(list(nodes) == LBS for nodes in snap.values()), snap
