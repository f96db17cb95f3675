"""Generalised advantage estimation with termination and truncation kept apart (algorithm.md §3.3, D1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def compute_gae(rewards: jax.Array, values: jax.Array, next_values: jax.Array, terminated: jax.Array,
                truncated: jax.Array, gamma: jax.Array | float, lam: jax.Array | float
                ) -> tuple[jax.Array, jax.Array]:
    """GAE over a time-major rollout.

    Args (all [T, ...], time first; any trailing batch shape):
      rewards: r_t.
      values: V(s_t).
      next_values: V of the true successor of s_t: the final observation where the episode ended, and the next
        state at the rollout cut, so the last step of the rollout bootstraps.
      terminated: a true end after step t: V(successor) is not used (0), even if it is not finite.
      truncated: a time limit after step t: V(successor) is used, but the lambda-chain stops.
      gamma, lam: discount and GAE lambda (floats or 0-d arrays; vmappable).

    Returns:
      advantages A_t = delta_t + gamma lam (1 - done_t) A_{t+1}, with
        delta_t = r_t + gamma (1 - terminated_t) next_values_t - values_t and A_T = 0;
      targets = advantages + values (lambda-returns, the critic's regression targets).
    """
    not_done = 1.0 - jnp.logical_or(terminated, truncated).astype(rewards.dtype)
    # A select, not a multiplication by 0: a terminated step's successor may be non-finite (a simulator that
    # blew up on its last step), and 0 * inf = NaN would otherwise poison every advantage through the scan.
    successor_values = jnp.where(terminated, jnp.zeros_like(next_values), next_values)
    deltas = rewards + gamma * successor_values - values
    decay = gamma * lam * not_done

    def backward(carry, inputs):
        delta, dec = inputs
        advantage = delta + dec * carry
        return advantage, advantage

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(deltas[0]), (deltas, decay), reverse=True)
    return advantages, advantages + values


def monte_carlo_returns(rewards: jax.Array, episode_end: jax.Array, bootstrap: jax.Array,
                        gamma: jax.Array | float) -> jax.Array:
    """Discounted returns inside each episode, cut without a bootstrap at every episode end (the original's critic
    targets, algorithm.md §3.3, D2).

    Args: rewards, episode_end: [T, ...] time-major (episode_end: termination or time limit after step t);
      bootstrap: [...] the value that continues the last step when it is no episode end (the rollout cut);
      gamma: discount.
    Returns G [T, ...]: G_t = r_t + gamma * (0 if episode_end_t else G_{t+1}), with G_T = bootstrap.
    """
    def backward(carry, inputs):
        reward, end = inputs
        ret = reward + gamma * jnp.where(end, jnp.zeros_like(carry), carry)
        return ret, ret

    _, returns = jax.lax.scan(backward, bootstrap, (rewards, episode_end), reverse=True)
    return returns
