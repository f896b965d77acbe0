"""BFD in the ECMP lab (containerlab/ecmp.clab.yml): a silent node death, run by
``make test-lab-extra`` (with the rolling upgrade), not by ``make test-lab``: under TCG the
frozen-node round trip did not fit make test-lab's 900 s budget beside the other tests. The
routers seeing BFD Up for every node stays in test_ecmp.py; the frozen node's route gone
within 1 s is tested on the host by tests/bgp (make test-bgp), and the tight figure is the
benchmark's (bench/node_death.py --bfd).
"""

from __future__ import annotations

from .death import describe, freeze_node, thaw_node
from .marks import LAB
from .runner import Lab

pytestmark = LAB


def test_silent_node_death_is_caught_by_bfd_not_the_hold_timer(lab: Lab) -> None:
    """lb3 frozen (nftables drops everything on its links, both ways): each router resets the
    session on BFD Down and drops lb3's path well inside the 9 s hold time; the client is not
    sent to it; thawed, it comes back. The tight figure (p99 <= 400 ms at 100 ms x 3) is the
    benchmark's (bench/node_death.py --bfd); a TCG guest only bounds it."""
    try:
        d = freeze_node(lab, "lb3")
        print(f"lb3 frozen: {describe(d)}")
        assert d.others_stable, d.unexpected
        assert d.by_bfd(), d.routers
        assert d.within(d.hold_time / 2), d.routers
        assert all(v.bfd == "down" for v in d.routers.values()), d.routers
        assert d.answered == 0
        assert d.failures == 0
    finally:
        back = thaw_node(lab, "lb3")
    print(f"lb3 back in every FIB {back.seconds:.2f}s after it was thawed")
    assert back.others_stable, back.unexpected
