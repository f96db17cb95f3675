"""Time-to-score: env steps and wall seconds (compile apart and included) until a run first reaches a return.

    python experiments/time_to_score.py --preset pendulum --thresholds -400 -250 -200 --seeds 0 1 2

The run is compiled once (shared by the seeds) as one chunk of --chunk iterations (no host callback) and each seed
is timed chunk by chunk on the host, so the wall time of each iteration is known to within a chunk. Per threshold
it reports the first iteration where (a) the training return (mean of the last 3 iterations' mean_return) and (b) the deterministic
evaluation (eval_return, every --eval-every iterations) reach it: env steps, run seconds and run + compile seconds.
Start-up (importing jax and ppocma_jax) is measured once and reported apart, with the machine's load average.
--stop-when-reached ends a seed once both curves reached every threshold (first-reach numbers unchanged; the
reported final return is then that of the last iterations run). Prints a Markdown table; --json saves
(after every seed).
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_runs import config_overrides, paper_config  # noqa: E402

from ppocma_jax.presets import preset_names, resolve_preset  # noqa: E402
from ppocma_jax.train import Trainer  # noqa: E402

IMPORT_S = time.perf_counter() - _T_START


def compile_run(config, hparams, chunk: int):
    """(trainer, compiled init_state, compiled chunk of `chunk` iterations, compile seconds): one compile shared by
    every seed (the seed is only a value of the key argument, so a second seed would recompile the same program)."""
    trainer = Trainer.build(config)
    hp = hparams.as_arrays()
    t0 = time.perf_counter()
    init = jax.jit(trainer.init_state).lower(jax.random.PRNGKey(0), hp).compile()
    state = init(jax.random.PRNGKey(0), hp)
    step = jax.jit(lambda s, h, limit: trainer.run(s, h, chunk, limit=limit)).lower(
        state, hp, np.int32(config.n_iterations)).compile()
    return trainer, init, step, time.perf_counter() - t0


def run_seed(config, hparams, seed: int, chunk: int, compiled, thresholds: list[float] | None = None) -> dict:
    """One run: per-iteration metrics and the host wall time at the end of each iteration's chunk. With
    `thresholds`, the run stops after the first chunk in which both curves have reached every threshold (the
    first-reach numbers are the same; only the rest of the budget is skipped)."""
    _, init, step, compile_s = compiled
    hp = hparams.as_arrays()
    rows, done = {k: [] for k in ("env_steps", "mean_return", "eval_return")}, 0
    wall, t0 = [], time.perf_counter()
    state = init(jax.random.PRNGKey(seed), hp)
    while done < config.n_iterations:
        state, metrics = step(state, hp, np.int32(config.n_iterations))
        metrics = jax.device_get(metrics)
        n = min(chunk, config.n_iterations - done)
        elapsed = time.perf_counter() - t0
        for k in rows:
            rows[k].extend(np.asarray(metrics[k][:n], np.float64).tolist())
        wall.extend([elapsed] * n)
        done += n
        run = {"seed": seed, "compile_s": compile_s, "wall_s": wall, **rows}
        if thresholds and all(hit is not None for t in thresholds for hit in first_reach(run, t).values()):
            break
    return {**run, "iterations_run": done, "stopped_early": done < config.n_iterations}


def first_reach(run: dict, threshold: float) -> dict:
    """First iteration where the smoothed training return / the evaluation reaches `threshold` (None: never)."""
    ret = np.asarray(run["mean_return"])
    smooth = np.array([np.nanmean(ret[max(0, i - 2):i + 1]) if np.any(np.isfinite(ret[max(0, i - 2):i + 1]))
                       else np.nan for i in range(len(ret))])
    out = {}
    for name, curve in (("train", smooth), ("eval", np.asarray(run["eval_return"]))):
        hit = np.flatnonzero(np.nan_to_num(curve, nan=-np.inf) >= threshold)
        if hit.size:
            i = int(hit[0])
            out[name] = {"env_steps": int(run["env_steps"][i]), "run_s": run["wall_s"][i],
                         "total_s": run["wall_s"][i] + run["compile_s"]}
        else:
            out[name] = None
    return out


def summarize(runs: list[dict], thresholds: list[float]) -> list[dict]:
    rows = []
    for thr in thresholds:
        row = {"threshold": thr}
        for name in ("train", "eval"):
            hits = [first_reach(r, thr)[name] for r in runs]
            ok = [h for h in hits if h is not None]
            row[name] = {"reached": len(ok), "of": len(runs),
                         **({k: float(np.median([h[k] for h in ok])) for k in ("env_steps", "run_s", "total_s")}
                            if ok else {})}
        rows.append(row)
    return rows


def table(label: str, rows: list[dict], compile_s: float) -> str:
    lines = ["| run | threshold | curve | reached | median env steps | median run s | median s incl. compile |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        for name in ("train", "eval"):
            c = row[name]
            cells = ([f"{c['env_steps']:,.0f}", f"{c['run_s']:.1f}", f"{c['total_s']:.1f}"] if "env_steps" in c
                     else ["-", "-", "-"])
            lines.append(f"| {label} | {row['threshold']:g} | {name} | {c['reached']}/{c['of']} | " +
                         " | ".join(cells) + " |")
    lines.append(f"\ncompile {compile_s:.1f} s (once, shared by the seeds), start-up imports {IMPORT_S:.1f} s, "
                 f"load average {os.getloadavg()[0]:.1f}")
    return "\n".join(lines)


def measure(preset: str, env: str | None, mode: str | None, budget: int | None, thresholds: list[float],
            seeds: list[int], chunk: int, eval_every: int, n_envs: int | None = None,
            stop_when_reached: bool = False, overrides: dict | None = None,
            on_seed: Callable[[dict], None] | None = None) -> dict:
    """Run every seed and summarise; the entry point other scripts (accelerator_check.py) reuse. `on_seed` gets the
    summary of the seeds done so far after each seed (a run stopped part-way keeps them)."""
    settings = resolve_preset(preset, mode)
    env = env or settings["env"]
    mode = mode or settings["mode"]
    budget = budget or settings.get("max_steps", 1_000_000)
    config, hparams = paper_config(preset, env, mode, budget, n_envs)
    config = config.replace(eval_every=eval_every, **(overrides or {})).validate()
    compiled = compile_run(config, hparams, chunk)
    compile_s = compiled[3]
    label = f"{env} {mode} ({preset}, {config.max_steps:,} steps)"
    runs, result = [], {}
    for seed in seeds:
        runs.append(run_seed(config, hparams, seed, chunk, compiled, thresholds if stop_when_reached else None))
        rows = summarize(runs, thresholds)
        result = {"label": label, "preset": preset, "env": env, "mode": mode, "budget": config.max_steps,
                  "seeds": seeds[:len(runs)], "import_s": IMPORT_S, "compile_s": compile_s,
                  "backend": jax.default_backend(), "jax": jax.__version__, "thresholds": rows,
                  "table": table(label, rows, compile_s),
                  "final_train_return": [float(np.nanmean(np.asarray(r["mean_return"])[-3:])) for r in runs],
                  "load_average": list(os.getloadavg()), "runs": runs}
        if on_seed is not None:
            on_seed(result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=preset_names())
    parser.add_argument("--env", default=None, help="default: the preset's env")
    parser.add_argument("--mode", default=None, help="default: the preset's mode")
    parser.add_argument("--budget", type=int, default=None, help="simulator steps per run (default: the preset's)")
    parser.add_argument("--thresholds", type=float, nargs="+", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--chunk", type=int, default=5, help="iterations per compiled chunk (timing resolution)")
    parser.add_argument("--eval-every", type=int, default=5, help="deterministic evaluation every K iterations")
    parser.add_argument("--n-envs", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any other Config field, e.g. --set policy_init=analytic (repeatable)")
    parser.add_argument("--stop-when-reached", action="store_true",
                        help="end a seed once both curves reached every threshold (skips the rest of the budget)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.chunk < 1 or args.eval_every < 1 or (args.budget is not None and args.budget < 1) or not args.seeds:
        parser.error("--chunk, --eval-every and --budget must be positive and --seeds non-empty")
    try:
        result = measure(args.preset, args.env, args.mode, args.budget, args.thresholds, args.seeds, args.chunk,
                         args.eval_every, args.n_envs, args.stop_when_reached, config_overrides(args.set),
                         on_seed=(lambda r: Path(args.json).write_text(json.dumps(r, indent=1))) if args.json
                         else None)
    except Exception as exc:  # a bad env / mode name: one line, not a traceback
        parser.error(f"{type(exc).__name__}: {exc}")
    print(result["table"])


if __name__ == "__main__":
    main()
