"""In-jit environment wrappers that keep the `Env` protocol."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .base import Env, EnvSpec, StepResult


class ActionRepeat:
    """Hold each action for `repeat` simulator steps, summing rewards; stop at the end of an episode.

    If the episode ends at sub-step j < repeat, the remaining sub-steps are computed but discarded (fixed shapes
    under jit), so the returned state/obs are those of the freshly reset env and `final_obs` is the ended episode's
    last observation.
    """

    def __init__(self, env: Env, repeat: int):
        if repeat < 1:
            raise ValueError(f"action repeat must be >= 1, got {repeat}")
        self.env = env
        self.repeat = repeat
        spec = env.spec
        steps = None if spec.max_episode_steps is None else -(-spec.max_episode_steps // repeat)
        self.spec = EnvSpec(spec.name, spec.obs_dim, spec.discrete, spec.action_dim, spec.action_low,
                            spec.action_high, steps)

    def reset(self, key: jax.Array) -> tuple[Any, jax.Array]:
        return self.env.reset(key)

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, StepResult]:
        def sub_step(carry, sub_key):
            state, result, done = carry
            new_state, new = self.env.step(sub_key, state, action)
            keep = lambda old, fresh: jax.tree.map(lambda o, f: jnp.where(done, o, f), old, fresh)
            merged = StepResult(
                obs=jnp.where(done, result.obs, new.obs),
                reward=result.reward + jnp.where(done, 0.0, new.reward),
                terminated=jnp.where(done, result.terminated, new.terminated),
                truncated=jnp.where(done, result.truncated, new.truncated),
                final_obs=jnp.where(done, result.final_obs, new.final_obs),
            )
            return (keep(state, new_state), merged, done | new.terminated | new.truncated), None

        # One scan over all sub-steps, so the env's step is traced once (a Brax step costs seconds to compile).
        obs0 = jnp.zeros((self.spec.obs_dim,), jnp.float32)
        false = jnp.zeros((), bool)
        empty = StepResult(obs=obs0, reward=jnp.zeros((), jnp.float32), terminated=false, truncated=false,
                           final_obs=obs0)
        (state, result, _), _ = jax.lax.scan(sub_step, (state, empty, false), jax.random.split(key, self.repeat))
        return state, result
