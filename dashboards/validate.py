"""Validate the generated dashboards and the alert rules, offline and against a Prometheus.

    python dashboards/validate.py [--prom URL] [--allow-empty REGEX] [DASHBOARD.json ...]

Offline: structure (uid, ids, refIds, units, datasource, grid), an SDK round-trip, template
variables defined, and every expression parsed by promtool. With ``--prom``: every
``label_values`` variable must have values (the first one is used), and every panel query and
the vector selectors of every alert in alerts.yml must return at least one series. Metrics
matching ``--allow-empty`` may be empty (e.g. ``bgplb_ipvs_.*`` on a host without IPVS); they
are listed as skipped. Exit 1 on any problem.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
BUILTINS = {"__rate_interval": "10s", "__interval": "2s", "__range": "5m"}
VAR = re.compile(r"\$\{?(\w+)\}?")
# The series a rule or panel reads: bgplb_* metrics and `up`, with their label matchers.
SELECTOR = re.compile(r"\b(bgplb_\w+|up)\b(\{[^}]*\})?")
HTTP_TIMEOUT = 10.0


def panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d.get("panels", []):
        yield p
        yield from p.get("panels", [])  # collapsed rows nest theirs


def substitute(
    expr: str, variables: set[str], values: dict[str, str] | None = None
) -> tuple[str, list[str]]:
    """Expression with Grafana variables replaced; the undefined variable names.

    Inside a regex matcher (``=~"$x"``) a variable becomes ``.+`` (Grafana's "All"); anywhere
    else it becomes ``values[name]`` (a real label value in the live check) or ``x``."""
    undefined: list[str] = []

    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in BUILTINS:
            return BUILTINS[name]
        if name not in variables:
            undefined.append(name)
            return m.group(0)
        if expr[max(0, m.start() - 2) : m.start()] == '~"':
            return ".+"
        return (values or {}).get(name, "x")

    return VAR.sub(one, expr), undefined


def check_structure(path: Path, d: dict[str, Any]) -> list[str]:
    errs = [f"{path.name}: missing {k}" for k in ("uid", "title", "schemaVersion") if k not in d]
    variables = {v["name"] for v in d.get("templating", {}).get("list", [])}
    if "datasource" not in variables:
        errs.append(f"{path.name}: no datasource variable")
    ids: set[int] = set()
    cells: dict[tuple[int, int], str] = {}
    for p in panels(d):
        name = f"{path.name} panel {p.get('id')} {p.get('title')!r}"
        if not isinstance(p.get("id"), int) or p["id"] in ids:
            errs.append(f"{name}: missing or duplicate id")
        ids.add(p.get("id", -1))
        g = p.get("gridPos", {})
        if g.get("x", 0) + g.get("w", 0) > 24 or not g.get("w") or not g.get("h"):
            errs.append(f"{name}: bad gridPos {g}")
        for x in range(g.get("x", 0), g.get("x", 0) + g.get("w", 0)):
            for y in range(g.get("y", 0), g.get("y", 0) + g.get("h", 0)):
                if (x, y) in cells:
                    errs.append(f"{name}: overlaps {cells[(x, y)]}")
                    break
                cells[(x, y)] = name
            else:
                continue
            break
        if p.get("type") == "row":
            continue
        if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            errs.append(f"{name}: no unit")
        refs = [t.get("refId") for t in p.get("targets", [])]
        if not refs or "" in refs or None in refs or len(set(refs)) != len(refs):
            errs.append(f"{name}: targets/refIds {refs}")
        for t in [p, *p.get("targets", [])]:
            if t.get("datasource") != {"type": "prometheus", "uid": "${datasource}"}:
                errs.append(f"{name}: datasource {t.get('datasource')} is not ${{datasource}}")
        for t in p.get("targets", []):
            if substitute(t.get("expr", ""), variables)[1]:
                errs.append(f"{name} {t['refId']}: undefined variables in {t['expr']}")
    return errs


def check_roundtrip(path: Path, d: dict[str, Any]) -> list[str]:
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    try:
        Dashboard.from_json(d)
    except Exception as e:  # the SDK raises whatever the bad field causes
        return [f"{path.name}: SDK round-trip failed: {e!r}"]
    return []


def queries(
    path: Path, d: dict[str, Any], values: dict[str, str] | None = None
) -> Iterator[tuple[str, str]]:
    """(where, PromQL with variables substituted) for every panel target."""
    variables = {v["name"] for v in d.get("templating", {}).get("list", [])}
    for p in panels(d):
        for t in p.get("targets", []):
            where = f"{path.name} panel {p['id']} {p['title']!r} {t['refId']}"
            yield where, substitute(t["expr"], variables, values)[0]


LABEL_VALUES = re.compile(r"^label_values\((.+),\s*(\w+)\)$")


def resolve_variables(prom: str, path: Path, d: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """A real value for every ``label_values(selector, label)`` query variable, in order
    (later variables may use earlier ones); errors for variables with no values."""
    listed = d.get("templating", {}).get("list", [])
    names = {v["name"] for v in listed}
    values: dict[str, str] = {}
    errs = []
    for v in listed:
        m = LABEL_VALUES.match(str(v.get("query", ""))) if v.get("type") == "query" else None
        if m is None:
            continue
        selector = substitute(m.group(1), names, values)[0]
        url = f"{prom}/api/v1/label/{m.group(2)}/values?" + urllib.parse.urlencode(
            {"match[]": selector}
        )
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as r:
            found = sorted(json.load(r).get("data") or [])
        if found:
            values[v["name"]] = found[0]
        else:
            errs.append(f"{path.name}: variable {v['name']}: no values for {v['query']}")
    return values, errs


def check_promql(exprs: list[tuple[str, str]]) -> list[str]:
    """Parse every expression with promtool (each one as a recording rule)."""
    rules = [{"record": f"check:q{i}", "expr": e} for i, (_, e) in enumerate(exprs)]
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, f)
        f.flush()
        res = subprocess.run(
            ["promtool", "check", "rules", f.name],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    if res.returncode == 0:
        return []
    out = res.stdout + res.stderr
    errs = []
    for i, (where, e) in enumerate(exprs):
        if f'check:q{i}"' in out or f"{e[:30]}" in out:
            errs.append(f"{where}: promtool: {e}")
    return errs or [f"promtool check rules failed:\n{out}"]


def alert_selectors(rules_file: Path) -> list[tuple[str, str]]:
    """(alert, vector selector) for every series selector in the alert expressions."""
    out = []
    for group in yaml.safe_load(rules_file.read_text())["groups"]:
        for rule in group["rules"]:
            for m in SELECTOR.finditer(rule["expr"]):
                out.append((rule.get("alert", rule.get("record", "?")), m.group(0)))
    return out


def instant(prom: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise ValueError(body.get("error", body))
    result = body["data"]["result"]
    return result if isinstance(result, list) else [result]


def check_live(
    prom: str, exprs: list[tuple[str, str]], allow_empty: re.Pattern[str] | None
) -> tuple[list[str], list[str]]:
    """(errors, skipped): every expression must return a series unless all of its metrics
    match ``allow_empty``."""
    errs, skipped = [], []
    for where, e in exprs:
        try:
            n = len(instant(prom, e))
        except (OSError, ValueError) as x:
            errs.append(f"{where}: query failed: {x}: {e}")
            continue
        if n:
            continue
        metrics = {m.group(1) for m in SELECTOR.finditer(e)}
        if allow_empty is not None and metrics and all(allow_empty.fullmatch(m) for m in metrics):
            skipped.append(f"{where}: {e}")
        else:
            errs.append(f"{where}: no series: {e}")
    return errs, skipped


def validate(
    files: list[Path], prom: str | None, allow_empty: re.Pattern[str] | None
) -> tuple[list[str], list[str], int]:
    """(errors, skipped, number of live expressions checked)."""
    errs: list[str] = []
    exprs: list[tuple[str, str]] = []
    live: list[tuple[str, str]] = []
    uids: dict[str, Path] = {}
    for path in files:
        d = json.loads(path.read_text())
        if d.get("uid") in uids:
            errs.append(f"{path.name}: uid {d['uid']} also in {uids[d['uid']].name}")
        uids[d.get("uid", "")] = path
        errs += check_structure(path, d) + check_roundtrip(path, d)
        exprs += list(queries(path, d))
        if prom is not None:
            values, var_errs = resolve_variables(prom, path, d)
            errs += var_errs
            live += list(queries(path, d, values))
    errs += check_promql(exprs)
    skipped: list[str] = []
    if prom is not None:
        live += [(f"alert {a} selector", s) for a, s in alert_selectors(HERE / "alerts.yml")]
        live_errs, skipped = check_live(prom, live, allow_empty)
        errs += live_errs
        exprs = live
    return errs, skipped, len(exprs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--prom", help="Prometheus base URL for the live check")
    ap.add_argument("--allow-empty", help="metric names (regex) that may return no series")
    a = ap.parse_args(argv)
    files = a.files or sorted(HERE.glob("*.json"))
    allow = re.compile(a.allow_empty) if a.allow_empty else None
    errs, skipped, n = validate(files, a.prom, allow)
    for s in skipped:
        print(f"skipped (allowed empty): {s}")
    for e in errs:
        print(f"ERROR {e}")
    live = f", {n - len(skipped)} returned series live" if a.prom else ""
    print(f"{len(files)} dashboards, {n} expressions{live}: {'FAIL' if errs else 'OK'}")
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
