"""The per-iteration metrics: their names, and the summaries every entry point draws from their rows (a leaf
module: the monitor, the plot, the run directory and the host loop read them without importing the trainer)."""

from __future__ import annotations

import math

import numpy as np

METRIC_NAMES: tuple[str, ...] = (
    "iteration", "env_steps", "mean_return", "episodes", "mean_length", "policy_std", "critic_loss",
    "policy_loss", "variance_loss", "approx_kl", "adv_std", "value_mean", "finite", "eval_return",
)
"""Per-iteration metrics (leading iteration axis in `train`'s output).

mean_return is the mean undiscounted return of the episodes that FINISHED in that iteration, acting with
exploration noise, and NaN when `episodes` is 0 (never a fake 0). mean_length is in decisions. policy_std is the
mean action std used while acting (NaN for discrete actions). variance_loss is NaN outside PPO-CMA modes.
approx_kl is KL(old || new) estimated on the iteration's samples. finite is 1 while every loss and parameter is
finite. eval_return is the mean deterministic (mean-action) return over eval_episodes fresh envs, every eval_every
iterations and at the last one, NaN in between."""


FINAL_LAST_K = 5  # "final return": the mean over the last 5 iterations that finished episodes


def summarize_returns(rows: list[dict[str, float]], last_k: int = FINAL_LAST_K) -> tuple[float, float]:
    """(mean return over the last `last_k` iterations that finished episodes, best iteration return)."""
    returns = [r["mean_return"] for r in rows if not math.isnan(r["mean_return"])]
    if not returns:
        return float("nan"), float("nan")
    return float(np.mean(returns[-last_k:])), float(np.max(returns))


def final_returns(rows: list[dict[str, float]], n_runs: int) -> list[float]:
    """The final return of each run of a seeds / sweep program (rows carry their run index in "run")."""
    return [summarize_returns([r for r in rows if int(r.get("run", 0)) == index])[0] for index in range(n_runs)]
