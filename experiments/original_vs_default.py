"""Original-mode vs default PPO-CMA-m on the issue's Pendulum setting, seeds as one program.

    python experiments/original_vs_default.py --rows default original --seeds 3

Setting (the authors' code was run with the same): gymnax Pendulum-v1, PPO-CMA-m, action repeat 2, 20 envs x 100
decisions (exactly 20 whole episodes per iteration), minibatch 512, H=9, lr 5e-4, 100 updates, 400k steps.
Rows: default (our value estimation), original (`--preset original`'s: Monte-Carlo targets, every episode end
bootstrapped from time feature 0, TF1 Adam epsilon), mc (only the Monte-Carlo targets), ends (only the original
episode ends). Prints mean return over iterations 1-10 / 41-50 / 91-100 and over the last 5, per seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from paper_runs import run_seeds  # noqa: E402

from ppocma_jax import Config, HParams  # noqa: E402

SETTING = dict(env="gymnax/Pendulum-v1", mode="PPO-CMA-m", action_repeat=2, n_envs=20, iter_steps=4000,
               batch_size=512, history_buffer_size=9, n_updates=100, max_steps=400_000, eval_every=0)
ROWS = {
    "default": {},
    "original": dict(value_targets="mc", episode_ends="original", adam_epsilon="tf1"),
    "mc": dict(value_targets="mc"),
    "ends": dict(episode_ends="original"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print("| row | iterations 1-10 / 41-50 / 91-100, per seed | last 5 iterations, per seed | time |")
    print("|---|---|---|---|")
    for row in args.rows:
        r = run_seeds(Config(**SETTING, **ROWS[row]), HParams(learning_rate=5e-4, critic_learning_rate=5e-4),
                      list(range(args.seeds)))
        curves = np.array([[np.nan if v is None else v for v in it] for it in r["mean_return"]])  # [iters, seeds]
        windows = "; ".join(" / ".join(f"{np.nanmean(curves[a:b, s]):.0f}" for a, b in ((0, 10), (40, 50), (90, 100)))
                            for s in range(curves.shape[1]))
        last = " / ".join(f"{np.nanmean(curves[-5:, s]):.0f}" for s in range(curves.shape[1]))
        print(f"| {row} | {windows} | {last} | {r['run_s']:.0f} s + {r['compile_s']:.0f} s compile |", flush=True)


if __name__ == "__main__":
    main()
