"""Host-side sinks for the per-iteration metrics that the compiled loop sends out through `jax.debug.callback`.

`RunMonitor` is the callback: it appends one row per iteration to metrics.csv and metrics.jsonl (flushed, so a
killed run keeps its rows) and prints a progress line (throttled so that printing never dominates a fast run).

metrics.jsonl holds every value at full precision (JSON floats round-trip exactly); metrics.csv rounds to 6
significant digits for reading. On resume both files are rebuilt from the jsonl's rows up to the checkpoint (the
CSV's only where the jsonl has fewer), so a resumed run's files equal an uninterrupted run's to the last digit
(wall_s aside). A row cut short by a kill, or otherwise unreadable, ends what is read of either file.

A failed write (a full disk) does not raise inside the compiled program's callback: it is recorded in
`write_error` (one line naming the file) and the caller stops at the next boundary without checkpointing.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .metrics import METRIC_NAMES

CSV_COLUMNS: tuple[str, ...] = ("iteration", "env_steps", "wall_s") + tuple(
    name for name in METRIC_NAMES if name not in ("iteration", "env_steps"))


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _csv_value(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return ""  # an empty cell, never a fake number (e.g. no episode finished)
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return f"{value:.6g}"


class MetricsWriteError(Exception):
    """metrics.csv / metrics.jsonl cannot be written: one line naming the file."""


def _write_failure(err: BaseException, path: Path) -> str:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on device writing {path}"
    if isinstance(err, OSError) and err.strerror:
        return f"cannot write {path}: {err.strerror}"
    return f"cannot write {path}: {err}"


class RunMonitor:
    """Callable sink: `monitor(metrics)` for each iteration, in order."""

    def __init__(self, out_dir: Path | None, n_iterations: int, iter_steps: int, quiet: bool = False,
                 verbose: bool = False, stream: TextIO | None = None, print_every_s: float = 1.0,
                 resume_after: int | None = None, tensorboard: bool = False,
                 run_labels: list[dict[str, Any]] | None = None, wandb_project: str | None = None,
                 wandb_config: dict[str, Any] | None = None):
        """resume_after=K continues an existing metrics.csv: rows after iteration K (work lost when the run was
        killed after its last checkpoint) are dropped, so the file has no gaps and no duplicate iterations, and
        wall_s continues from the last kept row.

        run_labels (one dict per run, e.g. {"setting": 0, "seed": 3, "learning_rate": 1e-3}) makes this the sink of
        a batched program: `monitor(metrics, ran)` gets [R] arrays and writes one row per run, the labels first.

        wandb_project also logs every row to Weights & Biases (WandbSink), with wandb_config as the run's config."""
        self.run_labels = run_labels
        self.label_columns: tuple[str, ...] = ("run",) + tuple(run_labels[0]) if run_labels else ()
        self.columns = self.label_columns + CSV_COLUMNS
        self.failed_runs: set[int] = set()
        self.n_iterations = n_iterations
        self.iter_steps = iter_steps
        self.quiet = quiet
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.print_every_s = print_every_s
        self.rows: list[dict[str, float]] = []
        self.t0: float | None = None
        self._last_print = -math.inf
        self.first_nonfinite: int | None = None
        self.first_iteration: int | None = None
        self._file = None
        self._jsonl = None
        self._writer = None
        self.write_error: str | None = None  # the first failed write, one line (see the module docstring)
        self.wall_offset = 0.0
        if resume_after is not None and out_dir is not None:
            self.rows = rows_up_to(Path(out_dir), resume_after)
            self.wall_offset = self.rows[-1]["wall_s"] if self.rows else 0.0
        if out_dir is not None:
            self._open(Path(out_dir))
        self._tb = None
        if tensorboard and out_dir is not None:
            from tensorboardX import SummaryWriter

            # purge_step drops events of iterations after the checkpoint we resume from
            self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"),
                                     purge_step=None if resume_after is None else resume_after + 1)
        self._wandb = None
        if wandb_project is not None and out_dir is not None:
            self._wandb = WandbSink(Path(out_dir), wandb_project, wandb_config or {}, resume_after is not None,
                                    self.label_columns)

    def _open(self, out_dir: Path) -> None:
        """Rewrite metrics.csv and metrics.jsonl atomically (header plus the rows kept on resume), then open both
        for appending. Raises MetricsWriteError (one line) when the directory cannot be written."""
        path = out_dir / "metrics.csv"
        self._paths = (path, out_dir / "metrics.jsonl")
        target = path
        try:
            with open(path.with_suffix(".csv.tmp"), "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(self.columns)
                for row in self.rows:
                    writer.writerow([_csv_value(row.get(col, float("nan"))) for col in self.columns])
            path.with_suffix(".csv.tmp").replace(path)
            target = jsonl = out_dir / "metrics.jsonl"
            with open(jsonl.with_suffix(".jsonl.tmp"), "w") as fh:
                for row in self.rows:
                    fh.write(_json_line(row))
            jsonl.with_suffix(".jsonl.tmp").replace(jsonl)
            target = path
            self._file = open(path, "a", newline="")
            self._writer = csv.writer(self._file)
            target = jsonl
            self._jsonl = open(jsonl, "a")
        except OSError as err:
            raise MetricsWriteError(_write_failure(err, target)) from None

    def start(self) -> None:
        """Call right before the compiled program starts: wall_s counts from here (compile excluded)."""
        self.t0 = time.perf_counter()

    def __call__(self, metrics: dict[str, Any], ran: Any = True) -> None:
        if not bool(np.asarray(ran)):
            return  # an iteration past the run's end inside a fixed-length compiled chunk
        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = now
        wall = self.wall_offset + now - self.t0
        if self.run_labels is None:
            rows = [{name: float(np.asarray(value)) for name, value in metrics.items()}]
        else:
            arrays = {name: np.asarray(value, np.float64) for name, value in metrics.items()}
            rows = [{"run": float(r), **label, **{name: float(a[r]) for name, a in arrays.items()}}
                    for r, label in enumerate(self.run_labels)]
        for r, row in enumerate(rows):
            row["wall_s"] = wall
            self._record(r, row)
        if self._wandb is not None:
            self._wandb.log(rows, self.run_labels is not None)
        row = rows[0] if len(rows) == 1 else self._aggregate(rows)
        if self.first_iteration is None:
            self.first_iteration = int(row["iteration"])
        last = int(row["iteration"]) >= self.n_iterations
        evaluated = not math.isnan(row.get("eval_return", float("nan")))
        if not self.quiet and (self.verbose or last or evaluated or now - self._last_print >= self.print_every_s):
            self._last_print = now
            print(self.format_line(row), file=self.stream, flush=True)

    def _record(self, run: int, row: dict[str, float]) -> None:
        self.rows.append(row)
        if row.get("finite", 1) == 0 and run not in self.failed_runs:
            self.failed_runs.add(run)
            if self.first_nonfinite is None:
                self.first_nonfinite = int(row["iteration"])
            which = "" if self.run_labels is None else f" of run {run} ({_describe(self.run_labels[run])})"
            print(f"warning: NaN/Inf in the update of iteration {int(row['iteration'])}{which}: the update is "
                  "discarded and that run stops at its last good state", file=sys.stderr, flush=True)
        if self._writer is not None:
            target = self._paths[0]
            try:
                self._writer.writerow([_csv_value(row.get(col, float("nan"))) for col in self.columns])
                self._file.flush()
                target = self._paths[1]
                self._jsonl.write(_json_line(row))
                self._jsonl.flush()
            except (OSError, ValueError) as err:  # ValueError: written after close (an aborted run)
                if self.write_error is None:
                    self.write_error = _write_failure(err, target)
                self._writer = None  # no more rows: the caller stops without checkpointing past them
        if self._tb is not None:
            step = int(row["env_steps"])
            prefix = "" if self.run_labels is None else f"run{run}/"
            for name, value in row.items():
                if name not in ("iteration", "env_steps", "wall_s", "run") + self.label_columns \
                        and not math.isnan(value):
                    self._tb.add_scalar(prefix + name, value, step)

    def _aggregate(self, rows: list[dict[str, float]]) -> dict[str, float]:
        """One progress row for R runs: means over runs (NaNs skipped), episodes summed."""
        out = dict(rows[0])
        for key in ("mean_return", "eval_return", "policy_std", "critic_loss", "policy_loss", "variance_loss",
                    "approx_kl", "adv_std"):
            values = [r[key] for r in rows if not math.isnan(r.get(key, math.nan))]
            out[key] = float(np.mean(values)) if values else math.nan
        returns = [r["mean_return"] for r in rows if not math.isnan(r["mean_return"])]
        out["return_min"] = min(returns) if returns else math.nan
        out["return_max"] = max(returns) if returns else math.nan
        out["episodes"] = float(sum(r["episodes"] for r in rows))
        return out

    def all_runs_failed(self) -> bool:
        n = 1 if self.run_labels is None else len(self.run_labels)
        return len(self.failed_runs) >= n

    def format_line(self, row: dict[str, float]) -> str:
        it = int(row["iteration"])
        elapsed = row["wall_s"] - self.wall_offset
        done_here = it - self.first_iteration + 1
        n_runs = 1 if self.run_labels is None else len(self.run_labels)
        rate = done_here * self.iter_steps * n_runs / elapsed if elapsed > 0 else float("nan")
        eta = (self.n_iterations - it) * (elapsed / done_here) if done_here > 0 else float("nan")
        ret = row["mean_return"]
        ret_s = f"{ret:9.1f} ({int(row['episodes'])} ep)" if not math.isnan(ret) else f"{'-':>9} (0 ep)"
        if self.run_labels is not None and not math.isnan(ret):
            ret_s = (f"{ret:9.1f} mean of {len(self.run_labels)} runs [{row['return_min']:.1f}, "
                     f"{row['return_max']:.1f}]")
        ev = row.get("eval_return", float("nan"))
        if not math.isnan(ev):
            ret_s += f" | eval {ev:9.1f}"
        std = row.get("policy_std", float("nan"))
        std_s = f"std {std:.3f}" if not math.isnan(std) else "std -"
        width = len(str(self.n_iterations))
        line = (f"iter {it:>{width}}/{self.n_iterations} | steps {int(row['env_steps']):>11,} | return {ret_s} | "
                f"{std_s} | {rate:,.0f} steps/s | ETA {_fmt_duration(eta) if not math.isnan(eta) else '-'}")
        if self.verbose:
            extras = ("critic_loss", "policy_loss", "variance_loss", "approx_kl", "adv_std")
            line += " | " + " ".join(f"{k} {row[k]:.4g}" for k in extras if not math.isnan(row.get(k, math.nan)))
        return line

    def close(self) -> None:
        self._writer = None
        files, self._file, self._jsonl = (self._file, self._jsonl), None, None
        for fh in files:
            if fh is not None:
                try:
                    fh.close()
                except OSError as err:  # the flush of a full disk
                    if self.write_error is None:
                        self.write_error = _write_failure(err, Path(fh.name))
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.close()
            self._wandb = None


class WandbSink:
    """Every row to Weights & Biases: one wandb run per run directory (its files in RUN_DIR/wandb/), the wandb step
    is the iteration and env_steps is logged beside the metrics. Seed / sweep runs are keyed per run like the
    TensorBoard sink (`run3/mean_return`).

    The wandb run id is kept in RUN_DIR/wandb_id.txt, so `--resume` continues the same wandb run. Iterations between
    the checkpoint and a kill are recomputed identically (exact resume) and logged again under the same step, which
    wandb ignores as already logged."""

    def __init__(self, out_dir: Path, project: str, config: dict[str, Any], resume: bool,
                 label_columns: tuple[str, ...] = ()):
        import uuid

        import wandb

        id_file = out_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if resume and id_file.exists() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id + "\n")
        self.skip = ("iteration", "wall_s", "run") + tuple(label_columns)
        self.run = wandb.init(project=project, name=out_dir.name, id=run_id, resume="allow" if resume else None,
                              dir=str(out_dir),
                              config=config)

    def log(self, rows: list[dict[str, float]], batched: bool) -> None:
        """One iteration: a row per run (one row for a single run). NaN cells (no episode finished, no evaluation
        this iteration) are left out, never logged as a number."""
        data: dict[str, float] = {"env_steps": rows[0]["env_steps"]}
        for r, row in enumerate(rows):
            prefix = f"run{r}/" if batched else ""
            data.update({prefix + name: value for name, value in row.items()
                         if name not in self.skip and name != "env_steps" and not math.isnan(value)})
        self.run.log(data, step=int(rows[0]["iteration"]))

    def close(self) -> None:
        self.run.finish()


def _describe(label: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in label.items())


def _json_line(row: dict[str, float]) -> str:
    ints = ("iteration", "env_steps", "episodes", "finite", "run", "seed", "setting")
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else
                 int(v) if k in ints else v) for k, v in row.items()}
    return json.dumps(clean) + "\n"


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """Rows of a metrics.csv as floats (empty cells -> NaN). Reading stops at the first row that is cut short or
    malformed (what a kill or a full disk leaves): it and any rows after it are left out."""
    if not Path(path).exists():
        return []
    rows: list[dict[str, float]] = []
    with open(path, newline="", errors="replace") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            return rows
        for cells in reader:
            if len(cells) != len(header):
                break
            try:
                rows.append({k: float(v) if v != "" else float("nan") for k, v in zip(header, cells)})
            except ValueError:
                break
    return rows


def read_metrics_jsonl(path: Path) -> list[dict[str, float]]:
    """Rows of a metrics.jsonl as floats at full precision (null -> NaN). Reading stops at the first line that is
    cut short or malformed, like read_metrics_csv."""
    rows: list[dict[str, float]] = []
    try:
        fh = open(path, errors="replace")
    except FileNotFoundError:
        return rows
    with fh:
        for line in fh:
            try:
                data = json.loads(line)
                if not line.endswith("\n") or not isinstance(data, dict) or "iteration" not in data:
                    break
                rows.append({k: float("nan") if v is None else float(v) for k, v in data.items()})
            except (ValueError, TypeError):
                break
    return rows


def rows_up_to(out_dir: Path, iteration: int) -> list[dict[str, float]]:
    """The metric rows of iterations <= `iteration` (a checkpoint's): metrics.jsonl's full-precision rows, or
    metrics.csv's where the jsonl holds fewer (an older run, or a jsonl cut shorter than the CSV)."""
    from_jsonl = [row for row in read_metrics_jsonl(out_dir / "metrics.jsonl") if row["iteration"] <= iteration]
    from_csv = [row for row in read_metrics_csv(out_dir / "metrics.csv") if row["iteration"] <= iteration]
    return from_jsonl if len(from_jsonl) >= len(from_csv) else from_csv
