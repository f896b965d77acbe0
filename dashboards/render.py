# mypy: disable-error-code="no-untyped-call,arg-type"
"""Render a generated dashboard to a PNG from a live Prometheus (matplotlib, no Grafana).

    python dashboards/render.py PROM_URL DASHBOARD.json OUT.png [--window SECONDS]
        [--var name=value ...]

Panels are laid out by their ``gridPos`` (24 columns); rows get their own strip. Time series
and state timelines come from ``/api/v1/query_range``, stats and tables from ``/api/v1/query``.
A panel without data says so in red. Variables default to ``.+`` (all).
"""

from __future__ import annotations

import argparse
import json
import re
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.gridspec import GridSpec

HTTP_TIMEOUT = 10.0
HIDDEN = {"__name__", "job", "instance"}
UNIT_SUFFIX = {"s": " s", "percentunit": "", "cps": " conn/s", "Bps": " B/s", "pps": " pkt/s"}


def api(prom: str, path: str, **params: str) -> list[dict[str, Any]]:
    url = f"{prom}{path}?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise ValueError(body.get("error"))
    result = body["data"]["result"]
    return result if isinstance(result, list) else []


def legend(fmt: str, metric: dict[str, str]) -> str:
    if fmt:
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)
    return ",".join(f"{k}={v}" for k, v in sorted(metric.items()) if k not in HIDDEN)


def expand(expr: str, variables: dict[str, str], step: int) -> str:
    builtins = {"__rate_interval": f"{max(4 * step, 5)}s", "__interval": f"{step}s"}
    values = {**builtins, **variables}
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), ".+"), expr)


def draw_timeseries(ax: Axes, series: list[tuple[str, list[list[Any]]]], unit: str) -> None:
    for name, values in series:
        xs = [datetime.fromtimestamp(float(t), UTC) for t, _ in values]
        ys = [float(v) for _, v in values]
        ax.plot(xs, ys, label=name, linewidth=1.4)
    if unit == "percentunit":
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.tick_params(labelsize=7)
    ax.set_ylabel(unit, fontsize=7)
    ax.legend(fontsize=6, loc="upper left", ncol=2, framealpha=0.6)


def draw_states(ax: Axes, series: list[tuple[str, list[list[Any]]]], step: int) -> None:
    for i, (_name, values) in enumerate(series):
        for t, v in values:
            color = "#3aa655" if float(v) >= 1 else "#d64541"
            x = datetime.fromtimestamp(float(t), UTC)
            left = mdates.date2num(x)
            width = mdates.date2num(x + timedelta(seconds=step)) - left
            ax.barh(i, width, left=left, height=0.7, color=color, linewidth=0)
    ax.set_yticks(range(len(series)), [n for n, _ in series], fontsize=7)
    ax.xaxis_date()
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.tick_params(axis="x", labelsize=7)
    ax.invert_yaxis()


def draw_text(ax: Axes, lines: list[str], big: bool) -> None:
    ax.axis("off")
    size = 20 if big and len(lines) <= 3 else 8
    for i, line in enumerate(lines[:12]):
        ax.text(
            0.02,
            0.85 - i * (0.3 if size == 20 else 0.08),
            line,
            fontsize=size,
            transform=ax.transAxes,
            family="monospace",
            va="top",
        )


def render_panel(
    ax: Axes, p: dict[str, Any], prom: str, win: tuple[float, float, int], variables: dict[str, str]
) -> None:
    start, end, step = win
    unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    ax.set_title(p["title"], fontsize=9, loc="left", fontweight="bold")
    series: list[tuple[str, list[list[Any]]]] = []
    lines: list[str] = []
    for t in p.get("targets", []):
        expr = expand(t["expr"], variables, step)
        if p["type"] in ("stat", "table"):
            for r in api(prom, "/api/v1/query", query=expr, time=str(end)):
                v = float(r["value"][1])
                extra = " ".join(r["metric"][k] for k in ("decision", "reason") if k in r["metric"])
                shown = extra or f"{v:g}{UNIT_SUFFIX.get(unit, '')}"
                lines.append(f"{legend(t.get('legendFormat', ''), r['metric'])}: {shown}")
        else:
            rows = api(
                prom,
                "/api/v1/query_range",
                query=expr,
                start=str(start),
                end=str(end),
                step=str(step),
            )
            series += [(legend(t.get("legendFormat", ""), r["metric"]), r["values"]) for r in rows]
    if not series and not lines:
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            "No data",
            color="#d64541",
            ha="center",
            va="center",
            fontsize=12,
            transform=ax.transAxes,
        )
    elif p["type"] == "timeseries":
        draw_timeseries(ax, series, unit)
    elif p["type"] == "state-timeline":
        draw_states(ax, series, step)
    else:
        draw_text(ax, lines, big=p["type"] == "stat")


def render(prom: str, dashboard: Path, out: Path, window: float, variables: dict[str, str]) -> int:
    """Write the PNG; returns the number of panels drawn."""
    d = json.loads(dashboard.read_text())
    end = time.time()
    start = end - window
    step = max(1, int(window // 200))
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in d["panels"])
    fig = plt.figure(figsize=(20, height * 0.42))
    fig.suptitle(
        f"{d['title']}  ({datetime.fromtimestamp(end, UTC):%Y-%m-%d %H:%M:%S} UTC, "
        f"last {int(window)} s)",
        fontsize=13,
        x=0.01,
        ha="left",
    )
    grid = GridSpec(height, 24, figure=fig, hspace=3.0, wspace=1.2, top=0.96)
    n = 0
    for p in d["panels"]:
        g = p["gridPos"]
        ax = fig.add_subplot(grid[g["y"] : g["y"] + g["h"], g["x"] : g["x"] + g["w"]])
        if p["type"] == "row":
            ax.axis("off")
            ax.text(0, 0.2, p["title"], fontsize=12, fontweight="bold", transform=ax.transAxes)
            continue
        render_panel(ax, p, prom, (start, end, step), variables)
        n += 1
    fig.savefig(out, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prom")
    ap.add_argument("dashboard", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--window", type=float, default=300.0)
    ap.add_argument("--var", action="append", default=[], help="name=value")
    a = ap.parse_args(argv)
    variables = dict(v.split("=", 1) for v in a.var)
    n = render(a.prom, a.dashboard, a.out, a.window, variables)
    print(f"{a.out}: {n} panels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
