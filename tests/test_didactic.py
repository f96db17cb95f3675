"""The didactic bandit env (algorithm.md §8) and experiments/didactic.py's outputs."""

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppocma_jax.envs import UnknownEnvError, list_envs, make_env

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "didactic.py"


def _experiment():
    spec = importlib.util.spec_from_file_location("didactic_experiment", EXPERIMENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quadratic_bandit_spec_reset_and_step():
    env = make_env("didactic/quadratic")
    spec = env.spec
    assert (spec.obs_dim, spec.action_dim, spec.discrete) == (1, 2, False)
    assert spec.action_low == (-2.0, -2.0) and spec.action_high == (2.0, 2.0) and spec.max_episode_steps == 1
    state, obs = env.reset(jax.random.PRNGKey(0))
    assert obs.shape == (1,) and obs.dtype == jnp.float32 and float(obs[0]) == 0.0
    for action, reward in (([0.0, 0.0], 0.0), ([-1.0, -1.0], -2.0), ([0.5, -2.0], -4.25), ([2.0, 2.0], -8.0)):
        state, result = env.step(jax.random.PRNGKey(1), state, jnp.array(action, jnp.float32))
        assert result.reward.shape == () and float(result.reward) == pytest.approx(reward)
        # every step is a whole episode: a true end (no bootstrap), never a time limit
        assert bool(result.terminated) and not bool(result.truncated)
        assert result.obs.shape == (1,) and result.final_obs.shape == (1,) and float(result.obs[0]) == 0.0


def test_quadratic_bandit_vmaps_and_is_registered(monkeypatch):
    env = make_env("didactic/quadratic")
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    states, obs = jax.vmap(env.reset)(keys)
    actions = jnp.array([[1.0, 0.0], [0.0, -1.5], [0.3, 0.4]])
    _, result = jax.vmap(env.step)(keys, states, actions)
    np.testing.assert_allclose(np.asarray(result.reward), [-1.0, -2.25, -0.25], rtol=1e-6)
    # list_envs without building every gymnax env (seconds): only the didactic suite's entry is under test here
    monkeypatch.setattr("ppocma_jax.envs.gymnax_env.gymnax_env_names", lambda: [])
    assert [s.name for s in list_envs(include_brax=False)] == ["didactic/quadratic"]
    with pytest.raises(UnknownEnvError, match="valid: quadratic"):
        make_env("didactic/cubic")


def test_experiment_writes_json_schema_and_figure(tmp_path):
    """PPO-CMA-m for 3 iterations with the experiment's real settings: compiling dominates (about 20 CPU-seconds),
    and the didactic notebook, run later in the session, reuses these programs from the session's compilation
    cache (they do not depend on the iteration count)."""
    didactic = _experiment()
    assert didactic.main(["--out", str(tmp_path), "--modes", "PPO-CMA-m", "--iterations", "3", "--no-gif"]) == 0
    data = json.loads((tmp_path / "didactic.json").read_text())
    assert set(data) == {"PPO-CMA-m"}
    for mode, trace in data.items():
        assert set(trace) == {"mean", "std"}
        means, stds = np.array(trace["mean"]), np.array(trace["std"])
        assert means.shape == (4, 2) and stds.shape == (4, 2)  # iteration 0 (initial policy) .. 3
        # the initial policy is the pre-trained N((-1, -1), 0.25^2)
        np.testing.assert_allclose(means[0], [-1.0, -1.0], atol=0.03)
        np.testing.assert_allclose(stds[0], [0.25, 0.25], atol=0.03)
        assert np.all(stds > 0) and np.all(np.isfinite(means))
        # three updates on r = -|a|^2 move the mean toward the optimum at the origin
        assert np.linalg.norm(means[-1]) < np.linalg.norm(means[0])
    assert (tmp_path / "didactic.png").stat().st_size > 10_000


def test_experiment_rejects_bad_input(capsys):
    didactic = _experiment()
    assert didactic.main(["--out", "/tmp/unused", "--iterations", "0"]) == 2
    assert "error" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown didactic mode"):
        didactic.compile_modes(["PPO-CMA"])
