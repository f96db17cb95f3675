"""`python -m ppocma_jax --env gymnasium/<id>`: train on a gymnasium env stepped on the host.

The loop is the Tutorial's, vectorised: `Agent.act` on the batch of n_envs observations, one step of a gymnasium
SyncVectorEnv, `Agent.memorize`, and every iter_steps environment steps `Agent.update_with_memorized` (the same
compiled `Trainer.learn` as the JAX suites). The outputs are the CLI's: config.json, metrics.csv / metrics.jsonl
through `RunMonitor`, deterministic evaluation every eval_every iterations, orbax checkpoints of the TrainState,
curve.png, result.json and the `result:` line.

Differences from the JAX suites: one seed per run (no --seeds / --sweep: the runs would need one simulator each),
and --resume restores the learner exactly but starts fresh episodes (a gymnasium env's state is not checkpointed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from .agent import Agent
from .cli import lock_run_dir, refuse_existing_run, restore_or_restart, resume_point, write_config_json
from .errors import CliError, RunFailure
from .config import Config, HParams, to_jsonable
from .envs.base import EnvSpec
from .envs.gymnasium_env import gymnasium_spec, make_vector_env, successor_obs
from .train import METRIC_NAMES

EVAL_SEED_OFFSET = 10_000  # evaluation episodes start from fixed seeds: comparable curves, as the JAX eval_key
EVAL_MAX_DECISIONS = 10_000  # cap for envs without a time limit


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


def _eval_due(iteration: int, config: Config) -> bool:
    return config.eval_every > 0 and (iteration % config.eval_every == 0 or iteration == config.n_iterations)


def collect(agent: Agent, vec, obs: np.ndarray, steps: int) -> np.ndarray:
    """Act / step / memorize `steps` times on all envs; returns the observations to act on next."""
    for _ in range(steps):
        action = agent.act(obs)
        next_obs, reward, terminated, truncated, infos = vec.step(action)
        agent.memorize(obs, action, reward, successor_obs(next_obs, infos), terminated, truncated)
        obs = next_obs
    return obs


def config_document(config: Config, hparams: HParams, spec: EnvSpec, checkpoint_every: int) -> dict:
    """config.json as the CLI writes it, plus the env's sizes so that `Agent.load(out_dir)` needs no env."""
    document = to_jsonable(config, hparams)
    document["checkpoint_every"] = checkpoint_every
    document["agent"] = {"state_dim": spec.obs_dim, "action_dim": spec.action_dim,
                         "action_min": list(spec.action_low), "action_max": list(spec.action_high),
                         "env_name": spec.name, "max_episode_steps": spec.max_episode_steps}
    return document


def run_host(args: argparse.Namespace, config: Config, hparams: HParams, out_dir: Path, resuming: bool,
             solved_at: float | None = None, prog: str = "python -m ppocma_jax",
             held: contextlib.ExitStack | None = None, stop=None) -> int:
    """Train config.env (gymnasium/<id>) to config.max_steps; the CLI's outputs. Returns the exit code.

    held: where the run directory's lock is kept until the caller returns (cli.run passes its ExitStack; a
    resumed directory is already locked); stop: the caller's stopping.StopRequests (SIGINT / SIGTERM stop after
    the running iteration, with a checkpoint)."""
    from .checkpoint import Checkpointer
    from .monitor import RunMonitor, summarize_returns
    from .plot import plot_runs
    from .stopping import StopRequests, announce_stop, signal_name

    if held is None:
        with contextlib.ExitStack() as own:
            return run_host(args, config, hparams, out_dir, resuming, solved_at, prog, own, stop)
    if stop is None:
        stop = held.enter_context(StopRequests())
    stop.on_first = lambda signum: announce_stop(signum, "the end of the running iteration")

    check_args(args)
    config.validate()
    hparams.validate()
    env_id = config.env.split("/", 1)[1]
    spec = gymnasium_spec(env_id, config.action_repeat)  # UnknownEnvError (one line) before anything is written
    say = (lambda *a, **k: None) if args.quiet else print
    n_iter = config.n_iterations
    say(f"{config.mode} on {config.env} ({spec.obs_dim}-d obs, {spec.action_dim} actions, stepped on the host): "
        f"{n_iter} iterations x {config.iter_steps} steps = {n_iter * config.iter_steps:,} env steps, "
        f"{config.n_envs} envs, minibatch {config.minibatch_size}, seed {config.seed}")
    say(f"output: {out_dir}")

    t_compile = time.perf_counter()
    say("compiling and initialising the policy ...", flush=True)
    agent = Agent.from_config(spec, config, hparams)  # ConfigError (one line) for bad settings
    if not resuming:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CliError(f"cannot write the run directory {str(out_dir)!r}: {err.strerror or err}") from None
        held.enter_context(lock_run_dir(out_dir))
        refuse_existing_run(out_dir)  # again, under the lock
        write_config_json(out_dir, config_document(config, hparams, spec, args.checkpoint_every))
    checkpointer = Checkpointer(out_dir, exclusive=True)
    held.callback(lambda: checkpointer.close(abandon=stop.requested))
    if resuming:
        latest, restored = restore_or_restart(checkpointer, agent.state, out_dir)
        if resume_point(args, config, out_dir, latest):
            return 0  # finished: result.json untouched
        if latest is not None:
            agent.restore_state(restored)
            say(f"resuming from the checkpoint after iteration {latest} (the learner exactly; episodes start "
                "afresh)")
    agent.warm_up(eval_batch=config.eval_episodes if config.eval_every else None)
    compile_s = time.perf_counter() - t_compile
    say(f"compiled in {compile_s:.1f} s")

    start_iteration = int(agent.state.iteration)
    monitor = RunMonitor(out_dir, n_iter, config.iter_steps, quiet=args.quiet, verbose=args.verbose,
                         resume_after=start_iteration if resuming else None, tensorboard=args.tensorboard)
    vec = make_vector_env(env_id, config.n_envs, config.action_repeat)
    max_decisions = spec.max_episode_steps or EVAL_MAX_DECISIONS
    failed_at = None
    monitor.start()
    t_run = time.perf_counter()
    iteration = start_iteration
    stop.deferring = True  # a first SIGINT / SIGTERM ends the running iteration, then saves
    try:
        obs, _ = vec.reset(seed=config.seed + start_iteration)
        while iteration < n_iter and not stop.requested:
            obs = collect(agent, vec, obs, config.rollout_len)
            try:
                agent.update_with_memorized()
                row = dict(agent.last_metrics)
            except FloatingPointError:
                failed_at = iteration + 1
                row = {name: math.nan for name in METRIC_NAMES}
                row.update(iteration=failed_at, env_steps=failed_at * config.iter_steps, finite=0)
            iteration = int(row["iteration"])
            row["eval_return"] = math.nan
            if failed_at is None and _eval_due(iteration, config):
                row["eval_return"] = float(np.mean(run_episodes(
                    agent, env_id, config.eval_episodes, config.action_repeat, config.seed + EVAL_SEED_OFFSET,
                    max_decisions)))
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
    run_s = time.perf_counter() - t_run
    done = int(agent.state.iteration)
    if stop.requested and done < n_iter and failed_at is None:
        print(f"{prog}: stopped by {signal_name(stop.signum)} after iteration {done} of {n_iter}; checkpoint saved; "
              f"continue with: {prog} --resume {out_dir}", file=sys.stderr)
        return 128 + stop.signum
    steps_run = (done - start_iteration) * config.iter_steps

    plot_runs([out_dir], out_dir / "curve.png", title=f"{config.mode} on {config.env}")
    final, best = summarize_returns(monitor.rows)
    result = {"env_steps": done * config.iter_steps, "runs": 1, "compile_s": round(compile_s, 2),
              "run_s": round(run_s, 2), "steps_per_s": round(steps_run / max(run_s, 1e-9), 1),
              "final_return": final, "best_return": best}
    verdict = ""
    if solved_at is not None and not math.isnan(final):
        verdict = f" ({'solved' if final >= solved_at else 'not solved'}: threshold {solved_at:g})"
    if failed_at is not None:
        result["nonfinite_at_iteration"] = failed_at
    try:
        (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    except OSError as err:
        raise RunFailure(f"cannot write {out_dir / 'result.json'}: {err.strerror or err}") from None
    print(f"result: final mean return {final:.1f} (last 5 iterations with episodes), best {best:.1f}{verdict}; "
          f"{steps_run:,} env steps in {run_s:.1f} s ({result['steps_per_s']:,.0f} steps/s) + {compile_s:.1f} s "
          f"compile; saved to {out_dir}")
    if failed_at is not None:
        print(f"{prog}: error: training produced NaN/Inf at iteration {failed_at} (losses or parameters); the last "
              f"good state (after iteration {failed_at - 1}) is kept in the newest checkpoint in "
              f"{checkpointer.directory}", file=sys.stderr)
        return 1
    return 0
