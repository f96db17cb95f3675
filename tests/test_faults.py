"""Faults below the run lifecycle: damaged checkpoints, overwrites, a full disk, Ctrl-C during a write, absurd
sizes, a second writer, and the Agent's load / save / input errors. Each ends in one line (an exception with a
one-line message), never a traceback or a hang, and leaves a directory that restores.

Compile time dominates: one tiny configuration, one compiled one-iteration program shared by every test."""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from tiny import FAULTS, cli_flags, tiny_config

from ppocma_jax.checkpoint import (CheckpointError, CheckpointMismatchError, CheckpointNoSpaceError, Checkpointer,
                                   _HOST)
from ppocma_jax.config import Config, ConfigError, HParams
from ppocma_jax.train import Trainer, make_train

CONFIG = tiny_config(FAULTS, eval_every=0, max_steps=2400)
REPO = Path(__file__).resolve().parents[1]


def assert_same_state(a, b):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


def one_line(err: BaseException) -> str:
    text = str(err.value if hasattr(err, "value") else err)
    assert "\n" not in text and len(text) < 400, text
    return text


@pytest.fixture(scope="module")
def run():
    """States after iterations 0..3 of one seed, computed by one compiled one-iteration program."""
    trainer = Trainer.build(CONFIG)
    hp = HParams().as_arrays()
    step = jax.jit(lambda st, h: trainer.run(st, h, 1)[0])
    states = [jax.device_get(jax.jit(trainer.init_state)(jax.random.PRNGKey(0), hp))]
    for _ in range(3):  # host (numpy) inputs, as a restored checkpoint gives: one compiled program serves both
        states.append(jax.device_get(step(states[-1], hp)))
    like = jax.eval_shape(trainer.init_state, jax.random.PRNGKey(0), hp)
    return {"trainer": trainer, "hp": hp, "step": step, "states": states, "like": like}


@pytest.fixture(scope="module")
def saved(run, tmp_path_factory):
    """A run directory with checkpoints 1 and 2 (what a run with --checkpoint-every 1 keeps after iteration 2)."""
    run_dir = tmp_path_factory.mktemp("saved") / "run"
    with Checkpointer(run_dir) as checkpointer:
        for i in (1, 2):
            checkpointer.save(i, run["states"][i])
    return run_dir


def copy_run(saved, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(saved, run_dir)
    return run_dir


def largest_data_file(step_dir: Path) -> Path:
    return max((p for p in (step_dir / "default").rglob("*") if p.is_file() and p.parent.name == "d"),
               key=lambda p: p.stat().st_size)


def truncate(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


DAMAGE = {
    "deleted data file": lambda d: largest_data_file(d).unlink(),
    "truncated data file": lambda d: truncate(largest_data_file(d)),
    "deleted _METADATA": lambda d: (d / "default" / "_METADATA").unlink(),
    "truncated manifest.ocdbt": lambda d: truncate(d / "default" / "manifest.ocdbt"),
    "missing item folder": lambda d: shutil.rmtree(d / "default"),
}


# ---------------------------------------------------------------- damaged checkpoints
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_restore_latest_falls_back_past_a_damaged_checkpoint(run, saved, tmp_path, damage):
    run_dir = copy_run(saved, tmp_path)
    DAMAGE[damage](run_dir / "checkpoints" / "2")
    with Checkpointer(run_dir) as checkpointer:
        with pytest.raises(CheckpointError, match="checkpoint 2 .* is damaged") as err:
            checkpointer.restore(run["like"], 2)  # the plain restore: one line, no fallback
        one_line(err)
        iteration, state, skipped = checkpointer.restore_latest(run["like"])
    assert iteration == 1
    assert_same_state(state, run["states"][1])
    assert len(skipped) == 1 and skipped[0].startswith("checkpoint 2 is damaged") and "\n" not in skipped[0]
    assert "moved to checkpoints/2.damaged" in skipped[0]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["1", "2.damaged"]


def test_continuing_from_the_fallback_equals_an_uninterrupted_run(run, saved, tmp_path):
    run_dir = copy_run(saved, tmp_path)
    truncate(largest_data_file(run_dir / "checkpoints" / "2"))
    with Checkpointer(run_dir) as checkpointer:
        iteration, state, _ = checkpointer.restore_latest(run["like"])
        for i in (2, 3):  # redo iteration 2, then go on; the damaged folder no longer blocks saving 2
            state = jax.device_get(run["step"](state, run["hp"]))
            checkpointer.save(i, state)
        assert checkpointer.steps() == [2, 3]
        assert_same_state(checkpointer.restore(run["like"], 3), run["states"][3])
    assert_same_state(state, run["states"][3])


def test_no_readable_checkpoint_means_a_fresh_start_in_the_same_directory(run, saved, tmp_path):
    run_dir = copy_run(saved, tmp_path)
    DAMAGE["deleted _METADATA"](run_dir / "checkpoints" / "2")
    DAMAGE["truncated data file"](run_dir / "checkpoints" / "1")
    with Checkpointer(run_dir) as checkpointer:
        restored = checkpointer.restore_latest(run["like"])
        assert restored.iteration is None and restored.state is None
        assert [line.split(" is ")[0] for line in restored.skipped] == ["checkpoint 2", "checkpoint 1"]
        checkpointer.save(1, run["states"][1])  # the restarted run checkpoints as usual
        assert checkpointer.restore_latest(run["like"]).iteration == 1


DAMAGED_RESTORE = textwrap.dedent("""
    import os, sys, numpy as np
    from pathlib import Path
    from ppocma_jax.checkpoint import Checkpointer
    rng = np.random.default_rng(0)
    state = {f"w{i}": rng.random(1000 * (i + 1), np.float32) for i in range(80)}  # many reads in flight
    checkpointer = Checkpointer(sys.argv[1])
    checkpointer.save(1, state)
    checkpointer.save(2, state)
    data = max((p for p in Path(sys.argv[1]).rglob("*") if p.parent.name == "d" and "/2/" in str(p)),
               key=lambda p: p.stat().st_size)
    os.truncate(data, data.stat().st_size // 2)
    iteration, _, skipped = checkpointer.restore_latest(state)
    print(iteration, *skipped, sep="\\n")
""")


def test_a_damaged_checkpoint_prints_nothing_but_the_callers_line(tmp_path):
    """tensorstore's late callbacks into orbax's closed event loop would print a traceback apiece on stderr."""
    proc = subprocess.run([sys.executable, "-c", DAMAGED_RESTORE, str(tmp_path / "run")], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "1" and len(lines) == 2 and lines[1].startswith("checkpoint 2 is damaged (")


def test_a_checkpoint_of_another_configuration_is_refused_not_moved(saved, tmp_path):
    run_dir = copy_run(saved, tmp_path)
    other = Trainer.build(CONFIG.replace(hidden_units=8))
    like = jax.eval_shape(other.init_state, jax.random.PRNGKey(0), HParams().as_arrays())
    with Checkpointer(run_dir) as checkpointer:
        with pytest.raises(CheckpointMismatchError, match=r"checkpoint 2 .* does not match") as err:
            checkpointer.restore_latest(like)
    assert "float32[16] in it, float32[8] here" in one_line(err)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["1", "2"]


# ---------------------------------------------------------------- saving over a step, leftovers
def test_saving_an_existing_step_replaces_it(run, saved, tmp_path):
    """A NaN halt right after a checkpoint (or resuming a halted run) saves the last good iteration again."""
    run_dir = copy_run(saved, tmp_path)
    with Checkpointer(run_dir) as checkpointer:
        checkpointer.save(2, run["states"][2])  # the same state again: no StepAlreadyExistsError
        checkpointer.save(2, run["states"][3])  # a different state under that number replaces it
        assert_same_state(checkpointer.restore(run["like"], 2), run["states"][3])
        checkpointer.save(1, run["states"][1])  # the newest save is the run's present: later ones go
        assert checkpointer.steps() == [1]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["1"]


def test_stale_temporary_folders_are_cleaned_and_a_cut_overwrite_is_finished(run, saved, tmp_path):
    run_dir = copy_run(saved, tmp_path)
    ckpts = run_dir / "checkpoints"
    dead = 2 ** 22 + 12345  # above Linux's default pid_max: no such process
    (ckpts / "7.orbax-checkpoint-tmp-1700000000" / "default").mkdir(parents=True)  # the old manager's leftover
    (ckpts / f"5.saving-{_HOST}-{dead}-aaaa" / "default").mkdir(parents=True)  # killed mid-write (no marker)
    (ckpts / f"6.saving-{_HOST}-{os.getppid()}-bbbb").mkdir()  # a live writer's: left alone
    # killed between an overwrite's two renames: the old 2 moved away, the complete new one not yet in place
    (ckpts / "2").rename(ckpts / f"2.replaced-{_HOST}-{dead}-cccc")
    shutil.copytree(ckpts / "1", ckpts / f"2.saving-{_HOST}-{dead}-cccc")
    with Checkpointer(run_dir) as checkpointer:
        assert any("recovered checkpoint 2" in note for note in checkpointer.cleaned)
        assert checkpointer.steps() == [1, 2]
        assert_same_state(checkpointer.restore(run["like"], 2), run["states"][1])  # the new copy won
    assert sorted(p.name for p in ckpts.iterdir()) == ["1", "2", f"6.saving-{_HOST}-{os.getppid()}-bbbb"]
    with Checkpointer(run_dir, exclusive=True):  # the caller holds the run lock: every temporary is stale
        pass
    assert sorted(p.name for p in ckpts.iterdir()) == ["1", "2"]


# ---------------------------------------------------------------- full disk
def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(run, saved, tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    run_dir = copy_run(saved, tmp_path)

    def fill_the_disk(self, directory, *args, **kwargs):
        Path(directory).mkdir()
        (Path(directory) / "partial").write_bytes(b"x" * 1000)
        raise ValueError("RESOURCE_EXHAUSTED: Failed writing: No space left on device [os_error_code='28']")

    monkeypatch.setattr(ocp.Checkpointer, "save", fill_the_disk)
    with Checkpointer(run_dir) as checkpointer:
        with pytest.raises(CheckpointNoSpaceError) as err:
            checkpointer.save(3, run["states"][3])
        assert one_line(err) == f"no space left on device writing {run_dir.absolute() / 'checkpoints' / '3'}"
        assert err.value.errno == errno.ENOSPC and isinstance(err.value, CheckpointError)
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["1", "2"]  # nothing partial
        monkeypatch.undo()
        assert_same_state(checkpointer.restore_latest(run["like"]).state, run["states"][2])


def test_a_real_full_disk(run, tmp_path):
    """The same on a 1 MB tmpfs, where tensorstore itself hits ENOSPC (needs mount rights: root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        small = {"w": np.zeros(1000, np.float32)}
        with Checkpointer(mount / "run") as checkpointer:
            checkpointer.save(1, small)
            big = {"w": np.random.default_rng(0).random(1_000_000, dtype=np.float32)}  # 4 MB: does not fit
            with pytest.raises(CheckpointNoSpaceError, match="no space left on device writing"):
                checkpointer.save(2, big)
            assert checkpointer.steps() == [1]
            assert sorted(p.name for p in (mount / "run" / "checkpoints").iterdir()) == ["1"]
            checkpointer.save(3, small)  # the space came back: saving works again
            assert checkpointer.steps() == [1, 3]
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# ---------------------------------------------------------------- Ctrl-C during a write
INTERRUPTED_WRITER = textwrap.dedent("""
    import os, signal, sys, time, numpy as np
    import orbax.checkpoint as ocp

    # Ctrl-C as an interactive shell gives it: pytest-xdist's workers ignore SIGINT, and a child inherits that
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from ppocma_jax.checkpoint import Checkpointer

    orbax_save = ocp.Checkpointer.save
    def slow_disk(self, path, *args, **kwargs):  # the second write stays in flight for a minute: no race
        orbax_save(self, path, *args, **kwargs)
        if "2.saving-" in str(path):
            time.sleep(60)
    ocp.Checkpointer.save = slow_disk
    checkpointer = Checkpointer(sys.argv[1])
    checkpointer.save(1, {"w": np.zeros(1_000_000, np.float32)})
    print("writing", flush=True)
    try:
        checkpointer.save(2, {"w": np.ones(1_000_000, np.float32)})
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        checkpointer.close(abandon=True)
        os._exit(130)  # as python -m ppocma_jax leaves with a write in flight (Checkpointer.close)
""")


def test_ctrl_c_during_a_write_abandons_it_at_once(tmp_path):
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED_WRITER, str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "writing"
    deadline = time.time() + 60
    while not any(".saving-" in p.name for p in (run_dir / "checkpoints").iterdir()):  # the write is under way
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    t0 = time.time()
    out, err = proc.communicate(timeout=30)  # no hang
    assert time.time() - t0 < 15
    assert proc.returncode == 130 and out.strip() == "interrupted", (out, err)
    assert "Traceback" not in err and "cannot schedule new futures" not in err, err
    with Checkpointer(run_dir) as checkpointer:  # whatever the exit left is cleaned; checkpoint 1 is intact
        assert sorted(p.name for p in checkpointer.directory.iterdir()) == ["1"]
        assert not checkpointer.restore({"w": np.zeros(1_000_000, np.float32)}, 1)["w"].any()


# ---------------------------------------------------------------- sizes
@pytest.mark.parametrize("units", [10 ** 10, 10 ** 6])
def test_absurd_sizes_are_one_line_before_compiling(units):
    t0 = time.time()
    with pytest.raises(ConfigError, match=rf"hidden_units={units} .*needs ~[0-9.e+]+ GiB for the networks' "
                                          r"parameters.*; this machine has [0-9.]+ GiB available") as err:
        make_train(CONFIG.replace(hidden_units=units))
    one_line(err)
    assert time.time() - t0 < 5  # no compile, no allocation


def test_memory_estimate_counts_the_real_parameters_and_passes_sane_configs(run):
    from ppocma_jax.resources import FLOAT_BYTES, check_fits, estimate_memory

    trainer = run["trainer"]
    like = run["like"]
    sizes = [sum(int(np.prod(x.shape)) for x in jax.tree.leaves(net))
             for net in (*like.policy_params.values(), like.critic_params)]
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(like.opt_states)) >= 2 * sum(sizes)  # Adam moments
    estimate = estimate_memory(CONFIG, trainer.env.spec)
    assert estimate.parameters == FLOAT_BYTES * (2 * 3 * sum(sizes) + max(sizes))  # old + new state, 1 gradient
    history = like.history
    assert estimate.history == 2 * FLOAT_BYTES * sum(int(np.prod(x.shape)) for x in
                                                     (history.obs, history.actions, history.advantages))
    Trainer.build(Config(env="gymnax/Pendulum-v1"))  # the defaults fit
    check_fits(CONFIG, trainer.env.spec, runs=64)
    with pytest.raises(ConfigError, match=r"history_buffer_size=9 x iter_steps=800 .* PPO-CMA history buffer"):
        check_fits(CONFIG.replace(hidden_units=1), trainer.env.spec, available=estimate.history // 2)
    with pytest.raises(ConfigError, match=r"for the .*\(100 runs\).*; this machine has"):
        check_fits(CONFIG, trainer.env.spec, runs=100, available=estimate.total * 50)


# ---------------------------------------------------------------- one writer per run directory
HOLDER = textwrap.dedent("""
    import sys, time
    from ppocma_jax.runlock import RunLock
    lock = RunLock.acquire(sys.argv[1])
    print("locked", flush=True)
    time.sleep(120)
""")


def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_lock(tmp_path):
    from ppocma_jax.runlock import RunLock, RunLockError

    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockError, match=f"is in use by process {proc.pid}") as err:
            RunLock.acquire(tmp_path)
        one_line(err)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with RunLock.acquire(tmp_path) as lock:  # the kernel dropped the killed holder's lock
        assert lock.held
        with pytest.raises(RunLockError, match="in use by this process"):
            RunLock.acquire(tmp_path)
    RunLock.acquire(tmp_path).release()  # released on leaving the block


# ---------------------------------------------------------------- the Agent
@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory):
    from ppocma_jax import Agent

    agent = Agent(3, 1, -2.0, 2.0, n_envs=2, iter_steps=40, hidden_units=8, policy_init="analytic",
                  n_updates=2, batch_size=16)
    path = tmp_path_factory.mktemp("agent") / "agent"
    agent.save(path)
    return agent, path


def test_agent_load_failures_are_agent_errors(agent_dir, tmp_path):
    from ppocma_jax import Agent
    from ppocma_jax.agent import AgentError

    _, saved_path = agent_dir
    for damage, pattern in ((lambda p: truncate(p / "agent_host.npz"), "agent_host.npz' is damaged"),
                            (lambda p: truncate(p / "checkpoints" / "0" / "default" / "manifest.ocdbt"),
                             "is damaged"),
                            (lambda p: (p / "checkpoints" / "0" / "default" / "_METADATA").unlink(), "is damaged"),
                            (lambda p: (p / "config.json").write_text("{}"), "unreadable config.json"),
                            (lambda p: shutil.rmtree(p / "checkpoints"), "has no checkpoint")):
        path = tmp_path / "copy"
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(saved_path, path)
        damage(path)
        with pytest.raises(AgentError, match=pattern) as err:
            Agent.load(path)
        one_line(err)


def test_agent_save_refuses_another_agents_directory_unless_overwrite(agent_dir, tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    from ppocma_jax import Agent
    from ppocma_jax.agent import AgentError

    agent, _ = agent_dir
    path = agent.save(tmp_path / "a")
    agent.save(path)  # its own directory: updated
    other = Agent(3, 1, -2.0, 2.0, seed=1, n_envs=2, iter_steps=40, hidden_units=8, policy_init="analytic",
                  n_updates=2, batch_size=16)
    with pytest.raises(AgentError, match="already holds another agent; .* overwrite=True") as err:
        other.save(path)
    one_line(err)
    assert_same_state(Agent.load(path).state, agent.state)  # untouched
    other.save(path, overwrite=True)
    assert_same_state(Agent.load(path).state, other.state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no staging or replaced copies left
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"config": {}, "hparams": {}}')
    with pytest.raises(AgentError, match="already holds a training run"):
        other.save(run_dir)

    def fill_the_disk(self, directory, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.Checkpointer, "save", fill_the_disk)
    with pytest.raises(AgentError, match="cannot save the agent to .*: no space left on device writing") as err:
        other.save(path)
    one_line(err)
    monkeypatch.undo()
    assert_same_state(Agent.load(path).state, other.state)  # the earlier save is intact


def test_agent_rejects_non_finite_observations_and_non_boolean_flags(agent_dir):
    from ppocma_jax.agent import AgentError

    agent, _ = agent_dir
    z = np.zeros((2, 3), np.float32)
    for bad in (np.array([[0, np.nan, 0], [0, 0, 0]]), np.array([0, np.inf, 0])):
        with pytest.raises(AgentError, match="obs contains NaN or Inf"):
            agent.act(bad)
    for bad in ("False", ["False", "True"], None, [0.5, 0]):
        with pytest.raises(AgentError, match="terminated must be a bool"):
            agent.memorize(z, np.zeros((2, 1)), np.zeros(2), z, bad)
        with pytest.raises(AgentError, match="truncated must be a bool"):
            agent.memorize(z, np.zeros((2, 1)), np.zeros(2), z, np.zeros(2, bool), bad)
    before = agent.memorized_steps
    agent.memorize(z, np.zeros((2, 1)), np.zeros(2), z, [0, 1], np.array([False, True]))  # 0 / 1 are bools
    assert agent.memorized_steps == before + 1
    assert agent._rows[-1][3].tolist() == [False, True]
    agent._rows.pop()


# ---------------------------------------------------------------- through the CLI
def test_resuming_a_run_halted_by_nan_saves_its_last_good_state_again(tmp_path, capsys):
    """The halted run's last good state is checkpoint 0; resuming halts again and saves 0 again (orbax used to
    raise StepAlreadyExistsError there)."""
    from ppocma_jax.cli import main

    out = tmp_path / "run"
    argv = ["--env", "gymnax/Pendulum-v1", "--max-steps", "1600", "--iter-steps", "800", "--n-envs", "4",
            "--n-updates", "5", "--hidden-units", "16", "--pretrain-steps", "20", "--critic-learning-rate", "1e30",
            "--checkpoint-every", "1", "--quiet", "--out", str(out)]
    assert main(argv) == 1
    assert main(["--resume", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("NaN/Inf at iteration 1") == 2 and "Traceback" not in err and "Error" not in err, err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["0"]


# ---------------------------------------------------------------- the run lifecycle through the CLI (issue 16 part B)
# One tiny configuration, the one tests/test_checkpoint.py uses: its compiled chunk is shared through the cache.
CLI_RUN = cli_flags(FAULTS) + ["--checkpoint-every", "2", "--quiet"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of 6 iterations (checkpoints after 4 and 6)."""
    from ppocma_jax.cli import main

    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert main(CLI_RUN + ["--max-steps", "4800", "--out", str(run_dir)]) == 0
    return run_dir


def metric_rows(run_dir: Path) -> tuple[list[str], list[str]]:
    """metrics.csv and metrics.jsonl as text, wall_s (the only column that differs between runs) left out."""
    import csv
    import json

    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    col = rows[0].index("wall_s")
    csv_text = [",".join(c for i, c in enumerate(r) if i != col) for r in rows]
    jsonl = [json.dumps({k: v for k, v in json.loads(line).items() if k != "wall_s"})
             for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return csv_text, jsonl


def assert_same_run(run_dir: Path, reference: Path) -> None:
    import json

    assert metric_rows(run_dir) == metric_rows(reference)
    with Checkpointer(run_dir) as a, Checkpointer(reference) as b:
        assert a.latest_iteration() == b.latest_iteration() == 6
        like = _like(reference)
        assert_same_state(a.restore(like), b.restore(like))
    got, want = (json.loads((d / "result.json").read_text()) for d in (run_dir, reference))
    assert (got["final_return"], got["best_return"]) == (want["final_return"], want["best_return"])


def _like(run_dir: Path):
    from ppocma_jax.rundir import load_config

    config, hparams, _ = load_config(run_dir)
    return jax.eval_shape(Trainer.build(config).init_state, jax.random.PRNGKey(0), hparams.as_arrays())


def cut_last_line(path: Path) -> None:
    """What a kill in the middle of a write leaves: the last line cut in half, no newline."""
    text = path.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    path.write_text(text[: len(text) - len(last) - 1 + len(last) // 2])


def test_resume_falls_back_past_a_damaged_checkpoint_and_repairs_cut_metrics(reference, tmp_path, capsys):
    """Newest checkpoint damaged, last rows of metrics.csv / metrics.jsonl cut in half: resume prints one line for
    the skipped checkpoint, recomputes from the one before, and ends with files equal to the uninterrupted run's to
    the last digit (the jsonl's full-precision rows are kept, not re-read from the CSV's 6 digits)."""
    from ppocma_jax.cli import main

    run_dir = copy_run(reference, tmp_path)
    truncate(largest_data_file(run_dir / "checkpoints" / "6"))
    cut_last_line(run_dir / "metrics.csv")
    cut_last_line(run_dir / "metrics.jsonl")
    (run_dir / "result.json").unlink()
    assert main(["--resume", str(run_dir)]) == 0  # --checkpoint-every 2 from config.json
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint 6 is damaged" in err and "Traceback" not in err, err
    assert json.loads((run_dir / "config.json").read_text())["checkpoint_every"] == 2
    assert_same_run(run_dir, reference)


def test_a_directory_killed_before_its_first_checkpoint_restarts(reference, tmp_path, capsys):
    """Killed during compilation: config.json, nothing else. A new run into it says to use --resume, which starts
    the run again from scratch in the same directory."""
    from ppocma_jax.cli import main

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(reference / "config.json", run_dir / "config.json")
    (run_dir / "metrics.csv").write_text((reference / "metrics.csv").read_text().splitlines()[0] + "\n")
    assert main(CLI_RUN + ["--max-steps", "4800", "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--resume {run_dir}" in err and "before its first checkpoint" in err
    assert main(["--resume", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "starting the run again from scratch" in err
    assert_same_run(run_dir, reference)


def test_resuming_a_finished_run_changes_nothing(reference, tmp_path, capsys):
    from ppocma_jax.cli import main

    run_dir = copy_run(reference, tmp_path)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != ".lock"}
    assert main(["--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "is finished: 6 iterations (4,800 env steps)" in out and "compiled" not in out
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != ".lock"} == before
    assert main(["--resume", str(run_dir), "--max-steps", "3200"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "below the newest checkpoint" in err and "4800" in err


def test_a_second_writer_of_a_run_directory_is_one_line(reference, tmp_path, capsys):
    from ppocma_jax.cli import main
    from ppocma_jax.runlock import RunLock

    run_dir = copy_run(reference, tmp_path)
    with RunLock.acquire(run_dir):
        assert main(["--resume", str(run_dir), "--max-steps", "5600"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is in use by" in err


def test_nan_halt_then_continue_with_a_lower_learning_rate(tmp_path, capsys):
    """A run halted by NaN keeps its last good state; --resume with a lower rate continues it from there, and
    config.json records the change (its hparams are the new ones; "continued" says when and what)."""
    from ppocma_jax.cli import main

    out = tmp_path / "run"
    argv = ["--env", "gymnax/Pendulum-v1", "--max-steps", "1600", "--iter-steps", "800", "--n-envs", "4",
            "--n-updates", "5", "--hidden-units", "16", "--pretrain-steps", "20", "--critic-learning-rate", "1e30",
            "--checkpoint-every", "1", "--quiet", "--out", str(out)]
    assert main(argv) == 1
    capsys.readouterr()
    assert main(["--resume", str(out), "--critic-learning-rate", "5e-4"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "NaN" not in err, err
    document = json.loads((out / "config.json").read_text())
    assert document["hparams"]["critic_learning_rate"] == 5e-4
    assert document["continued"] == [{"after_iteration": 0, "changed": {"critic_learning_rate": [1e30, 5e-4]}}]
    assert [(r["iteration"], r["finite"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            ] == [(1, 1), (2, 1)]
    assert "nonfinite_at_iteration" not in json.loads((out / "result.json").read_text())
    assert main(["--resume", str(out), "--mode", "PPO"]) == 2  # static settings still cannot change
    assert main(["--resume", str(out), "--learning-rate", "-1", "--max-steps", "2400"]) == 2
    assert "learning_rate must be > 0" in capsys.readouterr().err


class _FullDiskAfter:
    """A text file whose writes fail with ENOSPC once `budget` more writes were made (a disk filling up)."""

    def __init__(self, fh, budget: list[int]):
        self._fh, self._budget = fh, budget

    def write(self, text):
        self._budget[0] -= 1
        if self._budget[0] < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._fh.write(text)

    def __getattr__(self, name):
        return getattr(self._fh, name)


def test_a_full_disk_in_the_metrics_write_is_one_line_and_resumes(reference, tmp_path, capsys, monkeypatch):
    import builtins

    from ppocma_jax import monitor
    from ppocma_jax.cli import main

    budget = [2]  # metrics.csv takes rows 1 and 2, then the disk is full
    real_open = builtins.open

    def fake_open(path, mode="r", *args, **kwargs):
        fh = real_open(path, mode, *args, **kwargs)
        return _FullDiskAfter(fh, budget) if str(path).endswith("metrics.csv") and mode == "a" else fh

    run_dir = tmp_path / "run"
    monkeypatch.setattr(monitor, "open", fake_open, raising=False)
    assert main(CLI_RUN + ["--max-steps", "4800", "--out", str(run_dir)]) == 1
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"no space left on device writing {run_dir / 'metrics.csv'}" in err and f"--resume {run_dir}" in err
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["2"]  # none past the lost rows
    assert main(["--resume", str(run_dir)]) == 0
    assert_same_run(run_dir, reference)


SIGNALLED_RUN = [sys.executable, "-m", "ppocma_jax"] + CLI_RUN + ["--max-steps", "80000"]


def start_and_signal(run_dir: Path, signum: int, times: int, extra: tuple[str, ...] = ()
                     ) -> subprocess.CompletedProcess:
    """Start a long run, send `signum` `times` times once its first checkpoint is complete; its exit."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(SIGNALLED_RUN + list(extra) + ["--out", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "2" / "commit_success.txt").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    for _ in range(times):
        os.kill(proc.pid, signum)
        time.sleep(0.05)
    t0 = time.time()
    out, err = proc.communicate(timeout=60)
    assert time.time() - t0 < 30  # no hang
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("signum,times", [(signal.SIGTERM, 1), (signal.SIGINT, 2)], ids=["sigterm", "ctrl-c-twice"])
def test_a_signal_stops_with_a_checkpoint_and_the_run_resumes(reference, tmp_path, signum, times):
    """One SIGTERM / Ctrl-C: stop at the end of the running chunk, save it, say how to resume, exit 143 / 130.
    A second one: stop at once (the write in flight abandoned). Either way --resume ends where an uninterrupted
    run ends."""
    from ppocma_jax.cli import main

    run_dir = tmp_path / "run"
    proc = start_and_signal(run_dir, signum, times)
    assert proc.returncode == 128 + signum, proc.stderr
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert f"continue with: python -m ppocma_jax --resume {run_dir}" in last, proc.stderr
    if times == 1:
        stopped_at = int(re.search(r"after iteration (\d+) of 100; checkpoint saved", last).group(1))
        assert Checkpointer(run_dir).latest_iteration() == stopped_at
    assert main(["--resume", str(run_dir), "--max-steps", "4800"]) == 0
    assert not [p for p in (run_dir / "checkpoints").iterdir() if not p.name.isdigit()]  # staging folders cleaned
    document = json.loads((run_dir / "config.json").read_text())
    assert document["config"]["max_steps"] == 4800 and document["continued"][0]["changed"] == {
        "max_steps": [80000, 4800]}
    assert_same_run(run_dir, reference)


def test_sigterm_stops_a_seeds_run_with_a_checkpoint_and_it_resumes_to_the_uninterrupted_runs(tmp_path):
    """The same for R runs in one program (--seeds 2): stopped, saved, resumed, equal to an uninterrupted run."""
    from ppocma_jax.cli import main

    reference = tmp_path / "reference"
    assert main(CLI_RUN + ["--seeds", "2", "--max-steps", "4800", "--out", str(reference)]) == 0
    run_dir = tmp_path / "run"
    proc = start_and_signal(run_dir, signal.SIGTERM, 1, extra=("--seeds", "2"))
    assert proc.returncode == 143, proc.stderr
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    stopped_at = int(re.search(r"after iteration (\d+) of 100; checkpoint saved", last).group(1))
    assert stopped_at < 6 and Checkpointer(run_dir).latest_iteration() == stopped_at, proc.stderr
    assert not (run_dir / "result.json").exists()
    assert main(["--resume", str(run_dir), "--max-steps", "4800"]) == 0
    assert metric_rows(run_dir) == metric_rows(reference)
    assert json.loads((run_dir / "summary.json").read_text()) == json.loads((reference / "summary.json").read_text())


def test_sigterm_stops_a_gymnasium_run_after_the_running_iteration(tmp_path):
    """The host loop (host_train.py) checks between iterations: one SIGTERM saves the iteration reached, exits 143
    with the resume line, and --resume continues from there."""
    pytest.importorskip("gymnasium")
    from ppocma_jax.cli import main

    run_dir = tmp_path / "run"
    argv = ["--env", "gymnasium/Pendulum-v1", "--iter-steps", "2000", "--n-envs", "8", "--hidden-units", "32",
            "--policy-init", "analytic", "--eval-every", "2", "--eval-episodes", "2", "--checkpoint-every", "1",
            "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "ppocma_jax"] + argv + ["--max-steps", "2000000", "--out",
                                                                            str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "1" / "commit_success.txt").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err, err
    stopped_at = int(re.search(r"after iteration (\d+) of 1000; checkpoint saved; continue with: python -m "
                               r"ppocma_jax --resume ", err).group(1))
    assert Checkpointer(run_dir).latest_iteration() == stopped_at
    assert main(["--resume", str(run_dir), "--max-steps", str(2000 * (stopped_at + 1))]) == 0
    assert Checkpointer(run_dir).latest_iteration() == stopped_at + 1
    rows = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, stopped_at + 2))


def test_a_full_disk_in_a_checkpoint_write_during_a_run_is_one_line_and_resumes(reference, tmp_path, capsys,
                                                                                 monkeypatch):
    from ppocma_jax import checkpoint
    from ppocma_jax.cli import main

    real_save = checkpoint.Checkpointer.save

    def save(self, iteration, state):
        if iteration == 4:
            raise CheckpointNoSpaceError(f"no space left on device writing {self.directory / str(iteration)}")
        return real_save(self, iteration, state)

    run_dir = tmp_path / "run"
    monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
    assert main(CLI_RUN + ["--max-steps", "4800", "--out", str(run_dir)]) == 1
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on device writing" in err and f"--resume {run_dir}" in err, err
    assert main(["--resume", str(run_dir)]) == 0
    assert_same_run(run_dir, reference)


def test_resume_refuses_to_change_a_swept_hyperparameter(reference, tmp_path, capsys):
    from ppocma_jax.cli import main

    run_dir = copy_run(reference, tmp_path)
    document = json.loads((run_dir / "config.json").read_text())
    document["runs"] = {"seeds": [0, 1], "swept": ["learning_rate"],
                        "changes": [{"learning_rate": 1e-4, "critic_learning_rate": 1e-4}]}
    (run_dir / "config.json").write_text(json.dumps(document))
    assert main(["--resume", str(run_dir), "--learning-rate", "1e-3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot change critic_learning_rate, learning_rate: the sweep sets it" in err
