"""Shared machinery of the paper reproductions (convergence.py, humanoid.py): one env x one mode x K seeds as one
compiled program with the paper's settings, learning curves, a combined plot and a table of final returns."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from ppocma_jax import Config, HParams
from ppocma_jax.config import hparams_fields
from ppocma_jax.presets import resolve_preset
from ppocma_jax.sweep import expand_seeds, make_train_batched

FINAL_ITERATIONS = 5  # a run's final return: mean over its last iterations that finished episodes


# Study labels beyond the trainer's modes: "PPO-orig" is the original code's PPO variant (advantages divided by
# their std, not centred), which the paper compared against; plain "PPO" is standard practice (mean/std).
VARIANTS: dict[str, tuple[str, dict]] = {"PPO-orig": ("PPO", {"adv_norm": "std"})}


def paper_config(preset: str, env: str, mode: str, budget: int, n_envs: int | None = None
                 ) -> tuple[Config, HParams]:
    """The preset's settings for `mode` (a trainer mode or a key of VARIANTS) on `env`, with `budget` simulator
    steps (rounded down to whole iterations)."""
    mode, changes = VARIANTS.get(mode, (mode, {}))
    settings = resolve_preset(preset, mode)
    hp_names = {f.name for f in hparams_fields()}
    cfg = {k: v for k, v in settings.items() if k not in hp_names}
    cfg.update(env=env, max_steps=budget, eval_every=0, **changes)
    if n_envs is not None:
        cfg["n_envs"] = n_envs
    return Config(**cfg).validate(), HParams(**{k: v for k, v in settings.items() if k in hp_names})


def config_overrides(pairs: Sequence[str]) -> dict:
    """Config fields from NAME=VALUE strings (the experiment scripts' --set), each value cast to the type of the
    field's default: `["policy_init=analytic", "n_updates=2"]` -> {"policy_init": "analytic", "n_updates": 2}."""
    defaults = Config()
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not hasattr(defaults, name.replace("-", "_")):
            raise ValueError(f"--set {pair!r}: expected NAME=VALUE with NAME a Config field")
        name = name.replace("-", "_")
        kind = type(getattr(defaults, name))
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"--set {pair!r}: expected true or false")
            out[name] = value.lower() in ("true", "1")
        elif kind in (int, float, str):
            try:
                out[name] = kind(value)
            except ValueError:
                raise ValueError(f"--set {pair!r}: expected a {kind.__name__}") from None
        else:
            raise ValueError(f"--set {pair!r}: {name} cannot be set with --set")
    return out


def run_label(config: Config) -> str:
    """The name a result is filed under: the mode, or the VARIANTS key whose settings it carries."""
    for label, (mode, changes) in VARIANTS.items():
        if config.mode == mode and all(getattr(config, k) == v for k, v in changes.items()):
            return label
    return config.mode


def load(out_dir: Path, name: str) -> list[dict]:
    """Results saved by an earlier (possibly interrupted) invocation, so a study resumes where it stopped."""
    path = out_dir / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else []


def done(results: list[dict], env: str, label: str, seeds: Sequence[int], budget: int) -> bool:
    return any(r["env"] == env and r["mode"] == label and r["seeds"] == list(seeds)
               and r.get("budget") == budget for r in results)


def run_seeds(config: Config, hparams: HParams, seeds: Sequence[int]) -> dict:
    """Train len(seeds) runs in one program -> curves (env steps, per-seed mean_return) and timings."""
    runs = expand_seeds([hparams], [{}], seeds)
    train = jax.jit(make_train_batched(config))
    t0 = time.perf_counter()
    compiled = train.lower(runs.keys, runs.hparams).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, metrics = jax.block_until_ready(compiled(runs.keys, runs.hparams))
    run_s = time.perf_counter() - t0
    returns = np.asarray(metrics["mean_return"], np.float64)  # [iterations, seeds], NaN: no episode ended
    finals = [_final(returns[:, i]) for i in range(returns.shape[1])]
    return {
        "env": config.env, "mode": run_label(config), "seeds": list(seeds), "iter_steps": config.iter_steps,
        "budget": config.max_steps, "adv_norm": config.advantage_norm,
        "env_steps": np.asarray(metrics["env_steps"])[:, 0].tolist(),
        "mean_return": [[None if math.isnan(v) else v for v in row] for row in returns.tolist()],
        "finals": finals, "compile_s": compile_s, "run_s": run_s,
        "steps_per_s": config.n_iterations * config.iter_steps * len(seeds) / run_s,
    }


def _final(curve: np.ndarray) -> float:
    finished = curve[~np.isnan(curve)]
    return float(np.mean(finished[-FINAL_ITERATIONS:])) if finished.size else math.nan


def table(results: list[dict]) -> str:
    """Markdown: env | mode | final mean +- std over seeds | per-seed finals | time."""
    lines = ["| env | mode | final return (mean +- std over seeds) | per seed | run time | compile |",
             "|---|---|---|---|---|---|"]
    for r in results:
        f = np.array([v for v in r["finals"] if not math.isnan(v)])
        cell = f"{f.mean():.1f} +- {f.std():.1f}" if f.size else "no finished episode"
        lines.append(f"| {r['env']} | {r['mode']} | {cell} | {', '.join(f'{v:.1f}' for v in r['finals'])} | "
                     f"{r['run_s']:.0f} s | {r['compile_s']:.0f} s |")
    return "\n".join(lines)


def plot(results: list[dict], out: Path, title: str) -> Path:
    """One panel per env: mean over seeds as a step function of env steps, shaded +- half a std (as the
    original's convergence plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(r["env"] for r in results))
    cols = min(3, len(envs))
    rows = math.ceil(len(envs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, env in zip(axes.flat, envs):
        for r in (r for r in results if r["env"] == env):
            steps = np.asarray(r["env_steps"], np.float64)
            curves = np.array([[np.nan if v is None else v for v in row] for row in r["mean_return"]])
            with np.errstate(all="ignore"):
                mean = np.nanmean(curves, axis=1)
                half_std = 0.5 * np.nanstd(curves, axis=1)
            # Iterations in which no episode ended (long episodes: reacher ends one every 5 iterations) are NaN:
            # draw the curve through the iterations that have a return instead of leaving gaps.
            ok = np.isfinite(mean)
            half_std = np.where(np.isfinite(half_std), half_std, 0.0)
            line, = ax.step(steps[ok], mean[ok], where="post", label=f"{r['mode']} ({len(r['seeds'])} seeds)")
            ax.fill_between(steps[ok], (mean - half_std)[ok], (mean + half_std)[ok], step="post", alpha=0.25,
                            color=line.get_color())
        ax.set_title(env)
        ax.set_xlabel("simulator steps")
        ax.set_ylabel("episode return")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(envs):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def save(results: list[dict], out_dir: Path, name: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=1))
    (out_dir / f"{name}.md").write_text(table(results) + "\n")
