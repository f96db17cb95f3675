"""Named settings: a preset fixes some Config / HParams fields; command-line flags still override them.

`python -m ppocma_jax` with neither --preset nor --env runs the "default" preset, the project's default job.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # The original's default task. Gaussian exploration with one decision per simulator step reaches the goal in
    # about 2% of random episodes (15% with the original's action repeat 2, 45% with 4, measured with
    # N(0, 1) actions), and without ever seeing the goal every policy-gradient method settles on "do nothing".
    # Holding each action for 4 steps and letting 4 envs play whole episodes per iteration solves it in ~50k steps.
    "default": dict(env="gymnax/MountainCarContinuous-v0", mode="PPO-CMA-m", action_repeat=4, n_envs=4,
                    iter_steps=4000, max_steps=200_000),
    "pendulum": dict(env="gymnax/Pendulum-v1", mode="PPO-CMA-m", max_steps=500_000),
    "cartpole-ppo": dict(env="gymnax/CartPole-v1", mode="PPO", max_steps=300_000),
}
DEFAULT_PRESET = "default"


def preset_names() -> list[str]:
    return list(PRESETS)
