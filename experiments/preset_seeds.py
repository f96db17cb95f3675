"""Train a preset over several seeds in one compiled program and print a per-seed table of returns.

    python experiments/preset_seeds.py --preset pendulum --seeds 3
    python experiments/preset_seeds.py --preset cartpole-ppo --seeds 3 --max-steps 100000

Compile time and run time are printed separately. The seed axis is a jax.vmap over train's key argument.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from ppocma_jax import Config, make_train
from ppocma_jax.presets import PRESETS, resolve_preset


def final_and_best(returns: np.ndarray, last_k: int = 5) -> tuple[float, float]:
    """(mean of the last k iterations that finished episodes, best iteration's return)."""
    valid = returns[~np.isnan(returns)]
    return float(np.mean(valid[-last_k:])), float(np.max(valid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="pendulum", choices=list(PRESETS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--json", default=None, help="write the per-iteration mean returns of every seed here")
    args = parser.parse_args()

    settings = resolve_preset(args.preset)
    if args.max_steps is not None:
        settings["max_steps"] = args.max_steps
    config = Config(**settings)
    train = jax.jit(jax.vmap(make_train(config), in_axes=(0, None)))
    keys = jax.random.split(jax.random.PRNGKey(0), args.seeds)

    t0 = time.perf_counter()
    compiled = train.lower(keys, None).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, metrics = compiled(keys, None)
    jax.block_until_ready(metrics)
    run_s = time.perf_counter() - t0

    returns = np.asarray(metrics["mean_return"])  # [seeds, iterations]
    steps = np.asarray(metrics["env_steps"])[0]
    print(f"{args.preset}: {config.mode} on {config.env}, {config.max_steps:,} env steps x {args.seeds} seeds; "
          f"compile {compile_s:.1f} s, run {run_s:.1f} s ({args.seeds * steps[-1] / run_s:,.0f} env steps/s "
          "over all seeds)")
    print(f"{'seed':>4} {'final (last 5 it.)':>19} {'best':>9}  return at 20/40/60/80/100% of the budget")
    for seed, r in enumerate(returns):
        final, best = final_and_best(r)
        marks = [r[min(len(r) - 1, int(f * len(r)) - 1)] for f in (0.2, 0.4, 0.6, 0.8, 1.0)]
        print(f"{seed:>4} {final:>19.1f} {best:>9.1f}  " + " / ".join(f"{m:.0f}" for m in marks))
    finals = [final_and_best(r)[0] for r in returns]
    print(f"mean final {np.mean(finals):.1f} +- {np.std(finals):.1f} (std over seeds)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"env_steps": steps.tolist(), "mean_return": np.where(np.isnan(returns), None,
                                                                            returns).tolist()}, fh)


if __name__ == "__main__":
    main()
