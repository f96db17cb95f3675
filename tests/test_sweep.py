"""Seeds and hyperparameter sweeps in one compiled program."""

import csv
import json

import jax
import numpy as np
import pytest
import tiny
from tiny import cli_flags

from ppocma_jax import ConfigError, HParams, make_train
from ppocma_jax.cli import main
from ppocma_jax.sweep import expand_seeds, hparams_grid, parse_sweep, random_hparams, summarize, take_run

TINY = cli_flags(tiny.TINY) + ["--quiet"]


def test_grid_is_the_product_and_learning_rate_moves_the_critic_rate():
    settings, labels = hparams_grid(learning_rate=[1e-4, 1e-3], gamma=[0.9, 0.99])
    assert labels == [{"learning_rate": 1e-4, "gamma": 0.9}, {"learning_rate": 1e-4, "gamma": 0.99},
                      {"learning_rate": 1e-3, "gamma": 0.9}, {"learning_rate": 1e-3, "gamma": 0.99}]
    assert [s.critic_learning_rate for s in settings] == [1e-4, 1e-4, 1e-3, 1e-3]
    runs = expand_seeds(settings, labels, seeds=[5, 6])
    assert len(runs) == 8 and runs.hparams.gamma.shape == (8,)
    assert [lb["seed"] for lb in runs.labels[:3]] == [5, 6, 5] and runs.labels[2]["setting"] == 1
    assert take_run(runs.hparams, 3).learning_rate == pytest.approx(1e-4)


def test_random_settings_are_reproducible_and_inside_their_ranges():
    a, la = random_hparams(5, seed=1)
    b, lb = random_hparams(5, seed=1)
    assert la == lb and len(set(s.learning_rate for s in a)) == 5
    assert all(1e-4 <= s.learning_rate <= 3e-3 and 0.8 <= s.gae_lambda <= 1.0 for s in a)


def test_sweep_spec_errors_name_the_valid_fields():
    assert parse_sweep("lr=1e-3,3e-3") == ("learning_rate", [1e-3, 3e-3])
    with pytest.raises(ConfigError, match="sweepable fields are the hyperparameters"):
        parse_sweep("n_envs=4,8")
    with pytest.raises(ConfigError, match="values must be numbers"):
        parse_sweep("gamma=high")
    with pytest.raises(ConfigError, match="NAME=v1,v2"):
        parse_sweep("gamma")


def test_summary_orders_settings_best_first():
    labels = [{"setting": s, "seed": k, "learning_rate": lr} for s, lr in ((0, 1e-4), (1, 1e-3)) for k in (0, 1)]
    table = summarize(labels, [-300.0, -100.0, -50.0, -70.0], ["learning_rate"])
    assert [row["setting"] for row in table] == [1, 0]
    assert table[0]["mean"] == pytest.approx(-60.0) and table[1]["min"] == -300.0


def test_cli_sweep_runs_as_one_program_and_each_run_equals_its_single_run(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(TINY + ["--seeds", "2", "--sweep", "learning_rate=1e-4,3e-3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "best setting: learning_rate=" in printed
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 2 * 4  # iterations x runs
    assert {"run", "setting", "seed", "learning_rate"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["runs"]) == 4 and len(summary["settings"]) == 2
    assert (out / "curve.png").exists()
    # the run with lr 3e-3 and seed 1 is exactly the single run with that key and setting
    mine = [r for r in rows if float(r["learning_rate"]) == 3e-3 and int(r["seed"]) == 1]
    config = tiny.tiny_config()
    _, single = jax.jit(make_train(config))(jax.random.PRNGKey(1),
                                            HParams(learning_rate=3e-3, critic_learning_rate=3e-3))
    np.testing.assert_allclose([float(r["policy_std"]) for r in mine], np.asarray(single["policy_std"]),
                               rtol=1e-4)
    np.testing.assert_allclose([float(r["critic_loss"]) for r in mine], np.asarray(single["critic_loss"]),
                               rtol=1e-3)
    # the CLI evaluates between its chunks, in a program of its own; make_train inside its loop: the same returns
    assert [r["eval_return"] == "" for r in mine] == [True, False]  # evaluated after the last iteration only
    np.testing.assert_allclose(float(mine[-1]["eval_return"]), float(single["eval_return"][-1]), rtol=1e-5)


@pytest.mark.parametrize("argv,needle", [
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--sweep", "learning_rate=1e-3", "--sweep-random", "3"], "either --sweep or --sweep-random"),
    (["--sweep", "hidden_units=8,16"], "sweepable fields"),
    (["--sweep", "sigma_min=10"], "sigma_min=10.0 must be below sigma_max"),
])
def test_sweep_bad_input_is_one_line(argv, needle, tmp_path, capsys):
    assert main(TINY + argv + ["--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_a_diverging_run_stops_alone_and_the_others_finish(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(TINY + ["--seeds", "2", "--sweep", "critic_learning_rate=5e-4,1e30", "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "in 2 of 4 runs" in err and "Traceback" not in err
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    healthy = [r for r in rows if float(r["critic_learning_rate"]) == 5e-4]
    assert all(r["finite"] == "1" for r in healthy) and len(healthy) == 4  # 2 seeds x 2 iterations
    assert all(r["finite"] == "0" for r in rows if float(r["critic_learning_rate"]) == 1e30)
