"""Command line: flags and their original spellings, the run directory, and one-line errors for bad input."""

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import tiny

from ppocma_jax import METRIC_NAMES, make_train
from ppocma_jax.cli import main, parse_args


def test_run_py_spellings_and_dashed_spellings_parse_to_the_same_config():
    _, cfg_a, hp_a = parse_args(["--env_name", "Pendulum-v1", "-m", "PPO", "-lr", "1e-3", "--ppo_epsilon", "0.1",
                                 "--ppo_ent_l_w", "0.01", "--max_steps", "1e5", "--iter_steps", "2000",
                                 "--batch_size", "128", "--history_buffer_size", "3", "--n_updates", "50"])
    _, cfg_b, hp_b = parse_args(["--env", "gymnax/Pendulum-v1", "--mode", "PPO", "--learning-rate", "1e-3",
                                 "--ppo-epsilon", "0.1", "--entropy-weight", "0.01", "--max-steps", "100000",
                                 "--iter-steps", "2000", "--batch-size", "128", "--history-buffer-size", "3",
                                 "--n-updates", "50"])
    assert cfg_a == cfg_b and hp_a == hp_b
    assert cfg_a.env == "gymnax/Pendulum-v1" and cfg_a.max_steps == 100_000 and cfg_a.batch_size == 128
    assert hp_a.learning_rate == 1e-3 and hp_a.critic_learning_rate == 1e-3  # -lr sets both, as the original
    assert hp_a.ppo_epsilon == 0.1 and hp_a.entropy_weight == 0.01
    _, _, hp_c = parse_args(["-lr", "1e-3", "--critic-learning-rate", "2e-3"])
    assert hp_c.critic_learning_rate == 2e-3


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--env_name", "-m", "-lr", "--learning_rate", "--ppo_epsilon", "--ppo_ent_l_w", "--max_steps",
                 "--iter_steps", "--batch_size", "--history_buffer_size", "--n_updates", "--run_suffix", "--render",
                 "--max-steps", "--learning-rate", "--seed", "--out", "--kernel-scale", "--n-envs"):
        assert flag in out


@pytest.mark.parametrize("argv,needle", [
    (["--mode", "PPO-XYZ"], "choose from"),
    (["--env", "gymnax/NoSuchEnv"], "valid: CartPole-v1"),
    (["--env", "nosuite/Foo"], "valid suites"),
    (["--env", "gymnax/CartPole-v1"], "needs continuous actions"),
    (["--max-steps", "lots"], "not a number"),
    (["--max-steps", "1.5"], "not a whole number"),
    (["--n-envs", "0"], "n_envs must be a positive integer"),
    (["--iter-steps", "1000", "--n-envs", "3"], "not divisible"),
    (["--iter-steps", "4000", "--max-steps", "100"], "smaller than one iteration"),
    (["--gamma", "1.5"], "gamma must be in [0, 1]"),
    (["-lr", "nan"], "learning_rate must be finite"),
    (["--activation", "sigmoid"], "valid: lrelu"),
    (["--wandb-project", "x"], "--wandb-project is given without --wandb"),
    (["--seed", "-1"], "seed must be an integer in [0, 2**32)"),
    (["--env", "gymnax/Pendulum-v1", "--initial-mean", "5"], "strictly inside the action box"),
    (["--env", "gymnax/Pendulum-v1", "--initial-std", "nan"], "initial_std must be finite"),
    (["--env", "gymnax/Pendulum-v1", "--sigma-min", "5"], "sigma_min=5.0 must be below sigma_max"),
    (["--env", "gymnax/CartPole-v1", "--mode", "PPO", "--initial-std", "1"], "for continuous actions"),
    (["--preset", "nonsense"], "unknown preset"),
    (["--env", "gymnax/Pendulum-v1", "--env_name", "gymnax/CartPole-v1"], "--env and --env_name set the same"),
    (["-lr", "1e-3", "--learning-rate", "1e-4"], "-lr and --learning-rate set the same"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be >= 0"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m ppocma_jax: error:"), err
    assert needle in err and "Traceback" not in err


def test_bad_input_from_the_shell_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "ppocma_jax", "--env", "gymnax/Nope"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_list_envs(capsys):
    assert main(["--list-envs"]) == 0
    out = capsys.readouterr().out
    assert "gymnax/Pendulum-v1" in out and "box(1) in [-2, 2]" in out and "discrete(2)" in out


SHORT_RUN = [sys.executable, "-m", "ppocma_jax", "--env", "gymnax/Pendulum-v1", "--max-steps", "1600", "--iter-steps",
             "800", "--n-envs", "4", "--n-updates", "5", "--hidden-units", "16", "--pretrain-steps", "20"]


def test_short_run_writes_the_run_directory_and_a_second_run_loads_its_program_from_the_cache(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(SHORT_RUN + ["--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "compiled in" in proc.stdout and "result: final mean return" in proc.stdout
    assert f"compile cache: {os.environ['PPOCMA_JAX_COMPILE_CACHE']}" in proc.stdout  # tests/conftest.py's
    again = subprocess.run(SHORT_RUN + ["--out", str(tmp_path / "again")], capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and "s CPU) (from cache); initialised in" in again.stdout, again.stdout + again.stderr
    assert _without_wall(tmp_path / "again") == _without_wall(out)
    assert "iter 2/2" in proc.stdout
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["env"] == "gymnax/Pendulum-v1" and saved["hparams"]["learning_rate"] == 5e-4
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert [int(r["env_steps"]) for r in rows] == [800, 1600]
    for col in ("iteration", "env_steps", "wall_s", "mean_return", "episodes", "policy_std"):
        assert col in rows[0]
    assert int(rows[0]["episodes"]) == 4 and float(rows[0]["mean_return"]) < 0  # 200-step episodes: 4 envs
    assert float(rows[1]["wall_s"]) >= float(rows[0]["wall_s"]) >= 0
    assert (out / "checkpoints" / "2" / "commit_success.txt").exists()  # the final full state
    result = json.loads((out / "result.json").read_text())
    assert result["env_steps"] == 1600 and result["compile_s"] > 0
    assert result["env"] == "gymnax/Pendulum-v1" and result["mode"] == "PPO-CMA-m"
    assert result["final_eval_return"] == pytest.approx(float(rows[-1]["eval_return"]), rel=1e-5)
    assert "--max-steps 1600" in json.loads((out / "config.json").read_text())["provenance"]["command"]


def test_a_cli_run_equals_the_whole_loop_program_evaluation_included(tmp_path):
    """The CLI runs one iteration per compiled chunk and the evaluation as a program of its own between chunks;
    make_train runs the whole loop, evaluation inlined, as one program. Same seed, same rows."""
    out = tmp_path / "run"
    assert main(tiny.cli_flags(tiny.TINY) + ["--quiet", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    _, whole = jax.jit(make_train(tiny.tiny_config()))(jax.random.PRNGKey(0))
    assert [r["eval_return"] == "" for r in rows] == [True, False]  # eval_every 10: after the last iteration only
    for name in METRIC_NAMES:
        cli = [float(r[name]) if r[name] != "" else np.nan for r in rows]
        np.testing.assert_allclose(cli, np.asarray(whole[name], np.float64), rtol=1e-4, err_msg=name)


def _without_wall(run_dir):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader((run_dir / "metrics.csv").open())]


def test_nan_in_training_exits_1_names_the_iteration_and_keeps_the_last_good_state(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--env", "gymnax/Pendulum-v1", "--max-steps", "1600", "--iter-steps", "800", "--n-envs", "4",
                 "--n-updates", "5", "--hidden-units", "16", "--pretrain-steps", "20", "--critic-learning-rate",
                 "1e30", "--quiet", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "NaN/Inf at iteration 1" in err and "last good state (after iteration 0)" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["0"]  # the last good state
    assert json.loads((out / "result.json").read_text())["nonfinite_at_iteration"] == 1


def test_unwritable_output_directory_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["--env", "gymnax/Pendulum-v1", "--out", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write the run directory" in err


def test_version_flag_prints_the_package_version(capsys):
    from ppocma_jax import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"ppocma_jax {__version__}\n"


def test_a_resume_that_continues_removes_the_earlier_result_and_a_finished_one_keeps_it(tmp_path, capsys):
    """result.json / summary.json of an earlier segment must not look current once a resume trains on (a stop with
    SIGINT then leaves no finished-looking result); --resume of a finished run changes nothing."""
    from ppocma_jax.config import Config, HParams, to_jsonable
    from ppocma_jax.rundir import RunDir

    config = Config(env="gymnax/Pendulum-v1", max_steps=8000, iter_steps=2000)
    document = dict(to_jsonable(config, HParams()), checkpoint_every=2)
    (tmp_path / "config.json").write_text(json.dumps(document))
    (tmp_path / "result.json").write_text('{"final_return": 1.0}\n')
    (tmp_path / "summary.json").write_text("{}\n")
    run = RunDir(tmp_path, json.loads(json.dumps(document)))
    assert run.resume_point(config, 4, {}) is True  # finished: nothing written
    assert "is finished" in capsys.readouterr().out
    assert (tmp_path / "result.json").read_text() == '{"final_return": 1.0}\n'
    assert json.loads((tmp_path / "config.json").read_text()) == document
    longer = config.replace(max_steps=16000)
    assert run.resume_point(longer, 4, {"max_steps": [8000, 16000]}) is False
    assert not (tmp_path / "result.json").exists() and not (tmp_path / "summary.json").exists()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"]["max_steps"] == 16000
    assert saved["continued"] == [{"after_iteration": 4, "changed": {"max_steps": [8000, 16000]}}]


def test_provenance_names_the_versions_devices_and_command():
    import jax

    from ppocma_jax import __version__
    from ppocma_jax.rundir import provenance

    record = provenance(["--env", "gymnax/Pendulum-v1", "--out", "runs/a b"])
    assert record["ppocma_jax"] == __version__ and record["jax"] == jax.__version__ and record["jaxlib"]
    assert record["command"] == "python -m ppocma_jax --env gymnax/Pendulum-v1 --out 'runs/a b'"
    assert jax.default_backend() in record["devices"]
    assert record["git_commit"] is None or len(record["git_commit"]) == 40
