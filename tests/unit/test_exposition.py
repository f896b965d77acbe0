"""Our own rendering of the per-service families says exactly what prometheus_client says
about the same families (text format and OpenMetrics), parsed back by its parsers."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_families,
)
from prometheus_client.parser import text_string_to_metric_families

from bgplb import exposition
from bgplb.admin import AdminState
from bgplb.health.tracker import CheckKey, CheckResult
from bgplb.metrics import Metrics

from .test_metrics import UP, Cfg, fed

Sampled = set[tuple[str, tuple[tuple[str, str], ...], float]]


def _text(body: str) -> Sampled:
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(body)
        for s in f.samples
        if not s.name.endswith("_created")
    }


def _om(body: str) -> tuple[Sampled, dict[str, str]]:
    samples: Sampled = set()
    types = {}
    for f in om_families(body):
        types[f.name] = f.type
        samples |= {
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for s in f.samples
            if not s.name.endswith("_created")
        }
    return samples, types


@pytest.mark.parametrize("per_real_server", [True, False])
def test_text_format_matches_prometheus_client(per_real_server: bool) -> None:
    m = fed(per_real_server)
    ours = m.exposition().decode()
    theirs = generate_latest(m.registry).decode()
    assert _text(ours) == _text(theirs)
    assert 'bgplb_service_reason{service="dns",reason="check_failed"} 1.0' in ours
    assert "# TYPE bgplb_check_result_total counter" in ours


def test_openmetrics_matches_prometheus_client() -> None:
    m = fed()
    ours, types = _om(m.exposition(openmetrics=True).decode())
    theirs, their_types = _om(om_generate_latest(m.registry).decode())
    assert ours == theirs
    assert types == their_types
    assert types["bgplb_check_result"] == "counter"
    assert m.exposition(openmetrics=True).endswith(b"# EOF\n")
    assert m.exposition(openmetrics=True).count(b"# EOF") == 1


def test_forgotten_services_leave_no_series() -> None:
    m = fed()
    m.set_decisions({})
    m.set_drained(AdminState(), Cfg(services=()))
    m.set_check_states({})
    body = m.exposition().decode()
    assert 'service="web"' not in body.replace('service="web",peer', "")  # routes: set_routes
    assert 'service="dns",reason' not in body


def test_label_values_are_escaped() -> None:
    g = exposition.Gauge("x", "help", ["a"])
    g.set(('q"uo\\te\nnl',), 2.5)
    out: list[str] = []
    g.render(out, openmetrics=False)
    [family] = text_string_to_metric_families("".join(out))
    assert family.samples[0].labels == {"a": 'q"uo\\te\nnl'}
    assert family.samples[0].value == 2.5


def test_values_format_like_prometheus_client() -> None:
    g = exposition.Gauge("x", "help", ["a"])
    for i, v in enumerate([0.0, 1.0, -3.0, 0.1, 1e20, math.inf, -math.inf, 1234567.5]):
        g.set((str(i),), v)
    out: list[str] = []
    g.render(out, openmetrics=False)
    reg_text = "".join(out)
    reg = CollectorRegistry()
    reg.register(exposition.FastCollector([g]))
    assert _text(reg_text) == _text(generate_latest(reg).decode())


def test_wrong_label_count_and_negative_increments_are_refused() -> None:
    c = exposition.Counter("x_total", "help", ["a", "b"])
    with pytest.raises(ValueError, match="expected labels"):
        c.inc(("only-one",))
    with pytest.raises(ValueError, match="only go up"):
        c.inc(("a", "b"), -1)
    with pytest.raises(ValueError, match="must end in _total"):
        exposition.Counter("x", "help", [])
    s = exposition.StateSet("y", "help", ["a", "state"], ["on", "off"])
    with pytest.raises(ValueError, match="unknown state"):
        s.set(("a",), "maybe")


def test_one_thousand_services_make_about_30_lines_each() -> None:
    m = Metrics()

    for i in range(1000):
        m.record_check(CheckKey(f"s{i}", None, "http"), CheckResult(True, 1.0, 0.003), UP)
    body = m.exposition()
    assert len(_text(body.decode())) > 1000 * 15  # the series are all there
