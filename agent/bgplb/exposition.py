"""Metric families with many series, kept in plain dicts and rendered straight to text.

prometheus_client spends ~25 us per exposed line (sample tuples, label-name validation and
escaping on every scrape); at 1,000 services x ~35 series that was a second of CPU per
scrape (bench/NOTES.md). These families hold their values in dicts keyed by the label values,
cache each series' escaped label text, and write the exposition themselves, in the
Prometheus text format (0.0.4) or OpenMetrics 1.0. For ``registry.collect()`` (tests, other
encoders) they also yield ordinary prometheus_client families.

Threads: the families are updated on the event loop and ``/metrics`` is rendered in a worker
thread. The loop takes a :class:`FastSnapshot` (``FastCollector.snapshot()``: C-level copies
of each family's dicts, ~1 ms at 1,000 services) and the thread renders only that: the values
in it are immutable (floats, strings, histogram rows as tuples, replaced and never changed in
place), so nothing the thread reads changes under it.

No metric names here: they are all given by the ``bgplb.metrics`` package.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Labels = tuple[str, ...]
F = TypeVar("F", bound="Family[Any]")
V = TypeVar("V")


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _go(value: float) -> str:
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def number_text(value: float) -> str:
    """A sample value as prometheus_client writes it (``floatToGoString``)."""
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value)}.0"  # what floatToGoString gives for whole numbers, faster
    return _go(value)


_num = number_text


class Family(Generic[V]):
    """One metric family: ``name`` as exposed in the text format (counters end ``_total``).

    ``values`` maps label values to an immutable value (a float, a state, a histogram row):
    an update replaces the value, it never changes one in place, so a snapshot's copy of the
    dict stays what it was."""

    kind: ClassVar[str] = "untyped"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.values: dict[Labels, V] = {}
        self._text: dict[Labels, str] = {}

    def labels_text(self, labels: Labels) -> str:
        """``a="x",b="y"`` for these label values, escaped once and cached."""
        text = self._text.get(labels)
        if text is None:
            if len(labels) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {labels}")
            text = ",".join(
                f'{n}="{_escape(v)}"' for n, v in zip(self.labelnames, labels, strict=True)
            )
            self._text[labels] = text
        return text

    def header(self, out: list[str], openmetrics: bool) -> None:
        name = self.family_name(openmetrics)
        out.append(f"# HELP {name} {self.documentation}\n# TYPE {name} {self.kind}\n")

    def family_name(self, openmetrics: bool) -> str:
        return self.name

    def remove(self, labels: Labels) -> None:
        self.values.pop(labels, None)
        self._text.pop(labels, None)

    def snapshot(self) -> FamilySnapshot[V]:
        """The series now, for rendering elsewhere: take it on the thread that updates them."""
        return FamilySnapshot(self, self.values.copy(), self._text.copy())

    def render(self, out: list[str], openmetrics: bool) -> None:
        self.snapshot().render(out, openmetrics)

    def collect(self) -> Metric:
        return self.snapshot().collect()

    # the snapshot's copies, rendered: only reads its arguments and immutable attributes

    def render_values(
        self, values: dict[Labels, V], text: dict[Labels, str], out: list[str], om: bool
    ) -> None:
        raise NotImplementedError

    def collect_values(self, values: dict[Labels, V]) -> Metric:
        raise NotImplementedError


class FamilySnapshot(Generic[V]):
    """One family's series at one moment: private copies of its dicts, immutable values."""

    __slots__ = ("family", "text", "values")

    def __init__(self, family: Family[V], values: dict[Labels, V], text: dict[Labels, str]):
        self.family, self.values, self.text = family, values, text

    def render(self, out: list[str], openmetrics: bool) -> None:
        self.family.render_values(self.values, self.text, out, openmetrics)

    def collect(self) -> Metric:
        return self.family.collect_values(self.values)


class Gauge(Family[float]):
    kind = "gauge"

    def set(self, labels: Labels, value: float) -> None:
        if labels not in self.values:
            self.labels_text(labels)  # validates the label count
        self.values[labels] = float(value)

    def render_values(
        self, values: dict[Labels, float], text: dict[Labels, str], out: list[str], om: bool
    ) -> None:
        self.header(out, om)
        name = self.name
        out.extend(f"{name}{{{text[k]}}} {_num(v)}\n" for k, v in values.items())

    def collect_values(self, values: dict[Labels, float]) -> Metric:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for k, v in values.items():
            family.add_metric(list(k), v)
        return family


class SparseGauge(Gauge):
    """A Gauge whose text is empty (no HELP/TYPE either) while it has no series: for the
    ``bgplb_ipvs_*`` families kept here (pool mode), absent on a node without them, as the
    IPVS collector's families are without an observation."""

    def render_values(
        self, values: dict[Labels, float], text: dict[Labels, str], out: list[str], om: bool
    ) -> None:
        if values:
            super().render_values(values, text, out, om)


class Counter(Gauge):
    """Like Gauge, but only goes up; ``name`` ends ``_total``."""

    kind = "counter"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        super().__init__(name, documentation, labelnames)

    def family_name(self, openmetrics: bool) -> str:
        return self.name.removesuffix("_total") if openmetrics else self.name

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        values = self.values
        if labels in values:
            values[labels] += amount
        else:
            self.set(labels, amount)

    def collect_values(self, values: dict[Labels, float]) -> Metric:
        family = CounterMetricFamily(
            self.name.removesuffix("_total"), self.documentation, labels=self.labelnames
        )
        for k, v in values.items():
            family.add_metric(list(k), v)
        return family


class StateSet(Family[str]):
    """A gauge per (labels, state): 1 for the current state, 0 for the others, every state
    always exposed (so ``sum by (...) (x{state!="a"}) == 0`` works)."""

    kind = "gauge"

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], states: Sequence[str]
    ) -> None:
        super().__init__(name, documentation, labelnames[:-1])
        self.state_label = labelnames[-1]
        self.states = tuple(states)
        self._state_text = tuple((s, f'{self.state_label}="{_escape(s)}"') for s in self.states)

    def set(self, labels: Labels, state: str) -> None:
        if state not in self.states:
            raise ValueError(f"{self.name}: unknown state {state!r}")
        if labels not in self.values:
            self.labels_text(labels)
        self.values[labels] = state

    def render_values(
        self, values: dict[Labels, str], text: dict[Labels, str], out: list[str], om: bool
    ) -> None:
        self.header(out, om)
        name, states = self.name, self._state_text
        for k, now in values.items():
            prefix = f"{name}{{{text[k]},"
            out.extend(f"{prefix}{st}}} {'1.0' if s == now else '0.0'}\n" for s, st in states)

    def collect_values(self, values: dict[Labels, str]) -> Metric:
        family = GaugeMetricFamily(
            self.name, self.documentation, labels=(*self.labelnames, self.state_label)
        )
        for k, now in values.items():
            for s in self.states:
                family.add_metric([*k, s], 1.0 if s == now else 0.0)
        return family


Row = tuple[float, ...]  # observations per bucket (not cumulative), +Inf, then the sum


class Histogram(Family[Row]):
    kind = "histogram"

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.bounds = tuple(sorted(buckets))
        self._le = tuple(f'le="{_go(b)}"' for b in (*self.bounds, math.inf))
        self._empty: Row = (0.0,) * (len(self.bounds) + 2)

    def observe(self, labels: Labels, value: float) -> None:
        row = self.values.get(labels)
        if row is None:
            self.labels_text(labels)
            row = self._empty
        new = list(row)  # a new row: a snapshot may hold the old one
        new[bisect.bisect_left(self.bounds, value)] += 1  # the first bound >= value, or +Inf
        new[-1] += value
        self.values[labels] = tuple(new)

    def render_values(
        self, values: dict[Labels, Row], text: dict[Labels, str], out: list[str], om: bool
    ) -> None:
        self.header(out, om)
        name, le = self.name, self._le
        for k, row in values.items():
            t = text[k]
            total = 0.0
            for i, bound in enumerate(le):
                total += row[i]
                out.append(f"{name}_bucket{{{t},{bound}}} {_num(total)}\n")
            out.append(f"{name}_count{{{t}}} {_num(total)}\n{name}_sum{{{t}}} {_num(row[-1])}\n")

    def collect_values(self, values: dict[Labels, Row]) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for k, row in values.items():
            total, buckets = 0.0, []
            for bound, n in zip((*self.bounds, math.inf), row, strict=False):
                total += n
                buckets.append((_go(bound), total))
            family.add_metric(list(k), buckets, row[-1])
        return family


class FastSnapshot:
    """Every family of a :class:`FastCollector` at one moment; render it on any thread."""

    def __init__(self, families: Sequence[FamilySnapshot[Any]]) -> None:
        self.families = families

    def render(self, openmetrics: bool = False) -> str:
        out: list[str] = []
        for family in self.families:
            family.render(out, openmetrics)
        return "".join(out)

    def collect(self) -> list[Metric]:
        return [f.collect() for f in self.families]


class FastCollector(Collector):
    """The families, for a registry (``collect``) and for the fast path (``render``)."""

    def __init__(self, families: Iterable[Family[Any]] = ()) -> None:
        self.families: list[Family[Any]] = list(families)

    def add(self, family: F) -> F:
        self.families.append(family)
        return family

    def describe(self) -> Iterable[Metric]:
        return []

    def snapshot(self) -> FastSnapshot:
        """All series now (C-level dict copies); take it on the thread that updates them."""
        return FastSnapshot([f.snapshot() for f in self.families])

    def collect(self) -> Iterable[Metric]:
        return self.snapshot().collect()

    def render(self, openmetrics: bool = False) -> str:
        return self.snapshot().render(openmetrics)
