"""Env protocol, adapters, wrappers and the rollout's episode bookkeeping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from ppocma_jax import HParams
from ppocma_jax.envs import ActionRepeat, EnvSpec, StepResult, UnknownEnvError, make_env
from ppocma_jax.normalize import scaler_init
from ppocma_jax.policy import Policy
from ppocma_jax.rollout import env_reset, rollout


@struct.dataclass
class CounterState:
    t: jax.Array


class CounterEnv:
    """obs = [t]; reward = t + 1 at step t -> t + 1; terminates at t == 3 unless `limit` truncates first."""

    def __init__(self, terminal_at=3, limit=100):
        self.terminal_at, self.limit = terminal_at, limit
        self.spec = EnvSpec("test/counter", 1, False, 1, (-1.0,), (1.0,), limit)

    def reset(self, key):
        return CounterState(jnp.zeros((), jnp.int32)), jnp.zeros((1,), jnp.float32)

    def step(self, key, state, action):
        t = state.t + 1
        terminated = t >= self.terminal_at
        truncated = (t >= self.limit) & ~terminated
        done = terminated | truncated
        final = jnp.array([t], jnp.float32)
        new_t = jnp.where(done, 0, t)
        return CounterState(new_t), StepResult(jnp.array([new_t], jnp.float32), t.astype(jnp.float32),
                                                terminated, truncated, final)


def test_action_repeat_sums_rewards_and_stops_at_episode_end():
    env = ActionRepeat(CounterEnv(terminal_at=3), 2)
    state, obs = env.reset(jax.random.PRNGKey(0))
    a = jnp.zeros((1,))
    state, r1 = env.step(jax.random.PRNGKey(1), state, a)  # steps to t=1 (r 1), t=2 (r 2)
    assert float(r1.reward) == 3.0 and not bool(r1.terminated) and float(r1.obs[0]) == 2.0
    state, r2 = env.step(jax.random.PRNGKey(2), state, a)  # t=3 terminates (r 3); second sub-step discarded
    assert float(r2.reward) == 3.0 and bool(r2.terminated) and not bool(r2.truncated)
    assert float(r2.final_obs[0]) == 3.0 and float(r2.obs[0]) == 0.0 and int(state.t) == 0
    assert env.spec.max_episode_steps == 50


def test_rollout_tracks_time_feature_episode_stats_and_final_obs():
    env = CounterEnv(terminal_at=3)
    policy = Policy("joint", 1, 1, (-1.0,), (1.0,), (0.0,), (1.0,), hidden_layers=1, hidden_units=4)
    hp = HParams().as_arrays()
    params = policy.init(jax.random.PRNGKey(0), hp, "analytic")
    carry = env_reset(env, jax.random.PRNGKey(1), 2)
    carry, traj, stats = rollout(env, policy, params, scaler_init(1), carry, jax.random.PRNGKey(2), 7, hp)
    np.testing.assert_array_equal(np.asarray(traj.time[:, 0]), [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(np.asarray(traj.terminated[:, 0]), [0, 0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(np.asarray(traj.next_obs[:, 0, 0]), [1, 2, 3, 1, 2, 3, 1])  # true successors
    np.testing.assert_array_equal(np.asarray(traj.obs[:, 0, 0]), [0, 1, 2, 0, 1, 2, 0])
    assert int(stats.episodes) == 4  # 2 per env
    assert float(stats.return_sum) == pytest.approx(4 * 6.0)  # 1 + 2 + 3 each
    assert float(stats.length_sum) == pytest.approx(4 * 3.0)
    assert int(carry.time[0]) == 1 and float(carry.ep_return[0]) == 1.0  # unfinished episode carried over
    # first iteration (scaler never updated) acts from the initial Gaussian: clipped to the box
    assert np.all(np.abs(np.asarray(traj.action)) <= 1.0)


def test_gymnax_time_limit_is_truncation_with_final_observation():
    env = make_env("gymnax/Pendulum-v1")  # no termination, 200-step limit
    state, obs = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    for t in range(200):
        state, res = step(jax.random.PRNGKey(t), state, jnp.zeros((1,)))
        if t < 199:
            assert not bool(res.truncated) and not bool(res.terminated)
            np.testing.assert_array_equal(np.asarray(res.obs), np.asarray(res.final_obs))
    assert bool(res.truncated) and not bool(res.terminated)
    assert not np.allclose(np.asarray(res.obs), np.asarray(res.final_obs))  # obs is the reset one


def test_gymnax_termination_is_not_truncation():
    env = make_env("gymnax/CartPole-v1")
    state, _ = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    for t in range(100):  # always pushing left topples the pole quickly
        state, res = step(jax.random.PRNGKey(t), state, jnp.array(0, jnp.int32))
        if bool(res.terminated):
            break
    assert bool(res.terminated) and not bool(res.truncated) and t < 100


def test_make_env_errors_name_the_problem():
    with pytest.raises(UnknownEnvError, match="valid suites"):
        make_env("nosuchsuite/X")
    with pytest.raises(UnknownEnvError, match="Pendulum-v1"):
        make_env("gymnax/NoSuchEnv")
    assert make_env("Pendulum-v1").spec.name == "gymnax/Pendulum-v1"  # Run.py's bare ids


def test_a_gymnax_env_loads_without_seaborn_which_loads_when_used():
    """gymnax imports seaborn (and scipy.stats) for Pong's frames only: deferred, it costs a run nothing until used."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = """
import sys
from ppocma_jax.envs import make_env
make_env("gymnax/Pendulum-v1")
print(type(sys.modules["seaborn"]).__name__, "scipy.stats" in sys.modules)
import gymnax.environments.misc.pong as pong
print(len(pong.sns.color_palette("cubehelix", 3)), type(sys.modules["seaborn"]).__name__)
"""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["_DeferredModule False", "3 module"]
