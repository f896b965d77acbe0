"""Panel specs and their grafana-foundation-sdk builders (shared by generate.py).

A dashboard is described as data (``Row`` of ``Panel`` specs with PromQL ``Query``s); this
module turns it into SDK builders with stable panel ids and refIds (A, B, ...), units set and
one Prometheus datasource variable (``${datasource}``) used by every query.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard as gdash
from grafana_foundation_sdk.builders import prometheus as gprom
from grafana_foundation_sdk.builders import stat as gstat
from grafana_foundation_sdk.builders import statetimeline as gstate
from grafana_foundation_sdk.builders import table as gtable
from grafana_foundation_sdk.builders import timeseries as gts
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard as mdash
from grafana_foundation_sdk.models import prometheus as mprom

DATASOURCE = mdash.DataSourceRef(type_val="prometheus", uid="${datasource}")


class Kind(enum.StrEnum):
    TIMESERIES = "timeseries"
    STAT = "stat"
    STATE = "state-timeline"
    TABLE = "table"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    kind: Kind
    queries: tuple[Query, ...]
    unit: str
    description: str
    width: int = 12
    height: int = 8
    up_down: bool = False  # value mapping 0 -> down (red), 1 -> up (green)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def _up_down() -> list[mdash.ValueMapping]:
    return [
        mdash.ValueMap(
            options={
                "0": mdash.ValueMappingResult(text="down", color="red", index=0),
                "1": mdash.ValueMappingResult(text="up", color="green", index=1),
            }
        )
    ]


def _target(ref: str, q: Query, instant: bool) -> gprom.Dataquery:
    t = gprom.Dataquery().expr(q.expr).ref_id(ref).datasource(DATASOURCE)
    if q.legend:
        t = t.legend_format(q.legend)
    return t.instant().format(mprom.PromQueryFormat.TABLE) if instant else t.range()


def build_panel(spec: Panel, panel_id: int) -> cogbuilder.Builder[mdash.Panel]:
    """One SDK panel; refIds are A, B, ... in query order."""
    b: (
        gts.Panel | gstat.Panel | gstate.Panel | gtable.Panel
    )  # every kind offers the same common methods
    if spec.kind is Kind.TIMESERIES:
        b = gts.Panel()
    elif spec.kind is Kind.STAT:
        b = gstat.Panel()
    elif spec.kind is Kind.STATE:
        b = gstate.Panel()
    else:
        b = gtable.Panel()
    instant = spec.kind in (Kind.STAT, Kind.TABLE)
    b = (
        b.id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .span(spec.width)
        .height(spec.height)
    )
    if spec.up_down:
        b = b.mappings(_up_down())
    for i, q in enumerate(spec.queries):
        b = b.with_target(_target(chr(ord("A") + i), q, instant))
    return b


def build_dashboard(
    uid: str,
    title: str,
    description: str,
    rows: tuple[Row, ...],
    variables: list[cogbuilder.Builder[mdash.VariableModel]],
) -> mdash.Dashboard:
    """The whole dashboard. Panel ids are 1.. in order (rows included), so they stay stable
    as long as panels are only appended."""
    d = (
        gdash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["bgp-lb"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("utc")
        .tooltip(mdash.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            gdash.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
    )
    for v in variables:
        d = d.with_variable(v)
    next_id = 1
    for row in rows:
        # An expanded row has its panels at the top level after it (Grafana's layout).
        d = d.with_row(gdash.Row(row.title).id(next_id).collapsed(False))
        next_id += 1
        for spec in row.panels:
            d = d.with_panel(build_panel(spec, next_id))
            next_id += 1
    return d.build()


def label_variable(
    name: str, label: str, query: str, *, multi: bool
) -> cogbuilder.Builder[mdash.VariableModel]:
    """A query variable over ``label_values(...)`` of the datasource."""
    v = (
        gdash.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(DATASOURCE)
        .refresh(mdash.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(mdash.VariableSort.ALPHABETICAL_ASC)
    )
    if multi:
        v = v.multi(True).include_all(True).all_value(".*")
    return v
