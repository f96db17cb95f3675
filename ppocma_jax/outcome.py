"""How a run ended, and the one way every run reports it.

Both drivers (compiled_train.py for the JAX suites, host_train.py for gymnasium envs) return an `Outcome`;
`finish(run, outcome)` then does what every run does at its end, in this order: the stop line (SIGINT / SIGTERM:
the checkpoint is saved, here is the resume command; exit 128 + signal), curve.png, summary.json (seeds / sweeps),
result.json, the `result:` line, the caller's after-result work (--render), and the one-line NaN / Inf error (exit
1). It returns the exit code.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from .config import Config
from .metrics import final_returns, summarize_returns
from .rundir import PROG, RESULT_FILE, SUMMARY_FILE, RunDir, provenance

# Thresholds at which gymnax's classic-control tasks count as solved (gym's reward_threshold); the gymnasium
# versions of the same tasks share them.
SOLVED_AT: dict[str, float] = {
    "gymnax/MountainCarContinuous-v0": 90.0,
    "gymnax/CartPole-v1": 475.0,
    "gymnax/Pendulum-v1": -200.0,
}


def solved_threshold(env: str) -> float | None:
    return SOLVED_AT.get(env.replace("gymnasium/", "gymnax/"))


@dataclass
class Outcome:
    """What a driver hands back. rows: the metric rows of the whole run (RunMonitor.rows, resumed rows included);
    labels: one label per run of a seeds / sweep program (None for one run); iterations: [first of this segment,
    done]; first_nonfinite / failed_runs: where NaN/Inf stopped runs; stopped_by: the signal that stopped it early
    (None when it ran to its end or stopped on NaN); primary: this process reports and writes (process 0); state:
    the final TrainState (batched for seeds / sweeps); after_result: work to do once the result is out (--render)."""

    config: Config
    rows: list[dict[str, float]]
    labels: list[dict[str, Any]] | None
    start_iteration: int
    done_iterations: int
    compile_s: float
    run_s: float
    checkpoint_dir: Any
    first_nonfinite: int | None = None
    failed_runs: int = 0
    stopped_by: int | None = None
    primary: bool = True
    state: Any = field(default=None, repr=False)
    init_s: float = 0.0  # the policy's initialisation (run, not compiled)
    compile_cpu_s: float | None = None  # CPU seconds of the compile, which a loaded machine does not inflate
    eval_compile_s: float | None = None  # wall seconds the evaluation program took to load / compile, beside the run
    after_result: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def n_runs(self) -> int:
        return 1 if self.labels is None else len(self.labels)


def finish(run: RunDir, outcome: Outcome) -> int:
    """Report the outcome (see the module docstring) and return the exit code."""
    from .stopping import signal_name

    config = outcome.config
    n_iter = config.n_iterations
    if outcome.stopped_by is not None:
        print(f"{PROG}: stopped by {signal_name(outcome.stopped_by)} after iteration {outcome.done_iterations} of "
              f"{n_iter}; checkpoint saved; continue with: {PROG} --resume {run.path}", file=sys.stderr)
        return 128 + outcome.stopped_by
    if not outcome.primary:
        return 0
    from .plot import plot_runs

    plot_runs([run.path], run.path / "curve.png", title=f"{config.mode} on {config.env}")
    result = _result(outcome)
    steps_run = (outcome.done_iterations - outcome.start_iteration) * config.iter_steps * outcome.n_runs
    timing = (f"{steps_run:,} env steps in {outcome.run_s:.1f} s ({result['steps_per_s']:,.0f} steps/s) + "
              f"{outcome.compile_s:.1f} s compile; saved to {run.path}")
    if outcome.labels is None:
        summary_text = f"result: {_verdict(config.env, result['final_return'], result['best_return'])}; {timing}"
    else:
        summary_text = _sweep_summary(run, outcome, result) + f"\nresult: {outcome.n_runs} runs; {timing}"
    result["provenance"] = provenance(run.argv)
    run.write_json(RESULT_FILE, result)
    print(summary_text)
    if outcome.after_result is not None:
        outcome.after_result()
    if outcome.first_nonfinite is not None:
        scope = "" if outcome.labels is None else f" in {outcome.failed_runs} of {outcome.n_runs} runs"
        print(f"{PROG}: error: training produced NaN/Inf at iteration {outcome.first_nonfinite}{scope} (losses or "
              f"parameters); the last good state (after iteration {outcome.first_nonfinite - 1}) is kept in the "
              f"newest checkpoint in {outcome.checkpoint_dir}", file=sys.stderr)
        return 1
    return 0


def _result(outcome: Outcome) -> dict[str, Any]:
    """result.json: env, mode, steps, timing, final / best return and the last deterministic evaluation (per run
    for seeds / sweeps: their returns per setting are in the "settings" table, added by _sweep_summary)."""
    config = outcome.config
    steps_run = (outcome.done_iterations - outcome.start_iteration) * config.iter_steps * outcome.n_runs
    result: dict[str, Any] = {
        "env": config.env, "mode": config.mode, "env_steps": outcome.done_iterations * config.iter_steps,
        "runs": outcome.n_runs, "compile_s": round(outcome.compile_s, 2), "run_s": round(outcome.run_s, 2),
        "steps_per_s": round(steps_run / max(outcome.run_s, 1e-9), 1)}
    if outcome.compile_cpu_s is not None:
        result.update(compile_cpu_s=round(outcome.compile_cpu_s, 2), init_s=round(outcome.init_s, 2))
    if outcome.eval_compile_s is not None:
        result["eval_compile_s"] = round(outcome.eval_compile_s, 2)
    if outcome.labels is None:
        final, best = summarize_returns(outcome.rows)
        result.update(final_return=final, best_return=best, final_eval_return=_last_eval(outcome.rows))
    else:
        result["final_eval_return"] = [_last_eval([r for r in outcome.rows if int(r["run"]) == index])
                                       for index in range(outcome.n_runs)]
    if outcome.first_nonfinite is not None:
        result["nonfinite_at_iteration"] = outcome.first_nonfinite
    return result


def _last_eval(rows: list[dict[str, float]]) -> float:
    """The newest deterministic evaluation return (NaN when none ran)."""
    evaluated = [r["eval_return"] for r in rows if not math.isnan(r.get("eval_return", math.nan))]
    return evaluated[-1] if evaluated else math.nan


def _verdict(env: str, final: float, best: float) -> str:
    solved = solved_threshold(env)
    verdict = ""
    if solved is not None and not math.isnan(final):
        verdict = f" ({'solved' if final >= solved else 'not solved'}: threshold {solved:g})"
    return f"final mean return {final:.1f} (last 5 iterations with episodes), best {best:.1f}{verdict}"


def _sweep_summary(run: RunDir, outcome: Outcome, result: dict[str, Any]) -> str:
    """Final return per run -> table per setting (mean, std, min, max over seeds), best first; saved to
    summary.json and result.json's "settings"."""
    from .sweep import summarize

    labels = outcome.labels
    finals = final_returns(outcome.rows, len(labels))
    swept = [k for k in labels[0] if k not in ("setting", "seed")]
    table = summarize(labels, finals, swept)
    run.write_json(SUMMARY_FILE, {"runs": [dict(label, final_return=f) for label, f in zip(labels, finals)],
                                  "settings": table})
    head = "".join(f"{k:>22s}" for k in swept) + f"{'seeds':>6s}{'mean':>10s}{'std':>9s}{'min':>10s}{'max':>10s}"
    lines = ["final return (mean of each run's last 5 iterations with episodes), per setting, best first:", head]
    for row in table:
        lines.append("".join(f"{row[k]:>22.4g}" for k in swept) + f"{row['seeds']:>6d}{row['mean']:>10.1f}"
                     f"{row['std']:>9.1f}{row['min']:>10.1f}{row['max']:>10.1f}")
    if len(table) > 1:
        best = table[0]
        lines.append("best setting: " + (", ".join(f"{k}={best[k]:g}" for k in swept) or "-")
                     + f" (mean final return {best['mean']:.1f})")
    result["settings"] = table
    return "\n".join(lines)
