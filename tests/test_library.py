"""ppocma_jax as a library: your own networks (Networks), a run's policy as a function (make_policy, save_policy,
load_policy) and a CLI run directory as Python objects (load_run).

Two compiled trainings serve every test (module-scoped fixtures): a CLI sweep (2 seeds x 2 learning rates, the
same argv as tests/test_sweep.py, so the suite's compilation cache serves it) and a two-iteration chunk of a run
with flax.linen networks."""

import json
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny
from tiny import Tiny, cli_flags

from ppocma_jax import (Config, ConfigError, HParams, Networks, PolicyError, RunError, Trainer, load_policy,
                        load_run, make_policy, save_policy)
from ppocma_jax.checkpoint import Checkpointer
from ppocma_jax.cli import main
from ppocma_jax.normalize import scaler_apply
from ppocma_jax.sweep import take_run

TINY = cli_flags(tiny.TINY) + ["--quiet"]


def _observations(n: int = 6) -> jax.Array:
    """[n, 3] Pendulum-like raw observations (cos, sin, angular velocity in [-8, 8]): far enough from the origin
    that the run's scaler changes the actions."""
    angle, speed = jax.random.uniform(jax.random.PRNGKey(1), (2, n), minval=-1.0, maxval=1.0)
    return jnp.stack([jnp.cos(3 * angle), jnp.sin(3 * angle), 8 * speed], axis=-1)


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lib") / "sweep"
    assert main(TINY + ["--seeds", "2", "--sweep", "learning_rate=1e-4,3e-3", "--out", str(out)]) == 0
    return out


def test_load_run_of_a_cli_sweep(sweep_dir):
    run = load_run(sweep_dir)
    assert run.config.env == "gymnax/Pendulum-v1" and run.config.iter_steps == 512 and run.iteration == 2
    assert run.n_runs == 4 and [lb["seed"] for lb in run.labels] == [0, 1, 0, 1]
    assert [lb["learning_rate"] for lb in run.labels] == [1e-4, 1e-4, 3e-3, 3e-3]
    np.testing.assert_allclose(np.asarray(run.run_hparams.learning_rate), [1e-4, 1e-4, 3e-3, 3e-3], rtol=1e-6)
    assert np.asarray(run.state.iteration).tolist() == [2, 2, 2, 2]
    assert run.metrics["mean_return"].shape == (2, 4) and run.metrics["iteration"][:, 0].tolist() == [1, 2]
    rows = [json.loads(line) for line in (sweep_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # every row of metrics.jsonl is in its [iteration, run] cell, NaN for null
        for name in ("critic_loss", "mean_return", "eval_return"):
            value = np.nan if row[name] is None else row[name]
            np.testing.assert_equal(run.metrics[name][row["iteration"] - 1, row["run"]], value)
    one = run.take(3)
    assert int(one.iteration) == 2 and one.scaler.scale.shape == (3,)
    with pytest.raises(RunError) as err:
        run.take(4)
    assert "0 <= k < 4" in _one_line(err) or "[0, 4)" in _one_line(err)


def test_make_policy_acts_as_the_trainers_evaluation(sweep_dir):
    """The trainer's deterministic evaluation acts with policy.deterministic(params, scaler_apply(scaler, obs))
    (evaluation.evaluate_policy): make_policy's act gives those actions from raw observations."""
    run = load_run(sweep_dir)
    trainer, state = run.trainer, run.take(2)
    obs = _observations()
    act = make_policy(run, run=2)
    expected = trainer.policy.deterministic(state.policy_params, scaler_apply(state.scaler, obs))
    np.testing.assert_array_equal(act(obs), expected)
    # the scaler is inside: without it the actions differ (this is what forgetting it silently did)
    assert not np.allclose(trainer.policy.deterministic(state.policy_params, obs), expected)
    # one observation or a batch, eager, jit and vmap: the same actions (a compiled program may fuse, and so round,
    # differently from the eager one: 1 ulp)
    np.testing.assert_allclose(jax.jit(act)(obs), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(act)(obs), expected, rtol=1e-5, atol=1e-6)
    # one at a time: a vector-matrix product may round differently from the batch's matrix product (1 ulp)
    np.testing.assert_allclose(np.stack([act(o) for o in obs]), expected, rtol=1e-5, atol=1e-6)
    assert act(obs[0]).shape == (1,) and act(obs[None]).shape == (1, 6, 1)
    # the same from a TrainState with its trainer, and from the directory
    same = make_policy(state, trainer=trainer, hparams=HParams(learning_rate=3e-3))
    np.testing.assert_array_equal(same(obs), expected)
    np.testing.assert_array_equal(make_policy(sweep_dir, run=2)(obs), expected)


def test_exported_policy_acts_identically(sweep_dir, tmp_path):
    run = load_run(sweep_dir)
    obs = _observations()
    act = make_policy(run, run=1)
    path = save_policy(tmp_path / "policy.npz", act)
    loaded = load_policy(path)
    np.testing.assert_array_equal(loaded(obs), act(obs))
    np.testing.assert_array_equal(loaded(obs[0]), act(obs[0]))  # one observation: the same program both sides
    np.testing.assert_array_equal(jax.jit(loaded)(obs), jax.jit(act)(obs))
    # stochastic: the same key gives the same sample; the run's own sigma bounds travel in the file
    noisy, noisy_loaded = make_policy(run, deterministic=False, run=1), load_policy(path, deterministic=False)
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(noisy(obs, key), noisy_loaded(obs, key))
    assert not np.array_equal(noisy(obs, key), act(obs))
    assert np.all(np.abs(np.asarray(noisy(obs, key))) <= 2.0)  # clipped to Pendulum's box
    with pytest.raises(PolicyError, match="act\\(obs, key\\)"):
        noisy(obs)


def test_single_run_directory_and_bad_inputs(sweep_dir, tmp_path):
    """A one-run directory (the sweep's run 0 written as the CLI writes a single run) and one-line errors."""
    run = load_run(sweep_dir)
    single = tmp_path / "single"
    single.mkdir()
    document = json.loads((sweep_dir / "config.json").read_text())
    del document["runs"]
    (single / "config.json").write_text(json.dumps(document))
    with Checkpointer(single) as checkpointer:
        checkpointer.save(2, take_run(run.state, 0))
    loaded = load_run(single)
    assert loaded.n_runs is None and loaded.iteration == 2 and loaded.metrics == {}
    for a, b in zip(jax.tree.leaves(loaded.state), jax.tree.leaves(take_run(run.state, 0))):
        np.testing.assert_array_equal(a, b)
    obs = _observations()
    np.testing.assert_array_equal(make_policy(single)(obs), make_policy(run, run=0)(obs))

    with pytest.raises(PolicyError) as err:
        make_policy(single, run=0)
    assert "holds one run" in _one_line(err)
    with pytest.raises(PolicyError) as err:
        make_policy(run)
    assert "pass run=k" in _one_line(err)
    with pytest.raises(PolicyError) as err:
        make_policy(loaded.state)
    assert "needs trainer=" in _one_line(err)
    with pytest.raises(PolicyError) as err:
        make_policy(42)
    assert "got int" in _one_line(err)
    with pytest.raises(PolicyError) as err:
        make_policy(single)(jnp.zeros((4, 2)))
    assert "[..., 3]" in _one_line(err)
    with pytest.raises(PolicyError) as err:
        save_policy(tmp_path / "x.npz", loaded.state)
    assert "make_policy" in _one_line(err)

    with pytest.raises(RunError) as err:
        load_run(tmp_path / "nothing")
    assert "no config.json" in _one_line(err)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps(document))
    with pytest.raises(RunError) as err:
        load_run(tmp_path / "empty")
    assert "no readable checkpoint" in _one_line(err)
    (tmp_path / "empty" / "config.json").write_text("{not json")
    with pytest.raises(RunError) as err:
        load_run(tmp_path / "empty")
    assert "unreadable config.json" in _one_line(err)
    other = tmp_path / "other"  # a checkpoint of another configuration: one line, nothing moved
    shutil.copytree(single, other)
    document["config"]["hidden_units"] = 8
    (other / "config.json").write_text(json.dumps(document))
    with pytest.raises(RunError) as err:
        load_run(other)
    _one_line(err)
    assert (other / "checkpoints" / "2").is_dir()

    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    for path, words in ((tmp_path / "missing.npz", "no such file"), (tmp_path / "junk.npz", "not a saved policy"),
                        (tmp_path / "plain.npz", "without our metadata"), (single, "is a directory")):
        with pytest.raises(PolicyError) as err:
            load_policy(path)
        assert words in _one_line(err)


# ---------------------------------------------------------------- custom networks
CUSTOM = Config(env="gymnax/Pendulum-v1", mode="PPO-CMA-m", max_steps=512, iter_steps=128, n_envs=4, n_updates=4,
                batch_size=32, hidden_units=8, pretrain_steps=300, history_buffer_size=2, eval_every=0)
NETWORKS = Networks(mean=Tiny(1), logvar=Tiny(1), critic=Tiny(1))


@pytest.fixture(scope="module")
def custom_run():
    """(trainer, chunk, initial state, hp): chunk runs two iterations, compiled once."""
    trainer = Trainer.build(CUSTOM, networks=NETWORKS)
    hp = HParams().as_arrays()
    state = jax.jit(trainer.init_state)(jax.random.PRNGKey(0), hp)
    chunk = jax.jit(lambda s, h: trainer.run(s, h, 2))
    return trainer, chunk, state, hp


def test_custom_networks_train_pretrain_and_resume_exactly(custom_run, tmp_path):
    trainer, chunk, state0, hp = custom_run
    assert set(state0.policy_params) == {"mean", "logvar"}
    assert state0.policy_params["mean"]["params"]["hidden"]["kernel"].shape == (3, 8)
    assert state0.critic_params["params"]["hidden"]["kernel"].shape == (4, 8)  # obs + time feature
    assert set(state0.opt_states) == {"critic", "mean", "logvar"}  # separate Adam states
    # the original's pre-training reached the custom nets, towards N(0, 2^2) on Pendulum: untrained, raw outputs
    # near 0 sit mid-way in the log-variance soft clip, std = exp((log 0.01^2 + log 4^2) / 4) = 0.2; 300 of the
    # default 2000 steps take it to about 0.8 (2000: 1.99, measured with these networks)
    x = jax.random.normal(jax.random.PRNGKey(5), (64, 3))
    mean, logvar = trainer.policy.gaussian(state0.policy_params, x, hp)
    assert np.all(np.abs(np.asarray(mean)) < 2.0)  # soft clip: strictly inside the box
    assert abs(float(jnp.mean(mean))) < 0.3 and 0.6 < float(jnp.mean(jnp.exp(0.5 * logvar))) < 2.0

    straight, metrics = chunk(*chunk(state0, hp)[:1], hp)
    assert np.all(np.asarray(metrics["finite"]) == 1) and int(straight.iteration) == 4
    middle, _ = chunk(state0, hp)
    with Checkpointer(tmp_path) as checkpointer:
        checkpointer.save(2, middle)
        restored = checkpointer.restore(jax.eval_shape(trainer.init_state, jax.random.PRNGKey(0), hp))
    resumed, _ = chunk(jax.tree.map(jnp.asarray, restored), hp)
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    for params in (straight.critic_params, straight.policy_params["mean"], straight.policy_params["logvar"]):
        assert params["params"]["out"]["kernel"].shape[0] == 8  # trained, not replaced by an MLP
    assert not np.array_equal(straight.critic_params["params"]["out"]["kernel"],
                              state0.critic_params["params"]["out"]["kernel"])
    assert not np.array_equal(straight.policy_params["mean"]["params"]["out"]["kernel"],
                              state0.policy_params["mean"]["params"]["out"]["kernel"])

    # the policy export names its custom networks and takes them back
    act = make_policy(straight, trainer=trainer)
    path = save_policy(tmp_path / "custom.npz", act)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert "networks=Networks(logvar=..., mean=...)" in _one_line(err)
    with pytest.raises(PolicyError) as err:
        load_policy(path, networks=Networks(mean=Tiny(1), logvar=Tiny(2)))
    assert "networks.logvar" in _one_line(err)
    obs = _observations()
    np.testing.assert_array_equal(load_policy(path, networks=NETWORKS)(obs), act(obs))


def test_bad_custom_networks_are_one_line_errors():
    class Wide(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(x)

    cases = [
        (Networks(mean=Wide()), "networks.mean maps a [1, 3] input to shape [1, 3]; expected [1, 1]"),
        (Networks(critic=Tiny(2)), "networks.critic maps a [1, 4] input to shape [1, 2]; expected [1, 1]"),
        (Networks(critic=7), "networks.critic must be a flax.linen Module or an (init, apply) pair"),
        (Networks(policy=Tiny(2)), "give networks.mean and networks.logvar"),
        (Networks(logvar=(lambda key, x: {"w": jnp.zeros((5, 1))}, lambda p, x: x @ p["w"])), "fails on a [1, 3]"),
        ({"mean": Tiny(1)}, "networks must be ppocma_jax.Networks"),
    ]
    for networks, words in cases:
        with pytest.raises(ConfigError) as err:
            Trainer.build(CUSTOM, networks=networks)
        assert words in _one_line(err)
    with pytest.raises(ConfigError) as err:
        Trainer.build(CUSTOM.__class__(**{**CUSTOM.__dict__, "policy_init": "analytic"}), networks=NETWORKS)
    assert "policy_init='pretrain'" in _one_line(err)
    # the other kinds: PPO's one network (2d outputs: raw mean, raw log-variance), discrete logits
    ppo = Config(env="gymnax/Pendulum-v1", mode="PPO", max_steps=512, iter_steps=128, n_envs=4)
    assert Trainer.build(ppo, networks=Networks(policy=Tiny(2))).policy.networks()["joint"].out_dim == 2
    with pytest.raises(ConfigError) as err:
        Trainer.build(ppo, networks=Networks(mean=Tiny(1)))
    assert "give networks.policy" in _one_line(err)
    cartpole = Config(env="gymnax/CartPole-v1", mode="PPO", max_steps=512, iter_steps=128, n_envs=4)
    trainer = Trainer.build(cartpole, networks=Networks(policy=Tiny(2)))
    params = trainer.policy.init(jax.random.PRNGKey(0), HParams().as_arrays())
    assert trainer.policy.deterministic(params, jnp.zeros((5, 4))).shape == (5,)
