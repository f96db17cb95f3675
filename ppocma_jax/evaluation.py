"""Deterministic evaluation: the policy's mean action (arg-max for discrete actions) on separate env instances.

The training return includes exploration noise (for PPO-CMA, deliberately wide at times); this is the return of
the policy the run actually learned. Used by the compiled loop (`eval_return` on the iterations `eval_due` names:
inside `Trainer.run`, or as a program of its own between the CLI's chunks), by the gymnasium loop, and by
`python -m ppocma_jax.evaluate RUN_DIR`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .config import Config, HParams
from .envs.base import Env, EnvSpec
from .normalize import ScalerState, scaler_apply
from .policy import Policy, PolicyParams

DEFAULT_MAX_EPISODE_STEPS = 1000  # for envs without their own time limit


def eval_due(iteration: jax.Array | int, config: Config) -> jax.Array | bool:
    """Whether the iteration numbered `iteration` (1-based; a traced array or a host int) ends with an
    evaluation: every `eval_every` iterations and at the last one; never when eval_every is 0."""
    if config.eval_every == 0:
        return False
    return (iteration % config.eval_every == 0) | (iteration == config.n_iterations)


def episode_limit(env: Env | EnvSpec) -> int:
    """Decisions an evaluation episode may take: the env's own time limit, else DEFAULT_MAX_EPISODE_STEPS (the
    same cap in the compiled evaluation and in the host loop's, host_train.run_episodes)."""
    spec = env if isinstance(env, EnvSpec) else env.spec
    return int(spec.max_episode_steps or DEFAULT_MAX_EPISODE_STEPS)


def evaluate_policy(env: Env, policy: Policy, params: PolicyParams, scaler: ScalerState, key: jax.Array,
                    n_episodes: int, max_steps: int, hp: HParams, deterministic: bool = True) -> jax.Array:
    """Undiscounted returns [n_episodes] of one episode per fresh env instance (pure; jit-able).

    Each env plays until its first episode ends or `max_steps` decisions pass; later steps are masked out.
    """
    key_reset, key_run = jax.random.split(key)
    state, obs = jax.vmap(env.reset)(jax.random.split(key_reset, n_episodes))

    def step(carry, step_key):
        state, obs, returns, running = carry
        key_act, key_env = jax.random.split(step_key)
        x = scaler_apply(scaler, obs)
        action = policy.deterministic(params, x) if deterministic else policy.sample(key_act, params, x, hp)[0]
        state, result = jax.vmap(env.step)(jax.random.split(key_env, n_episodes), state, action)
        returns = returns + jnp.where(running, result.reward, 0.0)
        running = running & ~(result.terminated | result.truncated)
        return (state, result.obs, returns, running), None

    carry = (state, obs, jnp.zeros((n_episodes,), jnp.float32), jnp.ones((n_episodes,), bool))
    (_, _, returns, _), _ = jax.lax.scan(step, carry, jax.random.split(key_run, max_steps))
    return returns
