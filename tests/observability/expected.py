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
