"""Short fixed-seed learning tests on small envs: the algorithm must actually learn, not only run.

Budgets are the smallest that show clear learning with the default algorithm settings; longer runs and their
numbers belong in experiments/ and the README.
"""

import jax
import numpy as np

from ppocma_jax import Config, make_train


def returns(config, seed=0):
    _, metrics = jax.jit(make_train(config))(jax.random.PRNGKey(seed))
    r = np.asarray(metrics["mean_return"])
    assert np.all(np.asarray(metrics["finite"]) == 1)
    return r[~np.isnan(r)]


def test_pendulum_improves_under_ppo_cma_m():
    r = returns(Config(env="gymnax/Pendulum-v1", mode="PPO-CMA-m", max_steps=100_000))
    # a random policy scores about -1200 to -1300; defaults reach about -400 by 100k steps
    assert r[0] < -1000
    assert np.mean(r[-3:]) > -800 and np.mean(r[-3:]) > r[0] + 400, r


def test_cartpole_reaches_the_ceiling_under_ppo():
    r = returns(Config(env="gymnax/CartPole-v1", mode="PPO", max_steps=72_000))
    assert r[0] < 50  # random play ends in about 20 steps
    assert np.max(r[-3:]) >= 450, r


def test_default_job_solves_mountain_car():
    from ppocma_jax.presets import PRESETS

    r = returns(Config(**{**PRESETS["default"], "max_steps": 40_000}))
    assert np.mean(r[-2:]) > 85, r  # gym counts >= 90 as solved; the full default job ends near 94
