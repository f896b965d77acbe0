"""Metric families with many series, kept in plain dicts and rendered straight to text.

prometheus_client spends ~25 us per exposed line (sample tuples, label-name validation and
escaping on every scrape); at 1,000 services x ~35 series that was a second of CPU per
scrape (bench/NOTES.md). These families hold their values in dicts keyed by the label values,
cache each series' escaped label text, and write the exposition themselves, in the
Prometheus text format (0.0.4) or OpenMetrics 1.0. For ``registry.collect()`` (tests, other
encoders) they also yield ordinary prometheus_client families.

No metric names here: they are all given by the ``bgplb.metrics`` package.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import ClassVar, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Labels = tuple[str, ...]
F = TypeVar("F", bound="Family")


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _go(value: float) -> str:
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _num(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value)}.0"  # what floatToGoString gives for whole numbers, faster
    return _go(value)


class Family:
    """One metric family: ``name`` as exposed in the text format (counters end ``_total``)."""

    kind: ClassVar[str] = "untyped"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
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

    def forget(self, labels: Labels) -> None:
        self._text.pop(labels, None)

    def render(self, out: list[str], openmetrics: bool) -> None:
        raise NotImplementedError

    def collect(self) -> Metric:
        raise NotImplementedError


class Gauge(Family):
    kind = "gauge"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, documentation, labelnames)
        self.values: dict[Labels, float] = {}

    def set(self, labels: Labels, value: float) -> None:
        if labels not in self.values:
            self.labels_text(labels)  # validates the label count
        self.values[labels] = float(value)

    def remove(self, labels: Labels) -> None:
        self.values.pop(labels, None)
        self.forget(labels)

    def render(self, out: list[str], openmetrics: bool) -> None:
        self.header(out, openmetrics)
        text, name = self._text, self.name
        out.extend(f"{name}{{{text[k]}}} {_num(v)}\n" for k, v in self.values.items())

    def collect(self) -> Metric:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for k, v in self.values.items():
            family.add_metric(list(k), v)
        return family


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

    def collect(self) -> Metric:
        family = CounterMetricFamily(
            self.name.removesuffix("_total"), self.documentation, labels=self.labelnames
        )
        for k, v in self.values.items():
            family.add_metric(list(k), v)
        return family


class StateSet(Family):
    """A gauge per (labels, state): 1 for the current state, 0 for the others, every state
    always exposed (so ``sum by (...) (x{state!="a"}) == 0`` works)."""

    kind = "gauge"

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], states: Sequence[str]
    ) -> None:
        super().__init__(name, documentation, labelnames[:-1])
        self.state_label = labelnames[-1]
        self.states = tuple(states)
        self.current: dict[Labels, str] = {}

    def set(self, labels: Labels, state: str) -> None:
        if state not in self.states:
            raise ValueError(f"{self.name}: unknown state {state!r}")
        if labels not in self.current:
            self.labels_text(labels)
        self.current[labels] = state

    def remove(self, labels: Labels) -> None:
        self.current.pop(labels, None)
        self.forget(labels)

    def render(self, out: list[str], openmetrics: bool) -> None:
        self.header(out, openmetrics)
        text, name, label = self._text, self.name, self.state_label
        states = [(s, f'{label}="{_escape(s)}"') for s in self.states]
        for k, now in self.current.items():
            prefix = f"{name}{{{text[k]},"
            out.extend(f"{prefix}{st}}} {'1.0' if s == now else '0.0'}\n" for s, st in states)

    def collect(self) -> Metric:
        family = GaugeMetricFamily(
            self.name, self.documentation, labels=(*self.labelnames, self.state_label)
        )
        for k, now in self.current.items():
            for s in self.states:
                family.add_metric([*k, s], 1.0 if s == now else 0.0)
        return family


class Histogram(Family):
    kind = "histogram"

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.bounds = tuple(sorted(buckets))
        self._le = [f'le="{_go(b)}"' for b in (*self.bounds, math.inf)]
        self.data: dict[Labels, list[float]] = {}  # per bucket (not cumulative), then sum

    def observe(self, labels: Labels, value: float) -> None:
        row = self.data.get(labels)
        if row is None:
            self.labels_text(labels)
            row = self.data[labels] = [0.0] * (len(self.bounds) + 2)
        row[bisect.bisect_left(self.bounds, value)] += 1  # the first bound >= value, or +Inf
        row[-1] += value

    def remove(self, labels: Labels) -> None:
        self.data.pop(labels, None)
        self.forget(labels)

    def render(self, out: list[str], openmetrics: bool) -> None:
        self.header(out, openmetrics)
        text, name, le = self._text, self.name, self._le
        for k, row in self.data.items():
            t = text[k]
            total = 0.0
            for i, bound in enumerate(le):
                total += row[i]
                out.append(f"{name}_bucket{{{t},{bound}}} {_num(total)}\n")
            out.append(f"{name}_count{{{t}}} {_num(total)}\n{name}_sum{{{t}}} {_num(row[-1])}\n")

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for k, row in self.data.items():
            total, buckets = 0.0, []
            for bound, n in zip((*self.bounds, math.inf), row, strict=False):
                total += n
                buckets.append((_go(bound), total))
            family.add_metric(list(k), buckets, row[-1])
        return family


class FastCollector(Collector):
    """The families, for a registry (``collect``) and for the fast path (``render``)."""

    def __init__(self, families: Iterable[Family] = ()) -> None:
        self.families: list[Family] = list(families)

    def add(self, family: F) -> F:
        self.families.append(family)
        return family

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return [f.collect() for f in self.families]

    def render(self, openmetrics: bool = False) -> str:
        out: list[str] = []
        for family in self.families:
            family.render(out, openmetrics)
        return "".join(out)
