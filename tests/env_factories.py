"""Env factories for `--env tests.env_factories:NAME` (tests/test_custom_env.py): a small gymnax Environment
subclass, and factories that fail in each way a user's can."""

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class TargetState(environment.EnvState):
    target: jax.Array  # [2]


@struct.dataclass
class TargetParams(environment.EnvParams):
    max_steps_in_episode: int = 8
    scale: float = 1.0


class ReachTarget(environment.Environment):
    """Each step a fresh target t in [-0.5, 0.5]^2 (observed as a 2x1 box, to test flattening); reward -|a - t|^2.
    The optimum (a = t, return 0) is a linear function of the observation: learnable in a few iterations."""

    @property
    def default_params(self) -> TargetParams:
        return TargetParams()

    def _target(self, key):
        return jax.random.uniform(key, (2,), minval=-0.5, maxval=0.5)

    def step_env(self, key, state, action, params):
        reward = -params.scale * jnp.sum((action.reshape(2) - state.target) ** 2)
        state = TargetState(time=state.time + 1, target=self._target(key))
        done = self.is_terminal(state, params)
        return self.get_obs(state), state, reward, done, {}

    def reset_env(self, key, params):
        state = TargetState(time=0, target=self._target(key))
        return self.get_obs(state), state

    def get_obs(self, state, params=None, key=None):
        return state.target.reshape(2, 1)

    def is_terminal(self, state, params):
        return state.time >= params.max_steps_in_episode

    def action_space(self, params=None):
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)

    def observation_space(self, params):
        return spaces.Box(-0.5, 0.5, (2, 1), jnp.float32)


def reach_target():
    """The factory the CLI imports: an (environment, params) pair."""
    return ReachTarget(), TargetParams()


def not_an_env():
    return 3


def broken():
    raise RuntimeError("simulator licence not found")


NOT_CALLABLE = 5
