"""Throughput: our training steps/s against the env's random-action ceiling, in one process.

    python experiments/bench_throughput.py --env gymnax/Pendulum-v1 --n-envs 16 64 256
    python experiments/bench_throughput.py --env brax/hopper --n-envs 40 200 --iter-steps 8000 --iterations 3

For each n_envs it measures, with compile time printed separately from run time:
  (a) random-action env steps/s through our env layer (jit + vmap + lax.scan): the ceiling;
  (b) training env steps/s of PPO-CMA-m and PPO with the same rollout shape (iter_steps = n_envs x --rollout-len);
  (c) how one iteration's time splits between the rollout and the update.
A table is printed and the numbers are written as JSON (--json), rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import time

import jax

from ppocma_jax import Config, HParams
from ppocma_jax.rollout import rollout
from ppocma_jax.train import Trainer

from paper_runs import config_overrides  # noqa: E402  (experiments/ is on the path of a script run from it)


def timed(fn, *args, repeats: int = 1):
    """(compile seconds, best run seconds, output, compiled function) of jax.jit(fn)(*args)."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = compiled(*args)
        jax.block_until_ready(out)
        best = min(best, time.perf_counter() - t0)
    return compile_s, best, out, compiled


def random_ceiling(trainer: Trainer, n_envs: int, length: int) -> tuple[float, float]:
    env = trainer.env
    spec = env.spec

    def run(key):
        state, _ = jax.vmap(env.reset)(jax.random.split(key, n_envs))

        def step(state, k):
            k_act, k_env = jax.random.split(k)
            if spec.discrete:
                action = jax.random.randint(k_act, (n_envs,), 0, spec.action_dim)
            else:
                low, high = spec.low_high()
                action = jax.random.uniform(k_act, (n_envs, spec.action_dim), minval=low, maxval=high)
            state, result = jax.vmap(env.step)(jax.random.split(k_env, n_envs), state, action)
            return state, result.reward

        return jax.lax.scan(step, state, jax.random.split(key, length))[1].sum()

    compile_s, run_s, _, _ = timed(run, jax.random.PRNGKey(0), repeats=3)
    return n_envs * length * trainer.config.action_repeat / run_s, compile_s


def training(config: Config, iterations: int) -> dict:
    trainer = Trainer.build(config)
    hp = HParams().as_arrays()
    state = jax.jit(trainer.init_state)(jax.random.PRNGKey(0), hp)
    compile_s, _, (state, _), step = timed(trainer.iteration, state, hp)  # compile + one warm-up iteration
    t0 = time.perf_counter()
    for _ in range(iterations):
        state, metrics = step(state, hp)
    jax.block_until_ready(metrics)
    per_iteration = (time.perf_counter() - t0) / iterations

    def rollout_only(state):
        return rollout(trainer.env, trainer.policy, state.policy_params, state.scaler, state.env, state.key,
                       config.rollout_len, hp)[1].reward.sum()

    _, rollout_s, _, _ = timed(rollout_only, state, repeats=3)
    return {"steps_per_s": config.iter_steps / per_iteration, "compile_s": compile_s,
            "iteration_s": per_iteration, "rollout_share": rollout_s / per_iteration}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="gymnax/Pendulum-v1")
    parser.add_argument("--n-envs", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--rollout-len", type=int, default=125, help="decisions per env per iteration")
    parser.add_argument("--iter-steps", type=int, default=None,
                        help="fix N instead: rollout length = N / n_envs for every n_envs (e.g. the paper's 8000)")
    parser.add_argument("--iterations", type=int, default=5, help="timed training iterations per setting")
    parser.add_argument("--modes", nargs="+", default=["PPO-CMA-m", "PPO"])
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any other Config field, e.g. --set policy_init=analytic (repeatable)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    try:
        extra = config_overrides(args.set)
    except ValueError as exc:
        parser.error(str(exc))

    results = []
    header = (f"{'n_envs':>6} {'ceiling steps/s':>16} {'(compile)':>10}  " +
              "  ".join(f"{m + ' steps/s':>18} {'ratio':>6} {'rollout%':>8} {'(compile)':>10}" for m in args.modes))
    length = f"N = {args.iter_steps} steps per iteration" if args.iter_steps else \
        f"rollout length {args.rollout_len} decisions"
    print(f"{args.env}, {length}, {jax.device_count()} "
          f"{jax.default_backend()} device(s)")
    print(header)
    for n_envs in args.n_envs:
        rollout_len = args.iter_steps // n_envs if args.iter_steps else args.rollout_len
        base = Config(env=args.env, n_envs=n_envs, iter_steps=n_envs * rollout_len,
                      max_steps=n_envs * rollout_len, eval_every=0, **extra)
        ceiling, ceiling_compile = random_ceiling(Trainer.build(base), n_envs, rollout_len)
        row = {"n_envs": n_envs, "rollout_len": rollout_len, "ceiling_steps_per_s": ceiling,
               "ceiling_compile_s": ceiling_compile}
        cells = []
        for mode in args.modes:
            r = training(base.replace(mode=mode), args.iterations)
            row[mode] = r
            cells.append(f"{r['steps_per_s']:>18,.0f} {r['steps_per_s'] / ceiling:>6.1%} "
                         f"{r['rollout_share']:>8.0%} {r['compile_s']:>9.1f}s")
        results.append(row)
        print(f"{n_envs:>6} {ceiling:>16,.0f} {ceiling_compile:>9.1f}s  " + "  ".join(cells), flush=True)
        if args.json:  # after every row: a run stopped part-way (accelerator_check.py's time limits) keeps its rows
            with open(args.json, "w") as fh:
                json.dump({"env": args.env, "rollout_len": args.rollout_len, "backend": jax.default_backend(),
                           "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
