"""Env objects instead of registered names: a gymnax Environment subclass defined here, our Env protocol, and a
one-line EnvError for objects that fit neither (envs.wrap_env, make_train(config, env=...))."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

from ppocma_jax import Config, make_train
from ppocma_jax.envs import EnvError, make_env, wrap_env


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


def test_wrap_gymnax_object_spec_and_name():
    env = wrap_env(ReachTarget())
    assert env.spec.name == "ReachTarget" and env.spec.obs_dim == 2 and env.spec.action_dim == 2
    assert not env.spec.discrete and env.spec.action_low == (-1.0, -1.0)
    named = wrap_env((ReachTarget(), TargetParams(max_steps_in_episode=3)), name="reach")
    assert named.spec.name == "reach" and named.spec.max_episode_steps == 3
    state, obs = named.reset(jax.random.PRNGKey(0))
    assert obs.shape == (2,)
    # our protocol passes through; a name renames it
    cartpole = make_env("gymnax/CartPole-v1")
    assert wrap_env(cartpole) is cartpole
    assert wrap_env(cartpole, name="cp").spec.name == "cp"


@pytest.mark.parametrize("bad, words", [
    (object(), "object is not an environment"),
    ("gymnax/CartPole-v1", "make_env"),
    (3, "int is not an environment"),
])
def test_bad_env_objects_are_one_line_errors(bad, words):
    with pytest.raises(EnvError) as info:
        wrap_env(bad)
    assert words in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError):
        make_train(Config(env="anything", max_steps=64, iter_steps=32, n_envs=4), env=bad)


def test_custom_gymnax_env_learns_under_ppo_cma_m():
    config = Config(env="ReachTarget", mode="PPO-CMA-m", max_steps=2048, iter_steps=128, n_envs=8,
                    n_updates=20, eval_every=0)
    train = make_train(config, env=(ReachTarget(), TargetParams()))
    assert train.trainer.env.spec.name == "ReachTarget"
    _, metrics = jax.jit(train)(jax.random.PRNGKey(0))
    assert np.all(np.asarray(metrics["finite"]) == 1)
    r = np.asarray(metrics["mean_return"])
    r = r[~np.isnan(r)]
    # random actions in [-1, 1]^2 score about 8 x -(2/3 + 1/6) = -6.7 per episode
    assert r[0] < -3 and r[-3:].mean() > r[0] / 3, r


def test_brax_env_object_with_a_changed_parameter_trains():
    """One small program (Brax compiles are slow): a Brax env built by the user with a changed parameter
    (n_frames, physics steps per env step) trains through make_train(config, env=...) with our time limit."""
    pytest.importorskip("brax")
    from brax import envs

    raw = envs.get_environment("inverted_pendulum", backend="spring", n_frames=3)
    env = wrap_env(raw, name="pendulum-3frames", episode_length=50)
    assert env.spec.name == "pendulum-3frames" and env.spec.max_episode_steps == 50 and env.backend == "spring"
    assert env.spec.obs_dim == 4 and env.spec.action_dim == 1
    config = Config(env="pendulum-3frames", max_steps=256, iter_steps=128, n_envs=8, n_updates=5, batch_size=64,
                    hidden_units=16, pretrain_steps=10, history_buffer_size=2, eval_every=0)
    state, metrics = jax.jit(make_train(config, env=env))(jax.random.PRNGKey(0))
    assert np.all(np.asarray(metrics["finite"]) == 1) and int(state.iteration) == 2
    returns = np.asarray(metrics["mean_return"])  # episodes end by falling over or at the 50-step limit
    assert np.all(np.isnan(returns) | ((returns >= 1.0) & (returns <= 50.0))), returns
    with pytest.raises(EnvError, match="episode_length applies to Brax env objects only"):
        wrap_env(ReachTarget(), episode_length=10)
