"""Named settings: a preset fixes some Config / HParams fields; command-line flags still override them.

`python -m ppocma_jax` with neither --preset nor --env runs the "default" preset, the project's default job.
A preset may carry `per_mode` settings that apply when the run's mode (the preset's own or --mode) matches: the
paper tuned PPO-CMA-m and PPO separately (algorithm.md §9.1), so `--preset paper-locomotion --mode PPO` gets PPO's numbers.
"""

from __future__ import annotations

from typing import Any

# The paper's common settings (algorithm.md §9.1-9.2): Run.py's action repeat 2, lr 5e-4, 100 updates per pass, no entropy.
_PAPER = dict(action_repeat=2, learning_rate=5e-4, n_updates=100, entropy_weight=0.0, history_buffer_size=9)

PRESETS: dict[str, dict[str, Any]] = {
    # The original's default task. Gaussian exploration with one decision per simulator step reaches the goal in
    # about 2% of random episodes (15% with the original's action repeat 2, 45% with 4, measured with
    # N(0, 1) actions), and without ever seeing the goal every policy-gradient method settles on "do nothing".
    # Holding each action for 4 steps and letting 4 envs play whole episodes per iteration solves it in ~50k steps.
    "default": dict(env="gymnax/MountainCarContinuous-v0", mode="PPO-CMA-m", action_repeat=4, n_envs=4,
                    iter_steps=4000, max_steps=200_000),
    "pendulum": dict(env="gymnax/Pendulum-v1", mode="PPO-CMA-m", max_steps=500_000),
    "cartpole-ppo": dict(env="gymnax/CartPole-v1", mode="PPO", max_steps=300_000),
    # The paper's locomotion settings (algorithm.md §9.1) on Brax, 1M simulator steps. PPO-CMA-m: N=8000, M=512, H=9;
    # PPO: N=2000, M=128, eps=0.005. 40 envs x 100 decisions x repeat 2 = 8000 (40 x 25 x 2 = 2000 for PPO).
    "paper-locomotion": dict(env="brax/hopper", mode="PPO-CMA-m", max_steps=1_000_000, iter_steps=8000, n_envs=40,
                             batch_size=512, **_PAPER,
                             per_mode={"PPO": dict(iter_steps=2000, batch_size=128, ppo_epsilon=0.005)}),
    # The paper's humanoid settings (algorithm.md §9.2): N=32000 for both, 10M steps; PPO M=128, eps=0.0025.
    # 128 envs x 125 decisions x repeat 2 = 32000.
    "paper-humanoid": dict(env="brax/humanoid", mode="PPO-CMA-m", max_steps=10_000_000, iter_steps=32000,
                           n_envs=128, batch_size=512, **_PAPER,
                           per_mode={"PPO": dict(batch_size=128, ppo_epsilon=0.0025)}),
    # The original Run.py's defaults with the original's value estimation (algorithm.md §10 D1, D2, D4): Monte-Carlo
    # critic targets, every episode end bootstrapped from time feature 0, TF1's Adam epsilon, std-only advantages
    # (so --mode PPO is the original's PPO variant). 20 envs x 100 decisions x repeat 2 = 4000 steps: exactly 20
    # whole 200-step episodes per iteration on Pendulum, as the original collected; on envs with longer episodes
    # the rollout cut bootstraps from the critic.
    "original": dict(mode="PPO-CMA-m", action_repeat=2, iter_steps=4000, n_envs=20, batch_size=2048,
                     history_buffer_size=9, learning_rate=5e-4, n_updates=100, max_steps=400_000,
                     value_targets="mc", episode_ends="original", adam_epsilon="tf1", adv_norm="std"),
    # The Keras "ppo_cartpole" example (algorithm.md §11): 30 epochs of 4000 steps from one env, separate 64x64 tanh
    # actor and critic with Glorot init, Adam 3e-4 / 1e-3, 80 full-batch policy steps with a KL early stop at
    # 1.5 x 0.01 and 80 full-batch MSE value steps on rewards-to-go, advantages from the values recorded while
    # acting, mean/std advantage normalisation, no observation normalisation, clip 0.2, gamma 0.99, lambda 0.97.
    "keras-cartpole": dict(env="gymnax/CartPole-v1", mode="PPO", max_steps=120_000, iter_steps=4000, n_envs=1,
                           hidden_layers=2, hidden_units=64, activation="tanh", dense_skips=False, init="glorot",
                           n_updates=80, full_batch=True, adv_norm="meanstd", obs_norm="none", critic_loss="mse",
                           value_targets="returns", advantage_critic="old", learning_rate=3e-4,
                           critic_learning_rate=1e-3, target_kl=0.01, ppo_epsilon=0.2, gamma=0.99, gae_lambda=0.97,
                           critic_time_scale=0.0, entropy_weight=0.0),
}
DEFAULT_PRESET = "default"


def preset_names() -> list[str]:
    return list(PRESETS)


def resolve_preset(name: str, mode: str | None = None) -> dict[str, Any]:
    """The preset's settings for `mode` (None: the preset's own mode), `per_mode` entries merged in."""
    preset = dict(PRESETS[name])
    per_mode = preset.pop("per_mode", {})
    mode = mode if mode is not None else preset.get("mode")
    if mode is not None:
        preset["mode"] = mode
    preset.update(per_mode.get(mode, {}))
    return preset
