"""The host driver: `python -m ppocma_jax --env gymnasium/<id>`, a gymnasium env stepped on the host.

The loop is the Tutorial's, vectorised: `Agent.act` on the batch of n_envs observations, one step of a gymnasium
SyncVectorEnv, `Agent.memorize`, and every iter_steps environment steps `Agent.update_with_memorized` (the same
compiled `Trainer.learn` as the JAX suites). `train_host(job)` returns the same `Outcome` as the compiled driver
(compiled_train.py), and the CLI reports both alike (outcome.finish): config.json, metrics.csv / metrics.jsonl
through `RunMonitor`, deterministic evaluation every eval_every iterations, orbax checkpoints of the TrainState,
curve.png, result.json and the `result:` line.

Differences from the JAX suites: one seed per run (no --seeds / --sweep: the runs would need one simulator each),
and --resume restores the learner exactly but starts fresh episodes (a gymnasium env's state is not checkpointed).
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

from .agent import Agent
from .config import Config, HParams, to_jsonable
from .envs.base import EnvSpec
from .envs.gymnasium_env import gymnasium_spec, make_vector_env, successor_obs
from .errors import CliError, RunFailure
from .evaluation import episode_limit, eval_due
from .metrics import METRIC_NAMES
from .outcome import Outcome
from .rundir import RunDir
from .settings import Job

EVAL_SEED_OFFSET = 10_000  # evaluation episodes start from fixed seeds: comparable curves, as the JAX eval_key


def check_args(args: argparse.Namespace) -> None:
    """Flags that have no meaning for a host-stepped env."""
    if args.seeds != 1 or args.sweep or args.sweep_random:
        raise CliError("--seeds, --sweep and --sweep-random batch runs inside one JAX program; a gymnasium env "
                           "runs on the host: start one process per seed / setting")
    if getattr(args, "render", False) or getattr(args, "wandb", False):
        raise CliError("--render and --wandb are not available for gymnasium envs yet (they run on the host); "
                       "metrics.csv, metrics.jsonl and --tensorboard are")
    if args.tensorboard:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise CliError("--tensorboard needs tensorboardX: pip install tensorboardX") from None


def run_episodes(agent: Agent, env_id: str, n: int, action_repeat: int, seed: int, max_decisions: int,
                 deterministic: bool = True) -> np.ndarray:
    """Returns of one episode on each of n fresh envs (the policy's mean action by default)."""
    vec = make_vector_env(env_id, n, action_repeat)
    try:
        obs, _ = vec.reset(seed=seed)
        returns = np.zeros(n)
        running = np.ones(n, bool)
        for _ in range(max_decisions):
            action = agent.act(obs, deterministic=deterministic)
            obs, reward, terminated, truncated, _ = vec.step(action)
            returns += np.where(running, reward, 0.0)
            running &= ~(terminated | truncated)
            if not running.any():
                break
        return returns
    finally:
        vec.close()


def collect(agent: Agent, vec, obs: np.ndarray, steps: int) -> np.ndarray:
    """Act / step / memorize `steps` times on all envs; returns the observations to act on next."""
    for _ in range(steps):
        action = agent.act(obs)
        next_obs, reward, terminated, truncated, infos = vec.step(action)
        agent.memorize(obs, action, reward, successor_obs(next_obs, infos), terminated, truncated)
        obs = next_obs
    return obs


def config_document(config: Config, hparams: HParams, spec: EnvSpec, checkpoint_every: int) -> dict:
    """config.json as the compiled driver writes it, plus the env's sizes: `Agent.load(out_dir)` needs no env."""
    document = to_jsonable(config, hparams)
    document["checkpoint_every"] = checkpoint_every
    document["agent"] = {"state_dim": spec.obs_dim, "action_dim": spec.action_dim,
                         "action_min": list(spec.action_low), "action_max": list(spec.action_high),
                         "env_name": spec.name, "max_episode_steps": spec.max_episode_steps}
    return document


def train_host(job: Job) -> tuple[RunDir, Outcome | None]:
    """Train job.config.env (gymnasium/<id>) to config.max_steps; -> (the run directory, the Outcome, or None if a
    resumed run was already finished). SIGINT / SIGTERM stop after the running iteration, with a checkpoint."""
    from .checkpoint import Checkpointer
    from .stopping import announce_stop

    args, config, hparams, stop = job.args, job.config, job.hparams, job.stop
    stop.on_first = lambda signum: announce_stop(signum, "the end of the running iteration")
    check_args(args)
    config.validate()
    hparams.validate()
    spec = gymnasium_spec(config.env.split("/", 1)[1], config.action_repeat)  # UnknownEnvError before writing
    say = (lambda *a, **k: None) if args.quiet else print
    n_iter = config.n_iterations
    say(f"{config.mode} on {config.env} ({spec.obs_dim}-d obs, {spec.action_dim} actions, stepped on the host): "
        f"{n_iter} iterations x {config.iter_steps} steps = {n_iter * config.iter_steps:,} env steps, "
        f"{config.n_envs} envs, minibatch {config.minibatch_size}, seed {config.seed}")
    say(f"output: {job.out_dir}")

    t_compile = time.perf_counter()
    say("compiling and initialising the policy ...", flush=True)
    agent = Agent.from_config(spec, config, hparams)  # ConfigError (one line) for bad settings
    run = job.run or RunDir.create(job.out_dir, config_document(config, hparams, spec, args.checkpoint_every),
                                   job.held, job.argv)
    checkpointer = Checkpointer(run.path, exclusive=True)
    job.held.callback(lambda: checkpointer.close(abandon=stop.requested))
    if job.resuming:
        latest, restored = run.restore_or_restart(checkpointer, agent.state)
        if run.resume_point(config, latest, job.changes):
            return run, None  # finished: result.json untouched
        if latest is not None:
            agent.restore_state(restored)
            say(f"resuming from the checkpoint after iteration {latest} (the learner exactly; episodes start "
                "afresh)")
    agent.warm_up(eval_batch=config.eval_episodes if config.eval_every else None)
    compile_s = time.perf_counter() - t_compile
    say(f"compiled in {compile_s:.1f} s")
    return run, _loop(job, run, agent, spec, checkpointer, compile_s)


def _loop(job: Job, run: RunDir, agent: Agent, spec: EnvSpec, checkpointer: Any, compile_s: float) -> Outcome:
    """Collect, update, evaluate and checkpoint, one iteration at a time, until the end, NaN/Inf or a stop."""
    from .monitor import RunMonitor

    args, config, stop = job.args, job.config, job.stop
    env_id, n_iter = config.env.split("/", 1)[1], config.n_iterations
    start_iteration = int(agent.state.iteration)
    monitor = RunMonitor(run.path, n_iter, config.iter_steps, quiet=args.quiet, verbose=args.verbose,
                         resume_after=start_iteration if job.resuming else None, tensorboard=args.tensorboard)
    vec = make_vector_env(env_id, config.n_envs, config.action_repeat)
    failed_at = None
    monitor.start()
    t_run = time.perf_counter()
    iteration = start_iteration
    stop.deferring = True  # a first SIGINT / SIGTERM ends the running iteration, then saves
    try:
        obs, _ = vec.reset(seed=config.seed + start_iteration)
        while iteration < n_iter and not stop.requested:
            obs = collect(agent, vec, obs, config.rollout_len)
            row, failed_at = _update(agent, config, iteration)
            iteration = int(row["iteration"])
            if failed_at is None and eval_due(iteration, config):
                row["eval_return"] = float(np.mean(run_episodes(
                    agent, env_id, config.eval_episodes, config.action_repeat, config.seed + EVAL_SEED_OFFSET,
                    episode_limit(spec))))
            monitor({name: row[name] for name in METRIC_NAMES})
            if monitor.write_error is not None:
                raise RunFailure(monitor.write_error)
            if failed_at is not None:
                break
            if args.checkpoint_every and iteration % args.checkpoint_every == 0:
                checkpointer.save(iteration, agent.state)
        done = int(agent.state.iteration)
        if checkpointer.latest_iteration() != done:
            checkpointer.save(done, agent.state)  # the last good state
    finally:
        stop.deferring = False
        vec.close()
        monitor.close()
    if monitor.write_error is not None:
        raise RunFailure(monitor.write_error)
    done = int(agent.state.iteration)
    stopped = stop.requested and done < n_iter and failed_at is None
    return Outcome(config, monitor.rows, None, start_iteration, done, compile_s, time.perf_counter() - t_run,
                   checkpointer.directory, failed_at, int(failed_at is not None), stop.signum if stopped else None,
                   state=agent.state)


def _update(agent: Agent, config: Config, iteration: int) -> tuple[dict[str, float], int | None]:
    """The update after iteration `iteration`, on the memorised transitions: (its metric row, eval_return NaN;
    the iteration where NaN/Inf stopped it, or None)."""
    try:
        agent.update_with_memorized()
        row, failed_at = dict(agent.last_metrics), None
    except FloatingPointError:
        failed_at = iteration + 1
        row = {name: math.nan for name in METRIC_NAMES}
        row.update(iteration=failed_at, env_steps=failed_at * config.iter_steps, finite=0)
    row["eval_return"] = math.nan
    return row, failed_at
