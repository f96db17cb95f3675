"""Faults below the run lifecycle: damaged checkpoints, overwrites, a full disk, Ctrl-C during a write, absurd
sizes, a second writer, and the Agent's load / save / input errors. Each ends in one line (an exception with a
one-line message), never a traceback or a hang, and leaves a directory that restores.

Compile time dominates: one tiny configuration, one compiled one-iteration program shared by every test."""

import errno
import os
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

from ppocma_jax.checkpoint import (CheckpointError, CheckpointMismatchError, CheckpointNoSpaceError, Checkpointer,
                                   _HOST)
from ppocma_jax.config import Config, ConfigError, HParams
from ppocma_jax.train import Trainer, make_train

CONFIG = Config(env="gymnax/Pendulum-v1", iter_steps=800, n_envs=4, n_updates=5, hidden_units=16,
                pretrain_steps=20, eval_every=0, max_steps=2400)
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
    import sys, numpy as np
    from ppocma_jax.checkpoint import Checkpointer
    checkpointer = Checkpointer(sys.argv[1])
    checkpointer.save(1, {"w": np.zeros(50_000_000, np.float32)})
    big = {"w": np.random.default_rng(0).random(50_000_000, dtype=np.float32)}  # 200 MB: a write of ~1 s
    print("writing", flush=True)
    try:
        checkpointer.save(2, big)
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        checkpointer.close(abandon=True)
        sys.exit(130)
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
        assert not checkpointer.restore({"w": np.zeros(50_000_000, np.float32)}, 1)["w"].any()


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
