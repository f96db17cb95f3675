"""Learning-curve plots from run directories.

    python -m ppocma_jax.plot RUN_DIR [RUN_DIR ...] [--out curves.png]

Top panel: training return (with exploration noise) against env steps, and the deterministic evaluation return as
markers; bottom panel: the policy's action std, since growing and shrinking it is what PPO-CMA is about. Runs with
a `seed` column in metrics.csv are drawn as the mean over seeds with a min-max band.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .monitor import CSV_COLUMNS, read_metrics_csv
from .rundir import run_label

_METRIC_COLUMNS = set(CSV_COLUMNS)


def _label(run_dir: Path) -> str:
    return run_label(run_dir) or run_dir.name


def _curve(rows: list[dict[str, float]], column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, low, high) over seeds at each env_steps value, NaN cells skipped."""
    by_step: dict[float, list[float]] = {}
    for row in rows:
        value = row.get(column, math.nan)
        if not math.isnan(value):
            by_step.setdefault(row["env_steps"], []).append(value)
    xs = np.array(sorted(by_step))
    values = [np.array(by_step[x]) for x in xs]
    mean = np.array([v.mean() for v in values])
    return xs, mean, np.array([v.min() for v in values]), np.array([v.max() for v in values])


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ret, ax_std) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True,
                                         gridspec_kw={"height_ratios": [2, 1]})
    groups = []  # (label, rows): one curve each; a sweep's settings are separate curves, its seeds a band
    for run_dir in map(Path, run_dirs):
        rows = read_metrics_csv(run_dir / "metrics.csv")
        if rows and "setting" in rows[0]:
            swept = [k for k in rows[0] if k not in ("run", "setting", "seed", "wall_s")
                     and k not in _METRIC_COLUMNS]
            for setting in sorted({int(r["setting"]) for r in rows}):
                mine = [r for r in rows if int(r["setting"]) == setting]
                desc = ", ".join(f"{k}={mine[0][k]:g}" for k in swept)
                n_seeds = len({r["seed"] for r in mine})
                groups.append((f"{_label(run_dir).split(' (seed')[0]} {desc} ({n_seeds} seeds)".strip(), mine))
        elif rows:
            groups.append((_label(run_dir), rows))
    for i, (label, rows) in enumerate(groups):
        color = f"C{i % 10}"
        x, mean, low, high = _curve(rows, "mean_return")
        if len(x):
            ax_ret.plot(x, mean, color=color, label=f"{label}: training")
            if np.any(high > low):
                ax_ret.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
        x, mean, _, _ = _curve(rows, "eval_return")
        if len(x):
            ax_ret.plot(x, mean, "o--", color=color, markersize=4, linewidth=1, label=f"{label}: deterministic")
        x, mean, low, high = _curve(rows, "policy_std")
        if len(x):
            ax_std.plot(x, mean, color=color)
            if np.any(high > low):
                ax_std.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
    ax_ret.set_ylabel("episode return")
    ax_ret.grid(alpha=0.3)
    ax_ret.legend(fontsize=8)
    ax_std.set_ylabel("policy std (mean over dims)")
    ax_std.set_xlabel("environment steps")
    ax_std.grid(alpha=0.3)
    if title:
        ax_ret.set_title(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppocma_jax.plot", description="Overlay learning curves of runs.")
    parser.add_argument("run_dirs", nargs="+", help="run directories written by python -m ppocma_jax")
    parser.add_argument("--out", default="curves.png", help="output PNG (default: curves.png)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    missing = [d for d in args.run_dirs if not (Path(d) / "metrics.csv").exists()]
    if missing:
        print(f"python -m ppocma_jax.plot: error: no metrics.csv in {', '.join(missing)}", file=sys.stderr)
        return 2
    print(plot_runs(args.run_dirs, args.out, args.title))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
