"""Benchmark of the host-side Agent: act latency, update time, env steps/s on gymnasium envs.

    python experiments/bench_agent.py                               # Pendulum-v1 and Hopper-v5, default Agent
    python experiments/bench_agent.py --envs Pendulum-v1 --iterations 3 --out bench_agent.json

Per env it reports, compile time apart:
- act latency (median over calls, deterministic=False) at batch 1 and batch 64;
- update time per iteration (median over iterations, iter_steps transitions each);
- env steps/s of the whole loop (act + gymnasium SyncVectorEnv step + memorize + updates) and of the
  collection alone (no updates), with n_envs simulators;
- the random-action ceiling: the same SyncVectorEnv stepped with uniform actions and no agent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

from ppocma_jax import Agent
from ppocma_jax.envs.gymnasium_env import gymnasium_spec, make_vector_env
from ppocma_jax.host_train import collect


def act_latency_us(agent: Agent, obs_dim: int, batch: int, calls: int) -> float:
    """Median wall time of one act() call in microseconds (compiled before timing)."""
    obs = np.zeros(obs_dim, np.float32) if batch == 1 else np.zeros((batch, obs_dim), np.float32)
    agent.act(obs)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        agent.act(obs)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def random_ceiling(env_id: str, n_envs: int, steps: int) -> float:
    """Env steps/s of the vector env with uniform random actions: the simulator's own cost."""
    vec = make_vector_env(env_id, n_envs)
    vec.reset(seed=0)
    vec.action_space.seed(0)
    t = time.perf_counter()
    for _ in range(steps):
        vec.step(vec.action_space.sample())
    elapsed = time.perf_counter() - t
    vec.close()
    return steps * n_envs / elapsed


def bench_env(env_id: str, n_envs: int, iter_steps: int, iterations: int, act_calls: int) -> dict:
    spec = gymnasium_spec(env_id)
    t0 = time.perf_counter()
    agent = Agent(spec.obs_dim, spec.action_dim, spec.action_low, spec.action_high, n_envs=n_envs,
                  iter_steps=iter_steps)
    init_s = time.perf_counter() - t0  # includes the policy pre-training (2000 Adam steps), compile included
    compile_s = agent.warm_up(eval_batch=64)  # act at n_envs and 64, and the update
    latency = {f"act_us_batch{b}": round(act_latency_us(agent, spec.obs_dim, b, act_calls), 1) for b in (1, 64)}

    vec = make_vector_env(env_id, n_envs)
    obs, _ = vec.reset(seed=0)
    collect_s, update_s = [], []
    for _ in range(iterations):
        t = time.perf_counter()
        obs = collect(agent, vec, obs, agent.config.rollout_len)
        collect_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        agent.update_with_memorized()
        update_s.append(time.perf_counter() - t)
    vec.close()
    loop_s = sum(collect_s) + sum(update_s)
    steps = iterations * agent.config.iter_steps
    return {
        "env": f"gymnasium/{env_id}", "obs_dim": spec.obs_dim, "action_dim": spec.action_dim, "n_envs": n_envs,
        "iter_steps": iter_steps, "iterations": iterations,
        "init_s": round(init_s, 2), "compile_s": round(compile_s, 2), **latency,
        "update_s_median": round(statistics.median(update_s), 3),
        "collect_s_median": round(statistics.median(collect_s), 3),
        "steps_per_s_training": round(steps / loop_s, 1),
        "steps_per_s_collect_only": round(steps / sum(collect_s), 1),
        "steps_per_s_random_ceiling": round(random_ceiling(env_id, n_envs, max(200, steps // (4 * n_envs))), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["Pendulum-v1", "Hopper-v5"])
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--iter-steps", type=int, default=4000)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--act-calls", type=int, default=500)
    parser.add_argument("--out", default="bench_agent.json")
    args = parser.parse_args()

    results = []
    for env_id in args.envs:
        row = bench_env(env_id, args.n_envs, args.iter_steps, args.iterations, args.act_calls)
        results.append(row)
        print(f"{row['env']}: compile {row['compile_s']:.1f} s (+ init {row['init_s']:.1f} s); act "
              f"{row['act_us_batch1']:.0f} us at batch 1, {row['act_us_batch64']:.0f} us at batch 64; update "
              f"{row['update_s_median']:.2f} s per iteration ({row['iter_steps']} transitions); "
              f"{row['steps_per_s_training']:,.0f} env steps/s training, {row['steps_per_s_collect_only']:,.0f} "
              f"collecting, {row['steps_per_s_random_ceiling']:,.0f} random-action ceiling ({row['n_envs']} envs)",
              flush=True)
    document = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "load_avg_1m": round(os.getloadavg()[0], 2)},
                "results": results}
    with open(args.out, "w") as fh:
        json.dump(document, fh, indent=2)
        fh.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
