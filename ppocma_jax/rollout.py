"""Fixed-length rollouts of n_envs vmapped environments inside the compiled loop."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from .config import HParams
from .envs.base import Env
from .normalize import ScalerState, scaler_apply
from .policy import Policy, PolicyParams


@struct.dataclass
class EnvCarry:
    """Per-env state carried across iterations ([n] leading axis everywhere)."""

    state: Any  # the env's own state pytree
    obs: jax.Array  # [n, D] observation to act on
    time: jax.Array  # [n] int32 decision index inside the current episode (the critic's time feature)
    ep_return: jax.Array  # [n] undiscounted return of the current episode so far
    ep_length: jax.Array  # [n] int32 decisions of the current episode so far


@struct.dataclass
class Transition:
    """One rollout, time-major: [T, n, ...]."""

    obs: jax.Array  # [T, n, D] raw observation acted on
    action: jax.Array  # [T, n, d] float32 clipped action, or [T, n] int32 for discrete envs
    reward: jax.Array  # [T, n]
    terminated: jax.Array  # [T, n] bool
    truncated: jax.Array  # [T, n] bool
    next_obs: jax.Array  # [T, n, D] true successor (final observation where the episode ended)
    time: jax.Array  # [T, n] int32 decision index of obs in its episode


@struct.dataclass
class RolloutStats:
    """Episodes finished during a rollout (sums, so that 'none finished' stays distinguishable from 0)."""

    return_sum: jax.Array
    length_sum: jax.Array
    episodes: jax.Array  # int32
    std_sum: jax.Array  # sum over steps of the batch-and-dimension mean action std used while acting


def env_reset(env: Env, key: jax.Array, n_envs: int) -> EnvCarry:
    state, obs = jax.vmap(env.reset)(jax.random.split(key, n_envs))
    zeros_i = jnp.zeros((n_envs,), jnp.int32)
    return EnvCarry(state, obs, zeros_i, jnp.zeros((n_envs,), jnp.float32), zeros_i)


def rollout(env: Env, policy: Policy, params: PolicyParams, scaler: ScalerState, carry: EnvCarry, key: jax.Array,
            length: int, hp: HParams) -> tuple[EnvCarry, Transition, RolloutStats]:
    """Step all envs `length` decisions with the current policy.

    Until the scaler has been updated once (the first iteration) continuous actions come from the initial Gaussian
    N(mean0, std0^2), as in the original (algorithm.md §2.4).
    """
    n = carry.obs.shape[0]
    first_iteration = scaler.count == 0

    def step(inner, step_key):
        carry, stats = inner
        key_act, key_env = jax.random.split(step_key)
        x = scaler_apply(scaler, carry.obs)
        action, std = policy.sample(key_act, params, x, hp)
        if not policy.discrete:
            init_action, init_std = policy.sample_initial(key_act, (n,))
            action = jnp.where(first_iteration, init_action, action)
            std = jnp.where(first_iteration, init_std, std)
        state, result = jax.vmap(env.step)(jax.random.split(key_env, n), carry.state, action)
        done = result.terminated | result.truncated
        ep_return = carry.ep_return + result.reward
        ep_length = carry.ep_length + 1
        stats = RolloutStats(
            return_sum=stats.return_sum + jnp.sum(jnp.where(done, ep_return, 0.0)),
            length_sum=stats.length_sum + jnp.sum(jnp.where(done, ep_length, 0)).astype(jnp.float32),
            episodes=stats.episodes + jnp.sum(done).astype(jnp.int32),
            std_sum=stats.std_sum + jnp.mean(std),
        )
        transition = Transition(carry.obs, action, result.reward, result.terminated, result.truncated,
                                result.final_obs, carry.time)
        carry = EnvCarry(
            state=state,
            obs=result.obs,
            time=jnp.where(done, 0, carry.time + 1),
            ep_return=jnp.where(done, 0.0, ep_return),
            ep_length=jnp.where(done, 0, ep_length),
        )
        return (carry, stats), transition

    zero = jnp.zeros((), jnp.float32)
    stats0 = RolloutStats(zero, zero, jnp.zeros((), jnp.int32), zero)
    (carry, stats), transitions = jax.lax.scan(step, (carry, stats0), jax.random.split(key, length))
    return carry, transitions, stats
