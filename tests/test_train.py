"""The compiled training program: every mode runs, same seed gives the same result, metrics are honest."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tiny import tiny_config as tiny

from ppocma_jax import METRIC_NAMES, MODES, Config, ConfigError, HParams, make_train


_COMPILED = {}


def jitted(config):
    """One jitted train per config for the whole module: compiling dominates these tests' time."""
    if config not in _COMPILED:
        _COMPILED[config] = jax.jit(make_train(config))
    return _COMPILED[config]


@pytest.mark.parametrize("mode,env", [(m, "gymnax/Pendulum-v1") for m in MODES] + [("PPO", "gymnax/CartPole-v1")])
def test_every_mode_runs_and_reports_metrics(mode, env):
    train = jitted(tiny(mode=mode, env=env))
    state, metrics = train(jax.random.PRNGKey(0), HParams())
    assert set(metrics) == set(METRIC_NAMES)
    assert all(np.asarray(v).shape == (2,) for v in metrics.values())
    np.testing.assert_array_equal(np.asarray(metrics["env_steps"]), [512, 1024])
    assert np.all(np.asarray(metrics["finite"]) == 1)
    assert np.isfinite(np.asarray(metrics["critic_loss"])).all()
    assert int(state.iteration) == 2
    cma = mode.startswith("PPO-CMA")
    assert np.isnan(np.asarray(metrics["variance_loss"])).all() != cma
    if env.endswith("Pendulum-v1"):
        assert np.isfinite(np.asarray(metrics["policy_std"])).all()
        # first iteration acts from the initial Gaussian: std = half range = 2
        assert float(metrics["policy_std"][0]) == pytest.approx(2.0)
    if cma:
        assert int(state.history.filled) == 2


def test_same_seed_same_result_other_seed_other_result():
    train = jitted(tiny())
    _, m1 = train(jax.random.PRNGKey(3), HParams())
    _, m2 = train(jax.random.PRNGKey(3), HParams())
    _, m3 = train(jax.random.PRNGKey(4), HParams())
    for name in METRIC_NAMES:
        np.testing.assert_array_equal(np.asarray(m1[name]), np.asarray(m2[name]), err_msg=name)
    assert not np.array_equal(np.asarray(m1["critic_loss"]), np.asarray(m3["critic_loss"]))


def test_no_finished_episode_is_nan_not_zero():
    # CartPole's episodes outlast a 4-step rollout at the start
    train = jax.jit(make_train(tiny(env="gymnax/CartPole-v1", mode="PPO", iter_steps=32, max_steps=32,
                                    n_envs=8)))
    _, metrics = train(jax.random.PRNGKey(0))
    assert int(metrics["episodes"][0]) == 0 and np.isnan(float(metrics["mean_return"][0]))


def test_hparams_are_dynamic_inputs_not_constants():
    """Changing a hyperparameter must not recompile and must change the result."""
    train = jitted(tiny())
    _, a = train(jax.random.PRNGKey(0), HParams(learning_rate=1e-4))
    compiled_programs = train._cache_size()
    _, b = train(jax.random.PRNGKey(0), HParams(learning_rate=3e-3))
    assert train._cache_size() == compiled_programs
    assert not np.array_equal(np.asarray(a["policy_loss"]), np.asarray(b["policy_loss"]))


def test_config_errors_are_raised_before_compiling():
    with pytest.raises(ConfigError, match="needs continuous actions"):
        make_train(Config(env="gymnax/CartPole-v1"))
    with pytest.raises(ConfigError, match="initial_std has 2 values"):
        make_train(tiny(initial_std=(1.0, 1.0)))
    with pytest.raises(ConfigError, match="adv_norm=meanstd is only for mode PPO"):
        make_train(tiny(adv_norm="meanstd"))
    assert tiny(mode="PPO").advantage_norm == "meanstd" and tiny().advantage_norm == "std"  # auto, per mode


def test_vmap_over_hparams_and_seeds_matches_single_runs():
    train = make_train(tiny())
    settings = HParams.stack([HParams(learning_rate=1e-4), HParams(learning_rate=3e-3)])
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    _, batched = jax.jit(jax.vmap(train, in_axes=(0, 0)))(keys, settings)
    assert batched["policy_loss"].shape == (2, 2)
    _, second = jitted(tiny())(keys[1], HParams(learning_rate=3e-3))
    np.testing.assert_allclose(np.asarray(batched["mean_return"][1]), np.asarray(second["mean_return"]),
                               rtol=1e-4)
    np.testing.assert_allclose(np.asarray(batched["critic_loss"][1]), np.asarray(second["critic_loss"]),
                               rtol=1e-3)


def test_nonfinite_update_is_detected_and_the_last_good_state_kept():
    train = jax.jit(make_train(tiny(max_steps=2048)))
    state, metrics = train(jax.random.PRNGKey(0), HParams(critic_learning_rate=1e30))
    finite = np.asarray(metrics["finite"])
    assert finite[-1] == 0
    first_bad = int(np.argmin(finite))
    assert np.all(finite[:first_bad] == 1) and np.all(finite[first_bad:] == 0)
    np.testing.assert_array_equal(np.asarray(metrics["iteration"]), [1, 2, 3, 4])  # rows stay unique
    assert int(state.iteration) == first_bad  # the state after the last good iteration
    leaves = jax.tree.leaves((state.policy_params, state.critic_params, state.opt_states))
    assert all(np.isfinite(np.asarray(x)).all() for x in leaves)


def test_kl_early_stop_keeps_the_offending_step_and_skips_the_rest():
    """target_kl > 0: the pass ends after the first step whose full-batch KL exceeds 1.5 x target_kl (Keras PPO)."""
    from ppocma_jax.train import Trainer
    from ppocma_jax.update import PolicyBatch, joint_pass

    cfg = tiny(env="gymnax/CartPole-v1", mode="PPO", full_batch=True, n_updates=5)
    trainer = Trainer.build(cfg)
    hp = HParams().as_arrays()
    params = trainer.init_state(jax.random.PRNGKey(0), hp).policy_params
    opt = trainer.init_state(jax.random.PRNGKey(0), hp).opt_states["logits"]
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    obs = jax.random.normal(keys[0], (64, 4))
    actions = jax.random.randint(keys[1], (64,), 0, 2)
    # all advantages negative: every step lowers log pi of the taken actions, so the KL estimate
    # mean(log pi_old - log pi_new) is positive from the first step on (it can be negative for mixed signs)
    adv = -jnp.abs(jax.random.normal(keys[2], (64,)))
    log_prob_old = trainer.policy.log_prob(params, obs, actions, hp)

    def run(trainer, target_kl):
        h = hp.replace(target_kl=jnp.float32(target_kl))
        update = lambda *args: joint_pass(trainer.policy, trainer.config, *args).params
        return jax.jit(update)(params, opt, PolicyBatch(obs, actions, adv), log_prob_old, jax.random.PRNGKey(2), h)

    stopped = run(trainer, 1e-12)  # any step's KL exceeds it: exactly one step is kept
    one_step = run(Trainer.build(cfg.replace(n_updates=1)), 0.0)
    all_steps = run(trainer, 0.0)
    leaves = lambda tree: [np.asarray(x) for x in jax.tree.leaves(tree)]
    for a, b in zip(leaves(stopped), leaves(one_step)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(a, b) for a, b in zip(leaves(stopped), leaves(all_steps)))


def test_full_batch_uses_every_sample_and_is_for_ppo_pg_only():
    from ppocma_jax.train import Trainer
    from ppocma_jax.update import minibatch_rows

    trainer = Trainer.build(tiny(env="gymnax/CartPole-v1", mode="PPO", full_batch=True))
    np.testing.assert_array_equal(np.asarray(minibatch_rows(trainer.config, jax.random.PRNGKey(0), 512)),
                                  np.arange(512))
    assert trainer.config.minibatch_size == 512
    with pytest.raises(ConfigError, match="full_batch is for PPO / PG"):
        tiny(mode="PPO-CMA-m", full_batch=True).validate()


def test_presets_apply_per_mode_settings():
    from ppocma_jax.presets import PRESETS, resolve_preset

    cma = resolve_preset("paper-locomotion")
    ppo = resolve_preset("paper-locomotion", "PPO")
    assert (cma["mode"], cma["iter_steps"], cma["batch_size"]) == ("PPO-CMA-m", 8000, 512)
    assert (ppo["mode"], ppo["iter_steps"], ppo["batch_size"], ppo["ppo_epsilon"]) == ("PPO", 2000, 128, 0.005)
    names = {f.name for f in __import__("dataclasses").fields(Config)} | {f.name for f in
                                                                           __import__("dataclasses").fields(HParams)}
    for name in PRESETS:  # every preset (and mode variant) builds a valid config
        for mode in (None, "PPO"):
            settings = resolve_preset(name, mode)
            assert set(settings) <= names, name
            Config(**{k: v for k, v in settings.items() if k in {f.name for f in
                                                                  __import__("dataclasses").fields(Config)}}).validate()


def test_the_evaluation_schedule_is_every_eval_every_iterations_and_the_last():
    from ppocma_jax.evaluation import eval_due

    config = tiny(max_steps=7 * 512, eval_every=3)  # 7 iterations
    assert [i for i in range(1, 8) if eval_due(i, config)] == [3, 6, 7]
    traced = jax.jit(lambda i: eval_due(i, config))  # the same rule inside the compiled loop
    assert [i for i in range(1, 8) if bool(traced(jnp.int32(i)))] == [3, 6, 7]
    assert not any(eval_due(i, tiny(max_steps=7 * 512, eval_every=0)) for i in range(1, 8))
