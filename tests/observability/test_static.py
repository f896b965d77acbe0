"""Offline checks: generated JSON up to date, validator, promtool/amtool on rules and configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import DASHBOARDS

pytestmark = pytest.mark.observability

PY = sys.executable


def run(*argv: str | Path, cwd: Path = DASHBOARDS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_committed_json_is_what_the_generator_writes(tmp_path: Path) -> None:
    res = run(PY, DASHBOARDS / "generate.py", tmp_path)
    assert res.returncode == 0, res.stderr
    committed = sorted(p.name for p in DASHBOARDS.glob("*.json"))
    assert sorted(p.name for p in tmp_path.glob("*.json")) == committed
    for name in committed:
        new, old = (tmp_path / name).read_text(), (DASHBOARDS / name).read_text()
        assert new == old, f"dashboards/{name} is stale: run `make dashboards` and commit it"


def test_dashboards_are_valid_offline() -> None:
    res = run(PY, DASHBOARDS / "validate.py")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 dashboards" in res.stdout


def test_dashboards_have_stable_ids_units_and_variables() -> None:
    uids = set()
    for path in sorted(DASHBOARDS.glob("*.json")):
        d = json.loads(path.read_text())
        uids.add(d["uid"])
        names = [v["name"] for v in d["templating"]["list"]]
        assert names == ["datasource", "node", "service"], path.name
        ids = [p["id"] for p in d["panels"]]
        assert ids == list(range(1, len(ids) + 1)), path.name
        for p in d["panels"]:
            if p["type"] != "row":
                refs = [t["refId"] for t in p["targets"]]
                assert refs == [chr(ord("A") + i) for i in range(len(refs))], p["title"]
    assert uids == {"bgplb-fleet", "bgplb-node"}


def _break(d: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("parse", "promtool"),
        ("refid", "refIds"),
        ("variable", "undefined variables"),
        ("unit", "no unit"),
        ("datasource", "is not ${datasource}"),
        ("overlap", "overlaps"),
    ],
)
def test_validator_catches_planted_faults(tmp_path: Path, fault: str, message: str) -> None:
    d = json.loads((DASHBOARDS / "fleet.json").read_text())
    p = next(x for x in d["panels"] if x["type"] == "timeseries")
    t = p["targets"][0]
    if fault == "parse":
        t["expr"] = "sum by (node (up)"
    elif fault == "refid":
        t["refId"] = ""
    elif fault == "variable":
        t["expr"] += " * $nowhere"
    elif fault == "unit":
        del p["fieldConfig"]["defaults"]["unit"]
    elif fault == "datasource":
        t["datasource"] = "Prometheus"
    else:
        p["gridPos"] = dict(d["panels"][1]["gridPos"])
    res = run(PY, DASHBOARDS / "validate.py", _break(d, tmp_path / "fleet.json"))
    assert res.returncode == 1, res.stdout
    assert message in res.stdout


def test_alert_rules_pass_promtool_lint() -> None:
    res = run("promtool", "check", "rules", "--lint-fatal", "alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_alert_unit_tests_pass() -> None:
    res = run("promtool", "test", "rules", "alerts_test.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_every_alert_has_runbook_and_a_firing_and_a_quiet_case() -> None:
    rules = yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())["groups"][0]["rules"]
    cases = yaml.safe_load((DASHBOARDS / "alerts_test.yml").read_text())["tests"]
    evals = [e for t in cases for e in t["alert_rule_test"]]
    for r in rules:
        assert {"summary", "description", "runbook"} <= r["annotations"].keys(), r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        mine = [e for e in evals if e["alertname"] == r["alert"]]
        assert any(e["exp_alerts"] for e in mine), f"{r['alert']}: no firing case"
        assert any(not e["exp_alerts"] for e in mine), f"{r['alert']}: no quiet case"


def test_alert_unit_tests_fail_on_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests can fail: drop the absent() fallback and the 'no agent' case fails."""
    text = (DASHBOARDS / "alerts.yml").read_text()
    broken = text.replace('absent(up{job="bgplb"} == 1)', 'absent(up{job="nothing"} == 1) == 2')
    assert broken != text
    (tmp_path / "alerts.yml").write_text(broken)
    (tmp_path / "alerts_test.yml").write_text((DASHBOARDS / "alerts_test.yml").read_text())
    res = run("promtool", "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert res.returncode == 1
    assert "every agent vanished" in res.stdout + res.stderr


def test_prometheus_example_config_is_valid() -> None:
    res = run("promtool", "check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    targets = yaml.safe_load((DASHBOARDS / "targets" / "bgplb.yml").read_text())
    assert all("node" in t["labels"] for t in targets)


def test_alertmanager_config_is_valid() -> None:
    res = run("amtool", "check-config", "alertmanager.yml")
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=BgplbServiceWithdrawnEverywhere"], "lb-pager"),
        (["severity=critical", "alertname=BgplbAdvertisedWhileUnhealthy"], "lb-pager"),
        (["severity=warning", "alertname=BgplbBgpSessionDown"], "lb-team"),
        (["severity=warning", "alertname=BgplbAgentDown"], "lb-team"),
    ],
)
def test_alertmanager_routes(labels: list[str], receiver: str) -> None:
    res = run(
        "amtool",
        "config",
        "routes",
        "test",
        "--config.file=alertmanager.yml",
        f"--verify.receivers={receiver}",
        *labels,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == receiver


def test_alertmanager_route_test_can_fail() -> None:
    res = run(
        "amtool",
        "config",
        "routes",
        "test",
        "--config.file=alertmanager.yml",
        "--verify.receivers=lb-pager",
        "severity=warning",
        "alertname=BgplbBgpSessionDown",
    )
    assert res.returncode == 1
