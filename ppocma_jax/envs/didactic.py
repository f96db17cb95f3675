"""The paper's didactic toy (algorithm.md §8): a 2-D quadratic bandit, `didactic/quadratic`.

Every episode is one decision: the agent picks a = (a1, a2) in [-2, 2]^2 and receives r(a) = -(a1^2 + a2^2); the
optimum is the origin. There is no real state: the original fed a constant all-zero observation of dimension 1 so
that the full policy networks are still used (and the observation scaler keeps scale 1), and so do we. Run it with
gamma = 0: the trainer then zeroes the critic's time feature and GAE reduces to A = r - V.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .base import EnvSpec, StepResult

ACTION_BOUND = 2.0  # the original's box is [-2, 2] per dimension
OBS_DIM = 1  # the dummy state's dimension
ACTION_DIM = 2  # two dimensions, so the policy's Gaussian can be drawn as an ellipse

DIDACTIC_ENVS: tuple[str, ...] = ("quadratic",)


def quadratic_reward(action: jax.Array) -> jax.Array:
    """r(a) = -||a||^2 over the last axis (algorithm.md §8): the negated squared distance to the optimum at the origin."""
    return -jnp.sum(jnp.square(action), axis=-1)


class QuadraticBandit:
    """One-step episodes with a constant zero observation; every step terminates (no bootstrap)."""

    spec = EnvSpec("didactic/quadratic", OBS_DIM, False, ACTION_DIM, (-ACTION_BOUND,) * ACTION_DIM,
                   (ACTION_BOUND,) * ACTION_DIM, 1)

    def reset(self, key: jax.Array) -> tuple[Any, jax.Array]:
        # The state carries nothing; a 0-d array keeps it a valid (vmappable) pytree.
        return jnp.zeros((), jnp.float32), jnp.zeros((OBS_DIM,), jnp.float32)

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, StepResult]:
        obs = jnp.zeros((OBS_DIM,), jnp.float32)
        return state, StepResult(
            obs=obs,
            reward=quadratic_reward(jnp.asarray(action, jnp.float32)).reshape(()),
            terminated=jnp.ones((), bool),
            truncated=jnp.zeros((), bool),
            final_obs=obs,
        )


def make_didactic_env(name: str) -> QuadraticBandit:
    """`quadratic` -> the bandit; anything else -> ValueError naming the valid envs."""
    if name not in DIDACTIC_ENVS:
        raise ValueError(f"unknown didactic env {name!r}; valid: {', '.join(DIDACTIC_ENVS)}")
    return QuadraticBandit()
