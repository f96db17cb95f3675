"""Env objects instead of registered names: a gymnax Environment subclass (tests/env_factories.py), our Env
protocol, a Brax env object, factories named on the CLI (`--env module:factory`), and one-line errors for objects
and factories that fit none (envs.wrap_env, envs/factory.py, make_train(config, env=...))."""

import jax
import numpy as np
import pytest
from env_factories import ReachTarget, TargetParams

from ppocma_jax import Config, make_train
from ppocma_jax.envs import EnvError, UnknownEnvError, make_env, wrap_env


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


def test_brax_env_object_with_a_changed_parameter_trains_and_resumes_exactly(tmp_path):
    """A Brax env built by the user with a changed parameter (n_frames, physics steps per env step) trains through
    Trainer.build(config, env=...) with our time limit, and a checkpoint of iteration 1 continued for one more
    iteration equals two uninterrupted iterations bit for bit. One compiled one-iteration chunk serves both paths
    (Brax compiles are slow)."""
    pytest.importorskip("brax")
    from brax import envs

    from ppocma_jax import HParams
    from ppocma_jax.checkpoint import Checkpointer
    from ppocma_jax.train import Trainer

    raw = envs.get_environment("inverted_pendulum", backend="spring", n_frames=3)
    env = wrap_env(raw, name="pendulum-3frames", episode_length=50)
    assert env.spec.name == "pendulum-3frames" and env.spec.max_episode_steps == 50 and env.backend == "spring"
    assert env.spec.obs_dim == 4 and env.spec.action_dim == 1
    config = Config(env="pendulum-3frames", max_steps=256, iter_steps=128, n_envs=8, n_updates=5, batch_size=64,
                    hidden_units=16, pretrain_steps=10, history_buffer_size=2, eval_every=0)
    trainer = Trainer.build(config, env=env)
    hp = HParams().as_arrays()
    one_iteration = jax.jit(lambda st: trainer.run(st, hp, 1))
    state = jax.jit(trainer.init_state)(jax.random.PRNGKey(0), hp)
    after_one, m1 = one_iteration(state)
    with Checkpointer(tmp_path / "ckpt") as checkpointer:
        checkpointer.save(1, after_one)
        restored = checkpointer.restore(jax.eval_shape(lambda: after_one))
    resumed, _ = one_iteration(restored)
    straight, m2 = one_iteration(after_one)
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(straight.iteration) == 2
    returns = np.concatenate([np.asarray(m1["mean_return"]), np.asarray(m2["mean_return"])])
    assert np.all(np.asarray(m2["finite"]) == 1)
    # episodes end by falling over or at the 50-step limit
    assert np.all(np.isnan(returns) | ((returns >= 1.0) & (returns <= 50.0))), returns
    with pytest.raises(EnvError, match="episode_length applies to Brax env objects only"):
        wrap_env(ReachTarget(), episode_length=10)


FACTORY_RUN = ["--env", "tests.env_factories:reach_target", "--iter-steps", "128", "--n-envs", "8", "--n-updates",
               "20", "--eval_every", "0", "--checkpoint-every", "4", "--quiet"]


def test_a_factory_env_learns_through_the_cli_and_resumes_from_config_json(tmp_path, monkeypatch, capsys):
    """`--env module:factory` trains the factory's env; config.json records the spec, so --resume rebuilds it."""
    import json

    from ppocma_jax.cli import main
    from ppocma_jax.monitor import read_metrics_csv

    monkeypatch.chdir(__import__("pathlib").Path(__file__).parent.parent)  # `tests.` resolves from the repo root
    out = tmp_path / "run"
    assert main(FACTORY_RUN + ["--max-steps", "1024", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["env"] == "tests.env_factories:reach_target"
    assert main(["--resume", str(out), "--max-steps", "2048", "--quiet"]) == 0
    r = np.array([row["mean_return"] for row in read_metrics_csv(out / "metrics.csv")])
    assert len(r) == 16 and np.all(np.isfinite(r))
    assert r[0] < -3 and r[-3:].mean() > r[0] / 3, r  # random actions score about -6.7 (see above)


@pytest.mark.parametrize("spec, words", [
    ("tests.no_such_module:f", "cannot import module 'tests.no_such_module'"),
    ("tests.env_factories:missing", "has no attribute 'missing'"),
    ("tests.env_factories:NOT_CALLABLE", "is a int, not a callable"),
    ("tests.env_factories:broken", "raised RuntimeError: simulator licence not found"),
    ("tests.env_factories:not_an_env", "returned an unusable object: int is not an environment"),
    ("tests.env_factories:", "must be 'module.path:callable'"),
    ("no/such/file.py:make", "no file"),
])
def test_bad_env_factories_are_one_line_exit_2_and_leave_no_run_directory(spec, words, tmp_path, monkeypatch,
                                                                           capsys):
    from ppocma_jax.cli import main

    monkeypatch.chdir(__import__("pathlib").Path(__file__).parent.parent)
    assert main(["--env", spec, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()
    with pytest.raises(UnknownEnvError):
        make_env(spec)


def test_a_factory_file_path_is_recorded_absolute(tmp_path):
    from ppocma_jax.envs import canonical_env_name

    path = tmp_path / "my_env.py"
    path.write_text("from gymnax.environments.classic_control import pendulum\n"
                    "def make():\n    return pendulum.Pendulum()\n")
    spec = canonical_env_name(f"{path}:make")
    assert spec == f"{path.resolve()}:make"
    env = make_env(spec)
    assert env.spec.name == spec and env.spec.obs_dim == 3 and env.spec.action_dim == 1


def test_an_edited_factory_env_is_traced_again_not_served_stale_from_the_compile_cache(tmp_path):
    """The CLI keeps traced programs keyed by what it knows (config, our source, package versions); a factory's code
    is the user's, edited between runs. Two processes, one cache: the second must train the edited env."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env_file = tmp_path / "my_env.py"
    source = ("from tests.env_factories import ReachTarget, TargetParams\n"
              "def make():\n    return ReachTarget(), TargetParams(scale={})\n")
    environ = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    returns = []
    for k, scale in enumerate((1.0, 100.0)):
        env_file.write_text(source.format(scale))
        out = tmp_path / f"run{k}"
        proc = subprocess.run([sys.executable, "-m", "ppocma_jax", "--env", f"{env_file}:make", "--max-steps", "256",
                               "--iter-steps", "256", "--n-envs", "4", "--n-updates", "1", "--hidden-units", "8",
                               "--pretrain-steps", "10", "--eval-every", "0", "--quiet", "--out", str(out)],
                              capture_output=True, text=True, env=environ, cwd=root, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        returns.append(json.loads((out / "result.json").read_text())["final_return"])
    # the one iteration's rollout acts before any update: same actions and targets, rewards scaled 100x
    np.testing.assert_allclose(returns[1], 100 * returns[0], rtol=1e-4)
