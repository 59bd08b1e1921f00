"""Render a Grafana dashboard JSON to a PNG from its own PromQL queries against a Prometheus.

A faithful picture of the panels (same layout, titles, queries, legends and units) without a
Grafana server: each target of each panel is run through Prometheus' HTTP API (query_range
for time series, an instant query for stat and table panels) and drawn with matplotlib.

    python scripts/render_dashboard.py --prometheus http://127.0.0.1:9090 \\
        --dashboard deploy/grafana/dashboards/imgsearch.json --out docs/dashboard.png

`IMGSEARCH_DASHBOARD_PNG=docs/dashboard.png pytest tests/e2e/test_prometheus.py` runs it on the
data of a test run. Needs matplotlib (`pip install matplotlib`).
"""

from __future__ import annotations

import argparse
import json
import re
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

BACKGROUND = "#111217"
PANEL = "#181b1f"
TEXT = "#ccccdc"
MUTED = "#8e8e9e"
GRID = "#2c3235"
PALETTE = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a"]
COLORS = {"green": "#73bf69", "red": "#f2495c", "orange": "#ff9830", "blue": "#5794f2"}
COL_IN, ROW_IN = 0.75, 0.36  # inches per Grafana grid column and row


def query(prometheus: str, path: str, **params: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - an http(s) URL
        body = json.load(response)
    if body["status"] != "success":
        raise RuntimeError(f"{params.get('query')}: {body.get('error')}")
    return list(body["data"]["result"])


def legend(fmt: str, labels: dict[str, str]) -> str:
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def formatter(unit: str | None) -> FuncFormatter:
    def fmt(value: float, _pos: float | None = None) -> str:
        if unit == "s":
            return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.2f} s"
        if unit == "percentunit":
            return f"{value * 100:.1f}%"
        if unit == "bytes":
            return f"{value / 2**20:.0f} MiB"
        if unit in ("reqps", "ops"):
            return f"{value:.2g}/s"
        return f"{value:.3g}"

    return FuncFormatter(fmt)


def style(ax: Axes, title: str) -> None:
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_color(GRID)
    ax.set_title(title, color=TEXT, fontsize=10, loc="left", pad=6, fontweight="bold")
    ax.tick_params(colors=MUTED, labelsize=7)


def draw_timeseries(
    ax: Axes, panel: dict[str, Any], prometheus: str, span: tuple[float, float]
) -> None:
    start, end = span
    step = str(max(1, round((end - start) / 240)))
    color = 0
    for target in panel["targets"]:
        for series in query(
            prometheus,
            "query_range",
            query=target["expr"],
            start=str(start),
            end=str(end),
            step=step,
        ):
            xs = [float(t) - end for t, _ in series["values"]]
            ys = [float(v) for _, v in series["values"]]
            ax.plot(
                [x / 60 for x in xs],
                ys,
                linewidth=1.3,
                color=PALETTE[color % len(PALETTE)],
                label=legend(target.get("legendFormat", ""), series["metric"]),
            )
            color += 1
    unit = panel["fieldConfig"]["defaults"].get("unit")
    ax.yaxis.set_major_formatter(formatter(unit))
    ax.xaxis.set_major_formatter(FuncFormatter(_minutes))
    ax.set_xlim((start - end) / 60, 0)
    if panel["fieldConfig"]["defaults"].get("min") == 0:
        ax.set_ylim(bottom=0)
    ax.grid(color=GRID, linewidth=0.6)
    if color:
        ax.legend(loc="upper left", fontsize=7, frameon=False, labelcolor=TEXT, ncol=min(color, 4))
    else:
        ax.text(0.5, 0.5, "No data", color=MUTED, ha="center", va="center", transform=ax.transAxes)


def _minutes(value: float, _pos: float | None = None) -> str:
    seconds = round(-value * 60)
    return "now" if seconds == 0 else f"-{seconds // 60}:{seconds % 60:02d}"


def threshold_color(defaults: dict[str, Any], value: float) -> str:
    color = "green"
    for step in defaults.get("thresholds", {}).get("steps", []):
        if step["value"] is None or value >= step["value"]:
            color = step["color"]
    return COLORS.get(color, color)


def draw_stat(ax: Axes, panel: dict[str, Any], prometheus: str, end: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    results = query(prometheus, "query", query=panel["targets"][0]["expr"], time=str(end))
    if not results:
        ax.text(0.5, 0.45, "No data", color=MUTED, ha="center", va="center", fontsize=14)
        return
    value = float(results[0]["value"][1])
    defaults = panel["fieldConfig"]["defaults"]
    text = f"{value:,.0f}"
    color = threshold_color(defaults, value)
    for mapping in defaults.get("mappings", []):
        mapped = mapping.get("options", {}).get(f"{value:.0f}")
        if mapped:
            text = mapped["text"]
            color = COLORS.get(mapped.get("color", ""), color)
    ax.text(0.5, 0.42, text, color=color, ha="center", va="center", fontsize=24, weight="bold")


def draw_table(ax: Axes, panel: dict[str, Any], prometheus: str, end: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    results = query(prometheus, "query", query=panel["targets"][0]["expr"], time=str(end))
    hidden = {"__name__", "job"}
    columns = sorted({k for r in results for k in r["metric"] if k not in hidden})
    rows = [[r["metric"].get(c, "") for c in columns] for r in results]
    if not rows:
        ax.text(0.5, 0.5, "No data", color=MUTED, ha="center", va="center")
        return
    lines = ["    ".join(f"{c:<28}" for c in columns)]
    lines += ["    ".join(f"{v:<28}" for v in row) for row in rows]
    ax.text(0.01, 0.8, "\n".join(lines), color=TEXT, va="top", family="monospace", fontsize=8)


def render(prometheus: str, dashboard: dict[str, Any], out: Path, start: float, end: float) -> None:
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    header = 1.4
    width, height = 24 * COL_IN, rows * ROW_IN + header
    fig = plt.figure(figsize=(width, height), facecolor=BACKGROUND)
    stamp = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M UTC")
    fig.text(
        0.008,
        1 - 0.45 / height,
        dashboard["title"],
        color=TEXT,
        fontsize=16,
        weight="bold",
        va="center",
    )
    fig.text(
        0.008,
        1 - 1.0 / height,
        f"Rendered from the dashboard's own queries against Prometheus; data of one run "
        f"({(end - start) / 60:.0f} min to {stamp}) of an imgsearch serve process under test "
        "traffic (tests/e2e/test_prometheus.py).",
        color=MUTED,
        fontsize=9,
        va="center",
    )
    pad, title_room = 0.12, 0.3  # inches between panels, above each plot for its title
    for panel in panels:
        grid = panel["gridPos"]
        left, right = grid["x"] * COL_IN + pad, (grid["x"] + grid["w"]) * COL_IN - pad
        top = grid["y"] * ROW_IN + header + pad + title_room
        bottom = (grid["y"] + grid["h"]) * ROW_IN + header - pad
        if panel["type"] == "timeseries":  # room for the tick labels
            left, bottom = left + 0.55, bottom - 0.25
        ax = fig.add_axes(
            (left / width, 1 - bottom / height, (right - left) / width, (bottom - top) / height)
        )
        style(ax, panel["title"])
        if panel["type"] == "timeseries":
            draw_timeseries(ax, panel, prometheus, (start, end))
        elif panel["type"] == "stat":
            draw_stat(ax, panel, prometheus, end)
        elif panel["type"] == "table":
            draw_table(ax, panel, prometheus, end)
        else:
            raise ValueError(f"panel type {panel['type']!r} is not rendered")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, facecolor=BACKGROUND)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", required=True, help="e.g. http://127.0.0.1:9090")
    parser.add_argument("--dashboard", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--end", type=float, default=None, help="unix time (now)")
    parser.add_argument("--start", type=float, default=None, help="unix time (end - 1 h)")
    parser.add_argument("--rate-interval", default="1m", help="value of $__rate_interval")
    args = parser.parse_args()
    end = args.end or time.time()
    start = args.start or end - 3600
    dashboard = json.loads(args.dashboard.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            target["expr"] = target["expr"].replace("$__rate_interval", args.rate_interval)
    render(args.prometheus.rstrip("/"), dashboard, args.out, start, end)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
