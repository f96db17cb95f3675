"""A run directory of `python -m ppocma_jax` as Python objects: `load_run(run_dir) -> Run`.

    run = load_run("runs/gymnax_Pendulum-v1_PPO-CMA-m_s0")
    run.config, run.hparams          # as the run was started (config.json)
    run.state, run.iteration         # the newest readable checkpoint (the observation scaler included)
    run.metrics["eval_return"]       # [iterations] (seeds / sweeps: [iterations, runs])
    act = make_policy(run)           # export.make_policy: act(obs) with the scaler inside

Seeds and sweeps (`--seeds K`, `--sweep ...`) hold R runs in one state with a leading run axis: `run.labels[k]`
says which seed and setting run k is, `run.take(k)` is its TrainState, `make_policy(run, run=k)` its policy.
Runs on gymnasium envs (stepped on the host) load through Agent.load; their state is the agent's.
Loading writes nothing: a damaged checkpoint is skipped, not moved aside (only temporary folders that killed writers
left are cleaned, as every Checkpointer does when it opens a directory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .config import Config, HParams


class RunError(ValueError):
    """A directory cannot be loaded as a run: one line."""


@dataclass(frozen=True)
class Run:
    """A loaded run directory (see the module docstring). Arrays are on the default device."""

    run_dir: Path
    config: Config
    hparams: HParams  # the base setting (config.json); a sweep's runs differ from it in run_hparams
    trainer: Any  # train.Trainer: the env, the policy and the critic the run trained
    state: Any  # train.TrainState of the newest readable checkpoint; [R, ...] leaves for seeds / sweeps
    iteration: int  # iterations the checkpoint has completed
    metrics: dict[str, np.ndarray]  # metrics.jsonl up to the checkpoint: name -> [iterations] or [iterations, R]
    labels: list[dict[str, Any]] | None = None  # seeds / sweeps: per run {"setting", "seed", swept values}
    run_hparams: HParams | None = None  # seeds / sweeps: every run's hyperparameters, stacked [R]

    @property
    def n_runs(self) -> int | None:
        """R for seeds / sweeps, None for a single run."""
        return None if self.labels is None else len(self.labels)

    def take(self, run: int) -> Any:
        """Run `run`'s TrainState from a seeds / sweep state (sweep.select_run). Its policy as a function:
        `export.make_policy(this_run, run=k)`."""
        from .sweep import select_run

        try:
            return select_run(self.state, run, self.n_runs, "run directory")
        except ValueError as err:
            raise RunError(str(err)) from None


def _read_document(run_dir: Path) -> tuple[dict, Config, HParams]:
    """config.json through rundir (the one reader of run directories), with this module's error class."""
    from .errors import CliError
    from .rundir import load_config

    try:
        config, hparams, document = load_config(run_dir)
    except CliError as err:
        raise RunError(str(err)) from None
    return document, config, hparams


def _plan(document: dict, hparams: HParams):
    """The runs of a seeds / sweep directory (sweep.Runs), as a resume rebuilds them; None for one run."""
    from .settings import stored_plan

    return stored_plan(document.get("runs"), hparams)


def _metrics(rows: list[dict[str, float]], n_runs: int | None) -> dict[str, np.ndarray]:
    """Rows (one per iteration, or per iteration and run) as arrays [iterations] or [iterations, R]."""
    if not rows:
        return {}
    names = [k for k in rows[0] if k != "run"]
    if n_runs is None:
        return {k: np.asarray([row.get(k, np.nan) for row in rows], np.float64) for k in names}
    iterations = sorted({int(row["iteration"]) for row in rows})
    index = {it: i for i, it in enumerate(iterations)}
    out = {k: np.full((len(iterations), n_runs), np.nan) for k in names}
    for row in rows:
        i, r = index[int(row["iteration"])], int(row["run"])
        if 0 <= r < n_runs:
            for k in names:
                out[k][i, r] = row.get(k, np.nan)
    return out


def load_run(run_dir: str | Path) -> Run:
    """Load a run directory written by `python -m ppocma_jax`: config, hyperparameters, the newest readable
    checkpoint's state and the metrics up to it. Every failure is a RunError in one line."""
    from .checkpoint import CheckpointError, Checkpointer
    from .config import ConfigError
    from .monitor import rows_up_to
    from .train import Trainer

    run_dir = Path(run_dir)
    document, config, hparams = _read_document(run_dir)
    if config.env.startswith("gymnasium/"):
        return _load_host_run(run_dir, config, hparams)
    try:
        trainer = Trainer.build(config)
        runs = _plan(document, hparams)
    except (ConfigError, ValueError, KeyError, TypeError) as err:  # UnknownEnvError, a bad "runs" entry
        raise RunError(f"{str(run_dir)!r}: its config.json cannot be built ({type(err).__name__}: {err})") from None
    if runs is None:
        keys, hp, init = jax.random.PRNGKey(config.seed), hparams.as_arrays(), trainer.init_state
    else:
        keys, hp, init = runs.keys, runs.hparams.as_arrays(), jax.vmap(trainer.init_state)
    like = jax.eval_shape(init, keys, hp)
    checkpointer = Checkpointer(run_dir)
    try:
        found = checkpointer.restore_latest(like, repair=False)  # a reader: damaged checkpoints stay where they are
    except CheckpointError as err:  # another configuration's checkpoint, or the machine
        raise RunError(f"{str(run_dir)!r}: {err}") from None
    finally:
        checkpointer.close()
    if found.iteration is None:
        why = f" ({'; '.join(found.skipped)})" if found.skipped else ""
        raise RunError(f"{str(run_dir)!r} has no readable checkpoint{why}")
    state = jax.tree.map(jax.numpy.asarray, found.state)
    rows = rows_up_to(run_dir, found.iteration)
    return Run(run_dir, config, hparams, trainer, state, int(found.iteration),
               _metrics(rows, None if runs is None else len(runs)),
               None if runs is None else runs.labels, None if runs is None else runs.hparams)


def _load_host_run(run_dir: Path, config: Config, hparams: HParams) -> Run:
    """A gymnasium run (host_train.py): its checkpoint is an Agent's."""
    from .agent import Agent, AgentError
    from .monitor import rows_up_to

    try:
        agent = Agent.load(run_dir)
    except (AgentError, ValueError, FileNotFoundError) as err:
        raise RunError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    iteration = int(agent.state.iteration)
    return Run(run_dir, config, hparams, agent.trainer, agent.state, iteration,
               _metrics(rows_up_to(run_dir, iteration), None))
