"""Time the update half of an iteration (`Trainer.learn`) per mode on one synthetic batch, without the env.

    python experiments/profile_update.py --env brax/hopper --iter-steps 8000 --n-envs 64

The batch has the env's shapes (random observations, in-box actions, rewards, 1% terminations), so the
timing is the learner's alone: the critic pass, the policy passes and the bookkeeping around them. Compile time is
printed separately; the run time is the best of --repeats calls of the compiled function, as wall time and as this
process's CPU time (all threads), which stays comparable when other jobs share the machine.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from ppocma_jax import Config, HParams
from ppocma_jax.rollout import Transition
from ppocma_jax.train import Trainer


def synthetic_batch(trainer: Trainer, key: jax.Array) -> Transition:
    cfg, spec = trainer.config, trainer.env.spec
    t, n = cfg.rollout_len, cfg.n_envs
    k_obs, k_next, k_act, k_rew, k_term = jax.random.split(key, 5)
    low, high = spec.low_high()
    obs = jax.random.normal(k_obs, (t, n, spec.obs_dim))
    return Transition(
        obs=obs,
        action=jax.random.uniform(k_act, (t, n, spec.action_dim), minval=low, maxval=high),
        reward=jax.random.normal(k_rew, (t, n)),
        terminated=jax.random.uniform(k_term, (t, n)) < 0.01,
        truncated=jnp.zeros((t, n), bool),
        next_obs=jax.random.normal(k_next, (t, n, spec.obs_dim)),
        time=jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32)[:, None], (t, n)),
    )


def time_learn(config: Config, repeats: int) -> dict:
    trainer = Trainer.build(config)
    hp = HParams().as_arrays()
    state = jax.jit(trainer.init_state)(jax.random.PRNGKey(0), hp)
    traj = synthetic_batch(trainer, jax.random.PRNGKey(1))
    keys = jax.random.split(jax.random.PRNGKey(2), 2)

    def learn(state, traj):
        return trainer.learn(state, traj, keys[0], keys[1], hp)

    t0 = time.perf_counter()
    compiled = jax.jit(learn).lower(state, traj).compile()
    compile_s = time.perf_counter() - t0
    state, _ = compiled(state, traj)  # a second state: iteration > 0 (no bias init branch taken)
    jax.block_until_ready(state)
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(state, traj))
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return {"compile_s": compile_s, "learn_s": best, "learn_cpu_s": best_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="brax/hopper")
    parser.add_argument("--iter-steps", type=int, default=8000)
    parser.add_argument("--n-envs", type=int, default=64)
    parser.add_argument("--modes", nargs="+", default=["PPO-CMA-m", "PPO"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = {}
    for mode in args.modes:
        cfg = Config(env=args.env, mode=mode, iter_steps=args.iter_steps, n_envs=args.n_envs,
                     max_steps=args.iter_steps, eval_every=0)
        rows[mode] = time_learn(cfg, args.repeats)
        print(f"{mode:>10}: learn {rows[mode]['learn_s'] * 1e3:7.1f} ms wall, {rows[mode]['learn_cpu_s'] * 1e3:7.1f} ms CPU   "
              f"(compile {rows[mode]['compile_s']:.1f} s)",
              flush=True)
    if "PPO" in rows and "PPO-CMA-m" in rows:
        print(f"PPO-CMA-m / PPO update time: {rows['PPO-CMA-m']['learn_s'] / rows['PPO']['learn_s']:.2f}x, "
              f"CPU time: {rows['PPO-CMA-m']['learn_cpu_s'] / rows['PPO']['learn_cpu_s']:.2f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"env": args.env, "iter_steps": args.iter_steps, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
