#!/usr/bin/env python3
"""Draws BENCHMARKS.md's chart from criterion's output: the median time of one
creation at a full cap (`cargo bench --bench create_at_cap`) against the
number of live sessions, for the three managers, on log-log axes.

    python3 -m pip install matplotlib   # once
    python3 scripts/bench_chart.py [criterion-dir] [out.png]

Defaults: target/criterion and docs/create_at_cap.png. Reads each
`create_at_cap/<manager>/<live>/new/estimates.json` (criterion's median
estimate, in nanoseconds) and prints the numbers it plots.
"""

import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {
    "bounded": "mcp-bounded-session",
    "rmcp_local": "rmcp LocalSessionManager (oldest closed by hand)",
    "mcp_session": "mcp-session 0.2",
}


def medians(group_dir: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for estimates in sorted(group_dir.glob("*/*/new/estimates.json")):
        live_dir = estimates.parent.parent
        manager = live_dir.parent.name
        if not live_dir.name.isdigit():
            continue
        median_ns = json.loads(estimates.read_text())["median"]["point_estimate"]
        series.setdefault(manager, []).append((int(live_dir.name), median_ns / 1000.0))
    for points in series.values():
        points.sort()
    return series


def main() -> int:
    criterion = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
    out = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else "docs/create_at_cap.png")
    series = medians(criterion / "create_at_cap")
    if not series:
        print(f"no create_at_cap results under {criterion}; run "
              "`cargo bench --bench create_at_cap` first", file=sys.stderr)
        return 1
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for manager in ["mcp_session", "rmcp_local", "bounded"]:
        if manager not in series:
            continue
        lives = [live for live, _ in series[manager]]
        micros = [us for _, us in series[manager]]
        ax.plot(lives, micros, marker="o", label=LABELS.get(manager, manager))
        for live, us in series[manager]:
            print(f"{manager:>12} {live:>6} live: {us:10.1f} µs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("live sessions (the cap)")
    ax.set_ylabel("one creation at the full cap, median (µs)")
    ax.set_title("create_at_cap: creating a session when the cap is full")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
