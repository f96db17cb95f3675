"""The original's observation scaler (utils.Scaler, spec §5), as a pure state update.

It divides observations by 2 x their running root-mean-square (the raw second moment, not the variance: no offset
is subtracted), so a feature at +-2 RMS maps to +-1. Every update call has equal weight regardless of sample count,
and the scale only ever shrinks (it starts at 1 and is never amplified), which keeps the inputs of the policy
stable across iterations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

SCALER_EPSILON = 1e-3


@struct.dataclass
class ScalerState:
    count: jax.Array  # int32: number of updates so far (0: the policy has never been trained)
    mean_sq: jax.Array  # [D] running mean of x^2 over update calls
    mean: jax.Array  # [D] running mean of x (kept for reference; the original uses no offset)
    scale: jax.Array  # [D] multiplier applied to observations


def scaler_init(obs_dim: int) -> ScalerState:
    zeros = jnp.zeros((obs_dim,), jnp.float32)
    return ScalerState(jnp.zeros((), jnp.int32), zeros, zeros, jnp.ones((obs_dim,), jnp.float32))


def scaler_update(state: ScalerState, obs: jax.Array) -> ScalerState:
    """Update with all observations of one iteration, obs: [..., D]."""
    x = obs.reshape(-1, obs.shape[-1])
    count = state.count + 1
    w = 1.0 / count.astype(jnp.float32)
    mean_sq = (1 - w) * state.mean_sq + w * jnp.mean(jnp.square(x), axis=0)
    mean = (1 - w) * state.mean + w * jnp.mean(x, axis=0)
    var = jnp.maximum(mean_sq, 0.0)  # no offset: the second moment, as the original
    scale = jnp.minimum(state.scale, 1.0 / (2.0 * jnp.sqrt(var) + SCALER_EPSILON))
    return ScalerState(count, mean_sq, mean, scale)


def scaler_apply(state: ScalerState, obs: jax.Array) -> jax.Array:
    return obs * state.scale
