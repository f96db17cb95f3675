"""Fixed-shape ring buffer of the last H iterations, for PPO-CMA's variance pass (algorithm.md §3.8, D4).

Each slot holds one iteration's raw observations, actions and normalised advantages. Every iteration has the same
number of samples, so the original's two-level draw (an iteration uniformly, then a sample inside it) equals a
uniform draw over the filled slots; unfilled slots (the first H-1 iterations) are never drawn.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class History:
    obs: jax.Array  # [H, n, D] raw observations (rescaled with the current scaler when drawn)
    actions: jax.Array  # [H, n, d]
    advantages: jax.Array  # [H, n]
    filled: jax.Array  # int32: number of slots holding data (<= H)
    next_slot: jax.Array  # int32: slot the next push writes


def history_init(size: int, n: int, obs_dim: int, action_dim: int) -> History:
    return History(
        obs=jnp.zeros((size, n, obs_dim), jnp.float32),
        actions=jnp.zeros((size, n, action_dim), jnp.float32),
        advantages=jnp.zeros((size, n), jnp.float32),
        filled=jnp.zeros((), jnp.int32),
        next_slot=jnp.zeros((), jnp.int32),
    )


def history_push(history: History, obs: jax.Array, actions: jax.Array, advantages: jax.Array) -> History:
    """Write one iteration (obs [n, D], actions [n, d], advantages [n]), overwriting the oldest when full."""
    size = history.obs.shape[0]
    slot = history.next_slot
    return History(
        obs=history.obs.at[slot].set(obs),
        actions=history.actions.at[slot].set(actions),
        advantages=history.advantages.at[slot].set(advantages),
        filled=jnp.minimum(history.filled + 1, size),
        next_slot=(slot + 1) % size,
    )


def history_sample(history: History, key: jax.Array, batch: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draw `batch` samples with replacement, uniformly over the filled slots -> (obs, actions, advantages)."""
    key_slot, key_idx = jax.random.split(key)
    n = history.obs.shape[1]
    slots = jax.random.randint(key_slot, (batch,), 0, jnp.maximum(history.filled, 1))
    idx = jax.random.randint(key_idx, (batch,), 0, n)
    return history.obs[slots, idx], history.actions[slots, idx], history.advantages[slots, idx]
