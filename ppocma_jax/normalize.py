"""Observation normalisation as a pure state update: the original's scaler (default) or running mean / variance.

"scaler" (utils.Scaler, algorithm.md §5): divide by 2 x the running root-mean-square (the raw second moment, not the
variance: no offset is subtracted), so a feature at +-2 RMS maps to +-1. Every update call has equal weight
regardless of sample count, and the scale only ever shrinks (it starts at 1 and is never amplified), which keeps the
policy's inputs stable across iterations.

"welford": the usual running statistics of other PPO trainers (Brax, PureJaxRL): subtract the mean and divide by
the standard deviation over every observation seen so far, merged per iteration with the parallel form of Welford's
algorithm (Chan et al.), which stays accurate in float32 where a running sum of squares would cancel. Its inputs move
as the statistics do, so the policy sees a slowly drifting input scale; useful where features are far from zero
(the original scaler keeps any offset).

"none": observations pass unchanged (the Keras PPO example).

The state lives in the train state (checkpointed and resumed with it); `scaler_apply` is the same for both methods:
(obs - offset) * scale.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from .config import OBS_NORMS

SCALER_EPSILON = 1e-3
WELFORD_EPSILON = 1e-8


@struct.dataclass
class ScalerState:
    count: jax.Array  # int32: number of updates so far (0: the policy has never been trained)
    mean_sq: jax.Array  # [D] "scaler": running mean of x^2 over update calls
    mean: jax.Array  # [D] running mean of x (per update call for "scaler", per sample for "welford")
    m2: jax.Array  # [D] "welford": sum of squared deviations from the mean over all samples
    samples: jax.Array  # float32: "welford": observations seen (float: int32 would overflow on long runs)
    offset: jax.Array  # [D] subtracted before scaling (0 for "scaler")
    scale: jax.Array  # [D] multiplier applied after the offset


def scaler_init(obs_dim: int) -> ScalerState:
    zeros = jnp.zeros((obs_dim,), jnp.float32)
    return ScalerState(jnp.zeros((), jnp.int32), zeros, zeros, zeros, jnp.zeros((), jnp.float32), zeros,
                       jnp.ones((obs_dim,), jnp.float32))


def scaler_update(state: ScalerState, obs: jax.Array, method: str = "scaler") -> ScalerState:
    """Update with all observations of one iteration, obs: [..., D]."""
    if method == "welford":
        return _welford_update(state, obs)
    if method == "none":  # identity; the count still marks that the policy has been trained
        return state.replace(count=state.count + 1)
    if method != "scaler":
        raise ValueError(f"unknown observation normalisation {method!r}; valid: {', '.join(OBS_NORMS)}")
    x = obs.reshape(-1, obs.shape[-1])
    count = state.count + 1
    w = 1.0 / count.astype(jnp.float32)
    mean_sq = (1 - w) * state.mean_sq + w * jnp.mean(jnp.square(x), axis=0)
    mean = (1 - w) * state.mean + w * jnp.mean(x, axis=0)
    var = jnp.maximum(mean_sq, 0.0)  # no offset: the second moment, as the original
    scale = jnp.minimum(state.scale, 1.0 / (2.0 * jnp.sqrt(var) + SCALER_EPSILON))
    return state.replace(count=count, mean_sq=mean_sq, mean=mean, scale=scale)


def _welford_update(state: ScalerState, obs: jax.Array) -> ScalerState:
    """Merge the batch's (n, mean, M2) into the running ones: Chan et al.'s parallel variance update."""
    x = obs.reshape(-1, obs.shape[-1])
    n_b = jnp.float32(x.shape[0])
    mean_b = jnp.mean(x, axis=0)
    m2_b = jnp.sum(jnp.square(x - mean_b), axis=0)
    n_a = state.samples
    n = n_a + n_b
    delta = mean_b - state.mean
    mean = state.mean + delta * (n_b / n)
    m2 = state.m2 + m2_b + jnp.square(delta) * (n_a * n_b / n)
    var = m2 / n
    return state.replace(count=state.count + 1, mean=mean, m2=m2, samples=n, offset=mean,
                         scale=jax.lax.rsqrt(var + WELFORD_EPSILON))


def scaler_apply(state: ScalerState, obs: jax.Array) -> jax.Array:
    return (obs - state.offset) * state.scale
