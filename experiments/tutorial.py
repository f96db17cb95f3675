"""The original PPO-CMA Tutorial.py (algorithm.md §7) for this package's Agent: a plain Python loop around a simulator.

    python experiments/tutorial.py                         # MountainCarContinuous-v0, 1000 decisions per update
    python experiments/tutorial.py --env Pendulum-v1 --action-repeat 1 --iter-steps 4000 --max-steps 200000

Replace the gymnasium env with your own simulator: the Agent only sees observations, actions, rewards and the
terminated / truncated flags. As in the original, N (iter_steps, decisions per update) is the main knob: 1000
here (the original used 2000 simulator steps), 8k for simple locomotion, 32k-64k for 3-D humanoids. One change from the original loop: MountainCar's reward for
reaching the goal is rarely found by Gaussian exploration at one decision per simulator step (see the README's
default preset), so the loop holds each action for --action-repeat simulator steps (the original Run.py used 2).
"""

from __future__ import annotations

import argparse
import math
import time

import gymnasium as gym
import numpy as np

from ppocma_jax import Agent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="MountainCarContinuous-v0", help="a gymnasium id with Box actions")
    parser.add_argument("--max-steps", type=int, default=200_000, help="simulator steps in total")
    parser.add_argument("--iter-steps", type=int, default=1000, help="N: decisions memorised per update")
    parser.add_argument("--action-repeat", type=int, default=4, help="simulator steps per decision")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    env = gym.make(args.env)  # <- replace with your own simulator
    agent = Agent(state_dim=env.observation_space.shape[0], action_dim=env.action_space.shape[0],
                  action_min=env.action_space.low, action_max=env.action_space.high, seed=args.seed,
                  iter_steps=args.iter_steps)

    obs, _ = env.reset(seed=args.seed)
    total_steps, first, t0 = 0, None, time.perf_counter()
    while total_steps < args.max_steps:
        action = agent.act(obs)
        reward, terminated, truncated = 0.0, False, False
        for _ in range(args.action_repeat):  # hold the action, sum the rewards, stop when the episode ends
            next_obs, r, terminated, truncated, _ = env.step(action)
            reward += float(r)
            total_steps += 1
            if terminated or truncated:
                break
        agent.memorize(obs, action, reward, next_obs, terminated, truncated)
        obs = env.reset()[0] if (terminated or truncated) else next_obs
        if agent.ready:  # iter_steps decisions memorised
            mean_return = agent.update_with_memorized()  # NaN when no episode finished since the last update
            first = mean_return if first is None or math.isnan(first) else first
            print(f"steps {total_steps:>8,}  mean return {mean_return:9.2f}  policy std "
                  f"{agent.last_metrics['policy_std']:.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)

    print(f"done: {total_steps:,} simulator steps; first iteration's return {first:.2f}; deterministic policy "
          f"{evaluate(agent, args.env, args.action_repeat, args.seed + 1):.2f} (mean of 5 episodes)")


def evaluate(agent: Agent, env_id: str, action_repeat: int, seed: int, episodes: int = 5) -> float:
    """Mean return of the mean-action policy over a few fresh episodes."""
    env = gym.make(env_id)
    totals = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            action = agent.act(obs, deterministic=True)
            for _ in range(action_repeat):
                obs, r, terminated, truncated, _ = env.step(action)
                total += float(r)
                done = terminated or truncated
                if done:
                    break
        totals.append(total)
    return float(np.mean(totals))


if __name__ == "__main__":
    main()
