#!/usr/bin/env python3
"""Renders the panels of a Grafana dashboard JSON to one PNG with matplotlib,
from a Prometheus server's query_range API: the same PromQL, legends, units
and layout (gridPos) as the dashboard, for where Grafana is not installed
(docs/deployment.md says why). Used by scripts/dashboard-shot.

    render_dashboard.py DASHBOARD.json PROMETHEUS_URL OUT.png [--rate-interval 4s]
"""
import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.gridspec import GridSpec  # noqa: E402


def query_range(url, expr, start, end, step):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{q}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt, metric):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt or "") or str(metric)


def data_range(url):
    """The span where dpr_load has samples: while any dprd ran."""
    res = query_range(url, "count(dpr_load)", time.time() - 3600, time.time(), 1)
    ts = [float(t) for s in res for t, _ in s["values"]]
    if not ts:
        sys.exit("render_dashboard: Prometheus holds no dpr_load samples")
    return min(ts), max(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dashboard")
    ap.add_argument("prometheus")
    ap.add_argument("out")
    ap.add_argument("--rate-interval", default="4s")
    a = ap.parse_args()
    dash = json.load(open(a.dashboard))
    start, end = data_range(a.prometheus)
    panels = [p for p in dash["panels"] if p.get("type") != "row"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(20, rows * 0.62))
    gs = GridSpec(rows, 24, figure=fig, hspace=1.6, wspace=0.8)
    empty = []
    for p in panels:
        g = p["gridPos"]
        ax = fig.add_subplot(gs[g["y"] : g["y"] + g["h"] - 1, g["x"] : g["x"] + g["w"] - (1 if g["x"] == 0 else 0)])
        ax.set_title(p["title"], fontsize=10, loc="left")
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        mappings = p.get("fieldConfig", {}).get("defaults", {}).get("mappings", [])
        series = []
        for t in p.get("targets", []):
            expr = t["expr"].replace("$__rate_interval", a.rate_interval).replace('=~"$instance"', '=~".*"')
            for s in query_range(a.prometheus, expr, start, end, 1):
                xs = [float(x) - start for x, _ in s["values"]]
                ys = [float(y) for _, y in s["values"]]
                series.append((legend(t.get("legendFormat"), s["metric"]), xs, ys))
        if not series:
            empty.append(p["title"])
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        if p["type"] == "state-timeline" and mappings:
            opts = mappings[0]["options"]
            colors = {float(k): v.get("color", "grey") for k, v in opts.items()}
            names = {float(k): v.get("text", k) for k, v in opts.items()}
            cmap = {"green": "#56a64b", "yellow": "#f2cc0c", "red": "#e02f44", "blue": "#3274d9", "purple": "#a352cc"}
            for i, (name, xs, ys) in enumerate(sorted(series)):
                for j, (x, y) in enumerate(zip(xs, ys)):
                    w = (xs[j + 1] - x) if j + 1 < len(xs) else 1.0
                    ax.barh(i, w, left=x, height=0.8, color=cmap.get(colors.get(y), "grey"), linewidth=0)
            ax.set_yticks(range(len(series)))
            ax.set_yticklabels([n for n, _, _ in sorted(series)], fontsize=7)
            handles = [plt.Rectangle((0, 0), 1, 1, color=cmap.get(colors[k], "grey")) for k in sorted(colors)]
            ax.legend(handles, [names[k] for k in sorted(names)], fontsize=7, ncol=5, loc="upper center",
                      bbox_to_anchor=(0.5, -0.15), frameon=False)
        else:
            scale = 100.0 if unit == "percentunit" else 1.0
            palette = plt.get_cmap("tab20").colors
            for k, (name, xs, ys) in enumerate(sorted(series)):
                ax.plot(xs, [y * scale for y in ys], label=name, linewidth=1.2, color=palette[k % len(palette)])
            if series:
                ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
            label = {"percentunit": "%", "cps": "conn/s", "pps": "packets/s", "s": "seconds"}.get(unit, "")
            ax.set_ylabel(label, fontsize=8)
        ax.set_xlabel("seconds since the first dprd started", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{dash['title']} — {a.dashboard.split('/')[-1]} rendered by scripts/lib/render_dashboard.py from a "
        f"`dpr-lab lab` run's Prometheus data (Grafana not installed here)",
        fontsize=12,
        y=0.995,
    )
    fig.subplots_adjust(top=0.96, bottom=0.03, left=0.04, right=0.93)
    fig.savefig(a.out, dpi=72, bbox_inches="tight")
    print(f"{a.out}: {len(panels)} panels, {(end - start):.0f} s of data; panels without data: {empty or 'none'}")


if __name__ == "__main__":
    main()
