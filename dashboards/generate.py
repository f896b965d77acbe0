"""Generate the bgp-lb Grafana dashboards (JSON) with grafana-foundation-sdk.

    python dashboards/generate.py [OUT_DIR]      (default: the directory of this file)

Metric names come from agent/bgplb/metrics/. Every series carries ``job="bgplb"`` and a
``node`` label, both set by Prometheus (file_sd target labels, see prometheus.yml), never by
the agent. CI regenerates into a temporary directory and fails when the committed JSON differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from panel import Kind, Panel, Query, Row, build_dashboard, label_variable

HERE = Path(__file__).resolve().parent

NODES = 'job="bgplb",node=~"$node"'
SVC = f'{NODES},service=~"$service"'
RATE = "[$__rate_interval]"


def _quantiles(metric: str, by: str, sel: str, legend: str) -> tuple[Query, ...]:
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{sel}}}{RATE})))",
            f"{name} {legend}",
        )
        for q, name in (("0.5", "p50"), ("0.99", "p99"))
    )


FLEET_ROWS = (
    Row(
        "Fleet",
        (
            Panel(
                "Agents up",
                Kind.STAT,
                (Query(f"sum(up{{{NODES}}})", "up"), Query(f"count(up{{{NODES}}})", "targets")),
                "short",
                "Agents Prometheus scrapes successfully, out of all bgp-lb targets.",
                width=6,
                height=5,
            ),
            Panel(
                "Nodes announcing each service",
                Kind.STAT,
                (
                    Query(
                        f'sum by (service) (bgplb_service_decision{{{SVC},decision!="withdraw"}})',
                        "{{service}}",
                    ),
                ),
                "short",
                "Per service, the nodes whose decision is announce, degraded or draining. "
                "0 means the VIP is withdrawn everywhere.",
                width=6,
                height=5,
            ),
            Panel(
                "Decision and reason per node",
                Kind.TABLE,
                (
                    Query(f"bgplb_service_decision{{{SVC}}} == 1", "{{node}} {{service}}"),
                    Query(f"bgplb_service_reason{{{SVC}}} == 1", "{{node}} {{service}}"),
                ),
                "short",
                "The current route decision of every node x service and why it was taken.",
                width=12,
                height=5,
            ),
        ),
    ),
    Row(
        "Health and routes",
        (
            Panel(
                "Service health per node",
                Kind.STATE,
                (Query(f"bgplb_service_healthy{{{SVC}}}", "{{node}} {{service}}"),),
                "short",
                "1 while the service's checks pass on the node.",
                up_down=True,
            ),
            Panel(
                "Routes advertised per node and peer",
                Kind.TIMESERIES,
                (
                    Query(
                        f"sum by (node, service, peer) (bgplb_routes_advertised{{{SVC}}})",
                        "{{node}} {{service}} -> {{peer}}",
                    ),
                ),
                "short",
                "Routes the node's speaker has announced to each peer for the service.",
            ),
            Panel(
                "BGP sessions per peer",
                Kind.STATE,
                (Query(f"bgplb_bgp_session_up{{{NODES}}}", "{{node}} -> {{peer}}"),),
                "short",
                "1 while the BGP session is established.",
                up_down=True,
            ),
            Panel(
                "Check latency p50 / p99",
                Kind.TIMESERIES,
                _quantiles(
                    "bgplb_check_duration_seconds", "node, service", SVC, "{{node}} {{service}}"
                ),
                "s",
                "Health check probe duration per node and service.",
            ),
        ),
    ),
    Row(
        "Traffic (IPVS)",
        (
            Panel(
                "Traffic share per node (bytes)",
                Kind.TIMESERIES,
                (
                    Query(
                        f"sum by (node) (rate(bgplb_ipvs_bytes_total{{{NODES}}}{RATE}))"
                        f" / ignoring (node) group_left"
                        f" sum(rate(bgplb_ipvs_bytes_total{{{NODES}}}{RATE}))",
                        "{{node}}",
                    ),
                ),
                "percentunit",
                "Each node's share of the bytes its IPVS virtual services moved (ECMP spread).",
            ),
            Panel(
                "New connections per node",
                Kind.TIMESERIES,
                (
                    Query(
                        f"sum by (node) (rate(bgplb_ipvs_connections_total{{{NODES}}}{RATE}))",
                        "{{node}}",
                    ),
                ),
                "cps",
                "Connections IPVS scheduled per second, per node.",
            ),
            Panel(
                "Inbound packets per VIP",
                Kind.TIMESERIES,
                (
                    Query(
                        f"bgplb_vip_inbound_packets_per_second{{{SVC}}}",
                        "{{node}} {{service}} {{vip}}",
                    ),
                ),
                "pps",
                "Packets per second arriving at each node for each service VIP (all its ports): "
                "the kernel's smoothed estimator, so a drained node falls to 0 over ~30-60 s. "
                "bgp-lb drain --wait watches the same traffic without the lag.",
            ),
            Panel(
                "Active connections per real server, by node",
                Kind.TIMESERIES,
                (
                    Query(
                        "sum by (real_server, node) "
                        f"(bgplb_ipvs_real_server_active_connections{{{NODES}}})",
                        "{{real_server}} via {{node}}",
                    ),
                ),
                "short",
                "IPVS active connections per real server (all its virtual services), one line "
                "per LB node: with a shared pool every node should spread alike. With direct "
                "routing an entry stays active until its timeout, not until the flow ends.",
            ),
            Panel(
                "Pool table fingerprints per virtual service",
                Kind.TIMESERIES,
                (
                    Query(
                        "count by (service, vip, port, protocol) "
                        "(count by (service, vip, port, protocol, fingerprint) "
                        f"(bgplb_ipvs_table_fingerprint_info{{{SVC}}}))",
                        "{{service}} {{vip}}:{{port}}/{{protocol}}",
                    ),
                ),
                "short",
                "Distinct Maglev table fingerprints across the nodes per pool-mode virtual "
                "service: 1 when every node builds the same table (a flow that moves keeps its "
                "real server); above 1 the nodes disagree (order, weights, flags or size).",
                width=24,
            ),
        ),
    ),
)

NODE = 'job="bgplb",node="$node"'
NSVC = f'{NODE},service=~"$service"'
RS = "{{vip}}:{{port}}/{{protocol}} -> {{real_server}}"

NODE_ROWS = (
    Row(
        "Checks and decisions",
        (
            Panel(
                "Checks",
                Kind.STATE,
                (Query(f"bgplb_check_up{{{NSVC}}}", "{{service}} {{target}} {{check}}"),),
                "short",
                "Tracker status of every check (target empty: the node's own check).",
                width=12,
                up_down=True,
            ),
            Panel(
                "Decision over time",
                Kind.STATE,
                (Query(f"bgplb_service_decision{{{NSVC}}} == 1", "{{service}}: {{decision}}"),),
                "short",
                "The route decision of each service over time.",
                width=12,
            ),
            Panel(
                "Check results",
                Kind.TIMESERIES,
                (
                    Query(
                        f"sum by (service, check, result)"
                        f" (rate(bgplb_check_result_total{{{NSVC}}}{RATE}))",
                        "{{service}} {{check}} {{result}}",
                    ),
                ),
                "ops",
                "Probe results per second.",
                width=8,
            ),
            Panel(
                "Check state changes (5m)",
                Kind.TIMESERIES,
                (
                    Query(
                        f"changes(bgplb_check_up{{{NSVC}}}[5m])",
                        "{{service}} {{target}} {{check}}",
                    ),
                ),
                "short",
                "How often each check changed state in the last 5 minutes (flapping).",
                width=8,
            ),
            Panel(
                "BGP session transitions (5m)",
                Kind.TIMESERIES,
                (
                    Query(
                        f"increase(bgplb_bgp_session_transitions_total{{{NODE}}}[5m])",
                        "{{peer}}",
                    ),
                ),
                "short",
                "Session state changes per peer in the last 5 minutes.",
                width=8,
            ),
        ),
    ),
    Row(
        "IPVS per real server",
        (
            Panel(
                "Connections",
                Kind.TIMESERIES,
                (
                    Query(f"bgplb_ipvs_real_server_active_connections{{{NODE}}}", f"active {RS}"),
                    Query(
                        f"bgplb_ipvs_real_server_inactive_connections{{{NODE}}}", f"inactive {RS}"
                    ),
                ),
                "short",
                "IPVS active and inactive connections per real server.",
                width=8,
            ),
            Panel(
                "Packets",
                Kind.TIMESERIES,
                (
                    Query(
                        f"rate(bgplb_ipvs_real_server_packets_total{{{NODE}}}{RATE})",
                        f"{{{{direction}}}} {RS}",
                    ),
                ),
                "pps",
                "Packets per second per real server and direction.",
                width=8,
            ),
            Panel(
                "Bytes",
                Kind.TIMESERIES,
                (
                    Query(
                        f"rate(bgplb_ipvs_real_server_bytes_total{{{NODE}}}{RATE})",
                        f"{{{{direction}}}} {RS}",
                    ),
                ),
                "Bps",
                "Bytes per second per real server and direction.",
                width=8,
            ),
            Panel(
                "Real server health",
                Kind.STATE,
                (Query(f"bgplb_real_server_healthy{{{NSVC}}}", "{{service}} {{real_server}}"),),
                "short",
                "1 while every check of the real server passes.",
                width=24,
                up_down=True,
            ),
        ),
    ),
    Row(
        "Agent",
        (
            Panel(
                "Reconcile duration p50 / p99",
                Kind.TIMESERIES,
                (
                    Query(
                        "histogram_quantile(0.5, sum by (le) (rate("
                        f"bgplb_reconcile_duration_seconds_bucket{{{NODE}}}{RATE})))",
                        "p50",
                    ),
                    Query(
                        "histogram_quantile(0.99, sum by (le) (rate("
                        f"bgplb_reconcile_duration_seconds_bucket{{{NODE}}}{RATE})))",
                        "p99",
                    ),
                ),
                "s",
                "Duration of the reconcile passes.",
                width=8,
            ),
            Panel(
                "Reconcile passes and errors",
                Kind.TIMESERIES,
                (
                    Query(f"rate(bgplb_reconcile_runs_total{{{NODE}}}{RATE})", "passes"),
                    Query(f"rate(bgplb_reconcile_errors_total{{{NODE}}}{RATE})", "errors"),
                ),
                "ops",
                "Reconcile passes and the errors met in them, per second.",
                width=8,
            ),
            Panel(
                "Speaker restarts (15m)",
                Kind.TIMESERIES,
                (Query(f"increase(bgplb_speaker_restarts_total{{{NODE}}}[15m])", "restarts"),),
                "short",
                "ExaBGP restarts by the agent in the last 15 minutes.",
                width=8,
            ),
            Panel(
                "Config reload",
                Kind.STAT,
                (
                    Query(
                        f"bgplb_config_reload_success{{{NODE}}}"
                        f" + (bgplb_config_reload_timestamp_seconds{{{NODE}}} == bool 0)",
                        "last reload ok",
                    ),
                ),
                "bool_yes_no",
                "Whether the last config reload succeeded (yes until the first reload: the agent "
                "only starts with a valid config).",
                width=8,
                height=5,
            ),
            Panel(
                "Since last reload",
                Kind.STAT,
                (Query(f"time() - bgplb_config_reload_timestamp_seconds{{{NODE}}}", "age"),),
                "s",
                "Time since the last config reload attempt (about 56 years: none since start).",
                width=8,
                height=5,
            ),
            Panel(
                "Build",
                Kind.TABLE,
                (
                    Query(
                        f"bgplb_build_info{{{NODE}}}",
                        "{{version}} {{python}} {{exabgp}} {{image_version}}",
                    ),
                ),
                "short",
                "Agent, Python, ExaBGP and image versions.",
                width=8,
                height=5,
            ),
            Panel(
                "Event loop lag p50 / p99",
                Kind.TIMESERIES,
                (
                    Query(
                        "histogram_quantile(0.5, sum by (le) (rate("
                        f"bgplb_event_loop_lag_seconds_bucket{{{NODE}}}{RATE})))",
                        "p50",
                    ),
                    Query(
                        "histogram_quantile(0.99, sum by (le) (rate("
                        f"bgplb_event_loop_lag_seconds_bucket{{{NODE}}}{RATE})))",
                        "p99",
                    ),
                ),
                "s",
                "How late a callback due every 10 ms runs on the agent's event loop: anything "
                "that blocks the loop delays probes, timers and BGP alike (goal: p99 <= 5 ms).",
                width=24,
            ),
        ),
    ),
    Row(
        "BFD",
        (
            Panel(
                "BFD session up per peer",
                Kind.TIMESERIES,
                (Query(f"bgplb_bfd_session_up{{{NODE}}}", "{{peer}}"),),
                "short",
                "Peers with bfd set: 1 while bfdd's session is Up (the BGP sessions panel above "
                "shows BGP). BGP up with BFD down means the router's fast failover is gone (FRR "
                "8.4 tears BGP down only on an Up -> Down transition): alert "
                "BgplbBfdDownWhileBgpEstablished.",
                width=12,
            ),
            Panel(
                "BFD state changes and bfdd restarts (15m)",
                Kind.TIMESERIES,
                (
                    Query(
                        "sum by (peer, state) (increase("
                        f"bgplb_bfd_session_state_changes_total{{{NODE}}}[15m]))",
                        "{{peer}} -> {{state}}",
                    ),
                    Query(
                        f"increase(bgplb_bfd_daemon_restarts_total{{{NODE}}}[15m])",
                        "bfdd/zebra restarts",
                    ),
                ),
                "short",
                "BFD state changes the agent saw (it polls bfdd every 1-5 s: shorter flaps can "
                "be missed; the router's counters are exact) and restarts of bfdd or zebra.",
                width=12,
            ),
        ),
    ),
)

NODE_VAR = 'label_values(up{job="bgplb"}, node)'


def dashboards() -> dict[str, object]:
    """file name -> dashboard model."""
    fleet = build_dashboard(
        "bgplb-fleet",
        "bgp-lb / Fleet overview",
        "Every node x service: health, decision and reason, routes, BGP sessions, traffic.",
        FLEET_ROWS,
        [
            label_variable("node", "Node", NODE_VAR, multi=True),
            label_variable(
                "service",
                "Service",
                'label_values(bgplb_service_decision{job="bgplb",node=~"$node"}, service)',
                multi=True,
            ),
        ],
    )
    node = build_dashboard(
        "bgplb-node",
        "bgp-lb / Node detail",
        "One node: checks and state changes, IPVS per real server, reconciler and speaker.",
        NODE_ROWS,
        [
            label_variable("node", "Node", NODE_VAR, multi=False),
            label_variable(
                "service",
                "Service",
                'label_values(bgplb_service_decision{job="bgplb",node="$node"}, service)',
                multi=True,
            ),
        ],
    )
    return {"fleet.json": fleet, "node.json": node}


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in dashboards().items():
        path = out / name
        path.write_text(JSONEncoder(sort_keys=True, indent=2).encode(model) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(p)
