"""The Keras "ppo_cartpole" example's run (algorithm.md §11), with this trainer: the per-epoch table and the wall time.

    python experiments/keras_cartpole.py [--seed 0] [--json keras_cartpole.json]

It trains the `keras-cartpole` preset (30 epochs x 4000 steps from one CartPole-v1 env, 64x64 tanh actor and critic,
80 full-batch policy steps with the KL early stop, 80 full-batch value steps) and prints, as the example does,
"Epoch: k. Mean Return: R. Mean Length: L." per epoch. Differences from the example, on purpose: the return is the
mean over episodes that ended in the epoch (the example also counts the unfinished one at the epoch's end, which it
cuts by resetting the env), and the env is not reset at epoch boundaries (the cut is bootstrapped instead).
Compile time is printed apart from run time. For comparison, baselines.md measured the example itself on this
machine kind: 729 s for the 30 epochs (165 steps/s), first mean return of 500 at epoch 18.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import jax
import numpy as np

from ppocma_jax import Config, HParams, make_train
from ppocma_jax.config import hparams_fields
from ppocma_jax.presets import resolve_preset


def preset_config(seed: int) -> tuple[Config, HParams]:
    settings = resolve_preset("keras-cartpole")
    hp_names = {f.name for f in hparams_fields()}
    config = Config(**{k: v for k, v in settings.items() if k not in hp_names}, seed=seed)
    hparams = HParams(**{k: v for k, v in settings.items() if k in hp_names})
    return config, hparams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the per-epoch table and timings here")
    args = parser.parse_args()

    config, hparams = preset_config(args.seed)
    rows: list[dict] = []
    started: list[float] = []

    def on_epoch(metrics: dict) -> None:
        epoch = int(metrics["iteration"])
        ret, length = float(metrics["mean_return"]), float(metrics["mean_length"])
        elapsed = time.perf_counter() - started[0]
        rows.append({"epoch": epoch, "mean_return": ret, "mean_length": length, "seconds": elapsed})
        shown = "-" if math.isnan(ret) else f"{ret:.2f}"
        print(f" Epoch: {epoch}. Mean Return: {shown}. Mean Length: {length:.2f}.  ({elapsed:.1f} s)", flush=True)

    train = jax.jit(make_train(config, on_iteration=on_epoch))
    key = jax.random.PRNGKey(config.seed)
    t0 = time.perf_counter()
    compiled = train.lower(key, hparams.as_arrays()).compile()
    compile_s = time.perf_counter() - t0
    print(f"compiled in {compile_s:.1f} s; training {config.n_iterations} epochs x {config.iter_steps} steps")
    started.append(time.perf_counter())
    jax.block_until_ready(compiled(key, hparams.as_arrays()))
    run_s = time.perf_counter() - started[0]

    returns = np.array([r["mean_return"] for r in rows])
    first_500 = next((r["epoch"] for r in rows if r["mean_return"] >= 500.0), None)
    steps = config.n_iterations * config.iter_steps
    print(f"{steps:,} steps in {run_s:.1f} s ({steps / run_s:,.0f} steps/s) + {compile_s:.1f} s compile; "
          f"first epoch at 500: {first_500}; mean return of the last 5 epochs: {np.nanmean(returns[-5:]):.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"seed": args.seed, "compile_s": compile_s, "run_s": run_s, "first_epoch_at_500": first_500,
                       "epochs": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
