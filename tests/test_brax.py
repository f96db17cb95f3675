"""Brax adapter: own time limit and auto-reset that keep the final observation, termination vs truncation, vmap,
action repeat, registry errors, and a short training smoke run.

Brax compiles are slow on CPU (5-40 s per env), so everything uses brax/inverted_pendulum (spring backend) and the
env-level checks share ONE compiled program (the `runs` fixture)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("brax")

from ppocma_jax import Config, make_train  # noqa: E402
from ppocma_jax.envs import ActionRepeat, EnvSpec, UnknownEnvError, list_envs, make_env  # noqa: E402
from ppocma_jax.envs.brax_env import BraxEnv  # noqa: E402

LIMIT = 12  # episode_length of the test env, in simulator steps
T = 14  # steps per rollout
N = 4  # vmapped envs: 0 zero action (survives -> truncated at step 12), 1 max action (falls at step ~7),
# 2 min action (falls), 3 uniform random actions
REPEAT = 3
FAST_LIMIT = 5  # 5 = REPEAT + 2: the episode ends on the 2nd sub-step of the 2nd decision


@pytest.fixture(scope="module")
def env():
    return make_env("brax/inverted_pendulum", episode_length=LIMIT)


@pytest.fixture(scope="module")
def runs(env):
    """ONE jit (a Brax compile costs 5-40 s): a [T, N] vmapped rollout, with per step the raw Brax step of the
    pre-step state and the reset observation for the step's key; and plain vs ActionRepeat rollouts of Brax's
    `fast` env with a 5-step limit (inverted_pendulum under ActionRepeat would double the compile: the wrapper
    traces the env step twice)."""
    fast = BraxEnv("fast", episode_length=FAST_LIMIT)  # reward = position, which grows; deterministic reset
    raw_step = env._env.step

    def rollout(step_env, keys, actions, checks):
        state, obs0 = jax.vmap(step_env.reset)(keys)

        def body(state, xs):
            k, a = xs
            step_keys = jax.random.split(k, a.shape[0])
            raw_obs = jax.vmap(raw_step)(state.brax_state, a).obs if checks else None
            reset_obs = jax.vmap(env.reset)(step_keys)[1] if checks else None
            state, res = jax.vmap(step_env.step)(step_keys, state, a)
            return state, (res, raw_obs, reset_obs, state.t)

        step_keys = jax.random.split(jax.random.fold_in(keys[0], 1), actions.shape[0])
        return obs0, jax.lax.scan(body, state, (step_keys, actions))[1]

    @jax.jit
    def run(key):
        keys = jax.random.split(key, N)
        actions = jnp.stack([jnp.zeros((T, 1)), jnp.ones((T, 1)), -jnp.ones((T, 1)),
                             jax.random.uniform(jax.random.fold_in(key, 2), (T, 1), minval=-1, maxval=1)], axis=1)
        base = rollout(env, keys, actions, True)
        # Brax's `fast` test env (no physics, compiles in a blink): plain steps vs ActionRepeat, constant action
        plain = rollout(fast, keys[:1], jnp.ones((2 * REPEAT, 1, 1)), False)[1][0]
        repeated = rollout(ActionRepeat(fast, REPEAT), keys[:1], jnp.ones((2, 1, 1)), False)[1][0]
        return base, (plain, repeated)

    return jax.device_get(run(jax.random.PRNGKey(0)))


def test_spec_matches_static_table(env, monkeypatch):
    spec = env.spec
    assert spec.name == "brax/inverted_pendulum" and spec.obs_dim == 4 and spec.action_dim == 1
    assert not spec.discrete and spec.action_low == (-1.0,) and spec.action_high == (1.0,)
    assert spec.max_episode_steps == LIMIT and env.backend == "spring"
    # list_envs takes Brax sizes from a static table instead of building every env; one gymnax env keeps it fast
    monkeypatch.setattr("ppocma_jax.envs.gymnax_env.gymnax_env_names", lambda: ["Pendulum-v1"])
    listed = {s.name: s for s in list_envs()}
    assert listed["brax/inverted_pendulum"] == EnvSpec(spec.name, 4, False, 1, (-1.0,), (1.0,), 1000)
    assert listed["brax/hopper"].obs_dim == 11 and listed["brax/hopper"].action_dim == 3
    assert "gymnax/Pendulum-v1" in listed and "brax/swimmer" not in listed
    assert [s.name for s in list_envs(include_brax=False)] == ["gymnax/Pendulum-v1", "didactic/quadratic"]


def test_shapes_under_jit_and_vmap(runs):
    (obs0, (res, raw_obs, reset_obs, t)), _ = runs
    assert obs0.shape == (N, 4) and obs0.dtype == np.float32
    assert res.obs.shape == res.final_obs.shape == (T, N, 4) and res.obs.dtype == np.float32
    assert res.reward.shape == (T, N) and res.reward.dtype == np.float32
    assert res.terminated.shape == res.truncated.shape == (T, N) and res.terminated.dtype == np.bool_
    assert np.isfinite(res.obs).all() and np.isfinite(res.reward).all()
    assert not (res.terminated & res.truncated).any()


def test_time_limit_truncates_and_keeps_final_observation(runs):
    (_, (res, raw_obs, reset_obs, t)), _ = runs
    e = 0  # zero action: the pendulum is still up after LIMIT steps
    np.testing.assert_array_equal(res.truncated[:, e], np.arange(1, T + 1) == LIMIT)
    assert not res.terminated[:, e].any()
    np.testing.assert_array_equal(t[:, e], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 1, 2])
    # the final observation is the Brax step's own observation, everywhere
    np.testing.assert_allclose(res.final_obs, raw_obs, rtol=1e-6, atol=1e-7)
    i = LIMIT - 1
    np.testing.assert_array_equal(res.obs[i, e], reset_obs[i, e])  # next episode starts from a fresh reset
    assert not np.allclose(res.obs[i, e], res.final_obs[i, e])
    np.testing.assert_array_equal(res.obs[:i, e], res.final_obs[:i, e])  # obs == final_obs while running


def test_falling_is_termination_not_truncation(runs):
    (_, (res, raw_obs, reset_obs, t)), _ = runs
    for e in (1, 2):  # constant max / min force tips the pole over (|angle| > 0.2) well before the limit
        ends = np.flatnonzero(res.terminated[:, e])
        assert len(ends) >= 1 and ends[0] < LIMIT - 1
        i = ends[0]
        assert not res.truncated[:, e].any()
        assert abs(res.final_obs[i, e, 1]) > 0.2 and abs(res.obs[i, e, 1]) <= 0.01  # fell; fresh pole upright
        np.testing.assert_array_equal(res.obs[i, e], reset_obs[i, e])
        assert t[i, e] == 0 and t[i + 1, e] == 1


def test_action_repeat_sums_rewards_and_stops_at_episode_end(env, runs):
    _, (plain, rep) = runs
    r = plain.reward[:, 0]
    np.testing.assert_array_equal(plain.truncated[:, 0], np.arange(1, 2 * REPEAT + 1) == FAST_LIMIT)
    assert np.all(np.diff(r[:FAST_LIMIT]) > 0)  # distinct rewards: a wrong sum cannot pass by accident
    # decision 0 = steps 1-3; decision 1 = steps 4-5, truncated at 5; its 3rd sub-step (a new episode) is discarded
    np.testing.assert_allclose(rep.reward[:, 0], [r[:REPEAT].sum(), r[REPEAT:FAST_LIMIT].sum()], rtol=1e-6)
    np.testing.assert_array_equal(rep.truncated[:, 0], [False, True])
    assert not rep.terminated.any()
    np.testing.assert_array_equal(rep.final_obs[1, 0], plain.final_obs[FAST_LIMIT - 1, 0])
    np.testing.assert_array_equal(rep.obs[1, 0], plain.obs[FAST_LIMIT - 1, 0])  # the fresh episode's first obs
    np.testing.assert_array_equal(rep.obs[0, 0], plain.obs[REPEAT - 1, 0])
    assert ActionRepeat(env, REPEAT).spec.max_episode_steps == -(-LIMIT // REPEAT)


def test_make_env_errors_are_one_line():
    cases = [("brax/no_such_env", {}, "unknown brax env 'no_such_env'; valid: ant, "),
             ("brax/inverted_pendulum", {"backend": "warp"}, "unknown brax backend 'warp'; valid: spring, positional"),
             ("brax/swimmer", {}, "brax/swimmer is not supported"),
             ("gymnax/Pendulum-v1", {"backend": "spring"}, "apply to brax envs only")]
    for name, kwargs, message in cases:
        with pytest.raises(UnknownEnvError) as info:
            make_env(name, **kwargs)
        text = str(info.value)
        assert message in text and "\n" not in text, text


def test_training_smoke_run_on_brax():
    # no in-loop deterministic evaluation (where the trainer has it): it would compile the Brax step a second time
    no_eval = {"eval_every": 0} if "eval_every" in {f.name for f in dataclasses.fields(Config)} else {}
    config = Config(env="brax/inverted_pendulum", max_steps=256, iter_steps=128, n_envs=8, n_updates=5,
                    batch_size=64, hidden_units=16, pretrain_steps=10, history_buffer_size=2, **no_eval)
    state, metrics = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(metrics["env_steps"]), [128, 256])
    assert np.all(np.asarray(metrics["finite"]) == 1)
    for name in ("critic_loss", "policy_loss", "policy_std"):
        assert np.isfinite(np.asarray(metrics[name])).all(), name
    returns = np.asarray(metrics["mean_return"])  # NaN when no episode ended in an iteration, else >= 1
    assert np.all(np.isnan(returns) | (returns >= 1.0))
    assert int(state.iteration) == 2


def test_missing_brax_is_one_line_install_hint(monkeypatch):
    monkeypatch.setattr("ppocma_jax.envs.brax_env.brax_installed", lambda: False)
    with pytest.raises(UnknownEnvError, match=r'needs Brax, which is not installed: pip install -e "\.\[brax\]"$'):
        make_env("brax/hopper")
    monkeypatch.setattr("ppocma_jax.envs.gymnax_env.gymnax_env_names", lambda: ["Pendulum-v1"])
    assert [s.name for s in list_envs()] == ["gymnax/Pendulum-v1", "didactic/quadratic"]
