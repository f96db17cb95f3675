"""Short fixed-seed learning tests on small envs: the algorithm must actually learn, not only run.

Budgets are the smallest that show clear learning with the default algorithm settings; longer runs and their
numbers belong in experiments/ and the README.
"""

import jax
import numpy as np

from ppocma_jax import Config, HParams, make_train


def returns(config, seed=0):
    _, metrics = jax.jit(make_train(config))(jax.random.PRNGKey(seed))
    r = np.asarray(metrics["mean_return"])
    assert np.all(np.asarray(metrics["finite"]) == 1)
    return r[~np.isnan(r)]


def test_pendulum_improves_under_ppo_cma_m():
    """Three seeds in one program: one seed's 100k-step result swings by hundreds (seed 0 of the current RNG
    streams lets its std collapse early and ends near -1100, seeds 1 and 2 reach -550 and -690), so the claim
    tested is about the seeds' mean, with every seed improving."""
    from ppocma_jax.sweep import expand_seeds, make_train_batched

    runs = expand_seeds([HParams()], [{}], seeds=[0, 1, 2])
    config = Config(env="gymnax/Pendulum-v1", mode="PPO-CMA-m", max_steps=100_000, eval_every=0)
    _, metrics = jax.jit(make_train_batched(config))(runs.keys, runs.hparams)
    assert np.all(np.asarray(metrics["finite"]) == 1)
    r = np.asarray(metrics["mean_return"])  # [iterations, seeds]; Pendulum ends an episode every 200 steps
    first, last = r[0], r[-3:].mean(axis=0)
    # a random policy scores about -1200 to -1300
    assert np.all(first < -1000), first
    assert np.all(last > first + 100) and last.mean() > -850 and last.mean() > first.mean() + 400, (first, last)


def test_cartpole_reaches_the_ceiling_under_ppo():
    r = returns(Config(env="gymnax/CartPole-v1", mode="PPO", max_steps=72_000))
    assert r[0] < 50  # random play ends in about 20 steps
    assert np.max(r[-3:]) >= 450, r


def test_default_job_solves_mountain_car():
    from ppocma_jax.presets import PRESETS

    r = returns(Config(**{**PRESETS["default"], "max_steps": 40_000}))
    assert np.mean(r[-2:]) > 85, r  # gym counts >= 90 as solved; the full default job ends near 94
