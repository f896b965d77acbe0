"""Dashboard expressions that may return no series in a test stack, and why (shared by the host
stack, tests/observability/test_live.py, and the ECMP lab, tests/lab/test_observability.py)."""

from __future__ import annotations

# No service of either stack is in pool mode (services[].preserve_connections): the table
# fingerprint exists on no node, with or without IPVS, so exactly these are empty.
NO_POOL_METRICS = r"bgplb_ipvs_table_(fingerprint_info|order_ok)"
NO_POOL_HERE = frozenset(
    {
        "fleet.json panel 15 'Pool table fingerprints per virtual service' A",
        "alert BgplbPoolTableMismatch selector",
    }
)

# No service of the ECMP lab sets link_bandwidth (UCMP): the host stack's web does, so only the
# lab may find these empty.
NO_UCMP_METRICS = r"bgplb_link_bandwidth_bytes_per_second"
NO_UCMP_HERE = frozenset({"alert BgplbLinkBandwidthMissing selector"})
# No peer of either stack has bfd set (peers[].bfd, tests/bgp/test_bfd.py covers it): the
# per-peer BFD families exist on no node (bgplb_bfd_daemon_restarts_total always does).
NO_BFD_METRICS = r"bgplb_bfd_session_(up|state_changes_total)"
NO_BFD_HERE = frozenset(
    {
        "node.json panel 21 'BFD session up per peer' A",
        "node.json panel 22 'BFD state changes and bfdd restarts (15m)' A",
        "alert BgplbBfdDownWhileBgpEstablished selector",
    }
)
