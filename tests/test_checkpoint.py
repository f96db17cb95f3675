"""Checkpoints and --resume: a killed-and-resumed run ends in exactly the state of an uninterrupted one."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from ppocma_jax.checkpoint import Checkpointer
from ppocma_jax.cli import main
from ppocma_jax.train import Trainer

RUN = ["--env", "gymnax/Pendulum-v1", "--iter-steps", "800", "--n-envs", "4", "--n-updates", "5",
       "--hidden-units", "16", "--pretrain-steps", "20", "--checkpoint-every", "2", "--quiet"]


def restore(run_dir, iteration=None):
    from ppocma_jax.rundir import load_config

    config, hparams, _ = load_config(Path(run_dir))
    trainer = Trainer.build(config)
    like = jax.eval_shape(trainer.init_state, jax.random.PRNGKey(0), hparams.as_arrays())
    checkpointer = Checkpointer(run_dir)
    try:
        return checkpointer.restore(like, iteration), checkpointer.latest_iteration()
    finally:
        checkpointer.close()


def iterations(run_dir):
    with open(Path(run_dir) / "metrics.csv") as fh:
        return [int(r["iteration"]) for r in csv.DictReader(fh)]


def assert_same_state(a, b):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full") / "run"
    assert main(RUN + ["--max-steps", "4800", "--tensorboard", "--out", str(run_dir)]) == 0
    return run_dir


def test_uninterrupted_run_checkpoints_the_full_state(uninterrupted):
    state, latest = restore(uninterrupted)
    assert latest == 6 and int(state.iteration) == 6 and int(state.env_steps) == 4800
    assert iterations(uninterrupted) == [1, 2, 3, 4, 5, 6]
    # the full state: both policy nets, critic, three Adam states, scaler, history, env, key
    assert set(state.opt_states) == {"critic", "mean", "logvar"}
    assert int(state.scaler.count) == 6 and int(state.history.filled) == 6


def test_stop_then_resume_with_more_steps_equals_uninterrupted(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    assert main(RUN + ["--max-steps", "2400", "--out", str(run_dir)]) == 0  # 3 iterations, checkpoint at 2 and 3
    assert main(["--resume", str(run_dir), "--max-steps", "4800", "--quiet"]) == 0
    assert iterations(run_dir) == [1, 2, 3, 4, 5, 6]
    assert_same_state(restore(run_dir)[0], restore(uninterrupted)[0])


def test_sigkill_then_resume_equals_uninterrupted(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "ppocma_jax"] + RUN + ["--max-steps", "4800", "--out", str(run_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "2" / "commit_success.txt").exists():  # first checkpoint complete
        assert proc.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(iterations(run_dir))
    assert killed_at < 6
    assert main(["--resume", str(run_dir), "--quiet"]) == 0
    assert iterations(run_dir) == [1, 2, 3, 4, 5, 6]  # no gap, no duplicate
    assert_same_state(restore(run_dir)[0], restore(uninterrupted)[0])


def test_a_half_written_checkpoint_is_ignored(uninterrupted, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    # what a kill during a save leaves behind: orbax's temporary directory without its commit marker
    partial = run_dir / "checkpoints" / "8.orbax-checkpoint-tmp-1234567"
    (partial / "default").mkdir(parents=True)
    (partial / "default" / "_METADATA").write_text("{ truncated")
    state, latest = restore(run_dir)
    assert latest == 6 and int(state.iteration) == 6


def test_resume_errors_are_one_line(tmp_path, capsys, uninterrupted):
    assert main(["--resume", str(tmp_path / "nothing")]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["--resume", str(uninterrupted), "--mode", "PPO"]) == 2
    assert "only --max-steps" in capsys.readouterr().err
    assert main(RUN + ["--max-steps", "1600", "--out", str(uninterrupted)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_run_directory_artefacts(uninterrupted):
    import json

    assert (uninterrupted / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [1, 2, 3, 4, 5, 6]
    # deterministic evaluation at the last iteration only (eval_every 10 > 6 iterations); null elsewhere
    assert [r["eval_return"] is None for r in lines] == [True] * 5 + [False]
    assert lines[-1]["eval_return"] < 0
    assert list((uninterrupted / "tensorboard").glob("events.out.tfevents.*"))


def test_evaluate_cli_is_deterministic(uninterrupted, capsys):
    from ppocma_jax.evaluate import main as evaluate_main

    assert evaluate_main([str(uninterrupted), "--episodes", "3"]) == 0
    first = capsys.readouterr().out
    assert evaluate_main([str(uninterrupted), "--episodes", "3"]) == 0
    assert capsys.readouterr().out == first and "deterministic return" in first
    assert evaluate_main([str(uninterrupted), "--episodes", "3", "--stochastic"]) == 0
    assert "stochastic return" in capsys.readouterr().out
    assert evaluate_main([str(uninterrupted / "nope")]) == 2


def test_plot_cli_overlays_runs(uninterrupted, tmp_path):
    from ppocma_jax.plot import main as plot_main

    out = tmp_path / "both.png"
    assert plot_main([str(uninterrupted), str(uninterrupted), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert plot_main([str(tmp_path / "missing"), "--out", str(out)]) == 2
