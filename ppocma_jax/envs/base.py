"""The one environment protocol the trainer uses, for gymnax, Brax and host simulators alike.

An `Env` works on ONE environment instance with pure functions; the trainer `vmap`s it over `n_envs`.
`step` auto-resets: when an episode ends, the returned `obs` is the first observation of the next episode and
`final_obs` is the last observation of the ended one (what a time-limit truncation bootstraps from). Termination
(a true end: no bootstrap) and truncation (a time limit: bootstrap) are reported separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import jax
import numpy as np
from flax import struct


@dataclass(frozen=True)
class EnvSpec:
    """Static facts about an environment."""

    name: str  # "suite/name"
    obs_dim: int
    discrete: bool
    action_dim: int  # continuous: dimensions of the action vector; discrete: number of actions
    action_low: tuple[float, ...] | None = None  # continuous only, one bound per dimension
    action_high: tuple[float, ...] | None = None
    max_episode_steps: int | None = None  # the env's own time limit, if it has one

    def low_high(self) -> tuple[np.ndarray, np.ndarray]:
        if self.discrete:
            raise ValueError(f"{self.name} has discrete actions: no action bounds")
        return np.asarray(self.action_low, np.float32), np.asarray(self.action_high, np.float32)


@struct.dataclass
class StepResult:
    """Outcome of one `Env.step` (arrays for ONE env; the trainer adds the batch axis)."""

    obs: jax.Array  # observation to act on next (the reset observation if the episode ended)
    reward: jax.Array  # float32 scalar
    terminated: jax.Array  # bool: true end of the episode, do not bootstrap
    truncated: jax.Array  # bool: time limit, bootstrap from final_obs
    final_obs: jax.Array  # the successor of the acted-on state (= obs unless the episode ended)


class Env(Protocol):
    """Pure single-instance environment with auto-reset. `state` is any pytree."""

    spec: EnvSpec

    def reset(self, key: jax.Array) -> tuple[Any, jax.Array]:
        """-> (state, first observation [obs_dim])."""
        ...

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, StepResult]:
        """Apply `action` ([action_dim] float32, or int32 scalar for discrete envs) -> (state, StepResult)."""
        ...
