"""The compiled driver: one run, or a seeds / sweep program of runs, of a JAX suite (gymnax, brax, didactic).

`train_compiled(job)` validates the settings against the env, lays the runs out on the device mesh
(distributed.py), creates or reopens the run directory (rundir.py), compiles one chunk of `checkpoint_every`
iterations and loops over chunks, checkpointing after each, until the run ends, NaN/Inf stops every run, or a
SIGINT / SIGTERM asks to stop. It returns the `Outcome` (outcome.py), or None when a resumed run was already
finished; the CLI reports it with `outcome.finish`.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

from .errors import CliError, RunFailure
from .outcome import Outcome
from .rundir import PROG, RunDir, plan_json
from .settings import Job, run_plan, stored_plan


def train_compiled(job: Job) -> tuple[RunDir, Outcome | None]:
    """Train (or resume) the job's run(s); -> (the run directory, the Outcome, or None if already finished)."""
    import jax

    from .stopping import wait_interruptibly

    args, config = job.args, job.config
    trainer, runs, mesh = _prepare(job)
    run = job.run or _create(job, runs)
    say = (lambda *a, **k: None) if args.quiet else print
    _header(job, trainer, runs, mesh, run, say)
    layout = _Layout(trainer, runs, job.hparams, config.seed, mesh)
    checkpointer = _checkpointer(job, run)

    t_compile = time.perf_counter()
    state = None
    if job.resuming:
        latest, restored = run.restore_or_restart(checkpointer, layout.like())
        if latest is not None:
            state = layout.put_state(restored)
            latest = layout.iteration_of(state)
        if run.resume_point(config, latest, job.changes):
            return run, None  # finished: nothing compiled, result.json untouched
        if latest is not None:
            say(f"resuming from the checkpoint after iteration {latest}")
    if state is None:
        say("compiling and initialising the policy ...", flush=True)
        state = wait_interruptibly(lambda: jax.block_until_ready(layout.initial_state()))
    outcome = _loop(job, run, trainer, runs, layout, checkpointer, state, t_compile, say)
    if outcome.primary and outcome.stopped_by is None and args.render:
        outcome.after_result = lambda: _render(trainer, outcome.state, outcome.rows, runs, run, config.seed,
                                               say)
    return run, outcome


def _prepare(job: Job):
    """Validate the settings against the env before anything is written or compiled; -> (trainer, runs or None,
    device mesh). ConfigError / UnknownEnvError / CliError are one line."""
    import jax

    from . import distributed
    from .train import Trainer

    args, config, hparams = job.args, job.config, job.hparams
    config.validate()
    hparams.validate()
    trainer = Trainer.build(config)  # ConfigError / UnknownEnvError before any compilation
    if args.render:
        _check_render(args, trainer)
    runs = (stored_plan(job.run.plan, hparams) if job.resuming else
            run_plan(config, hparams, args.seeds, args.sweep, args.sweep_random))
    for index in range(1 if runs is None else len(runs)):
        trainer.check_hparams(hparams if runs is None else jax.tree.map(lambda x: x[index], runs.hparams))
    if runs is not None:  # R runs in one program hold R states: ConfigError (one line) where they cannot fit
        from .resources import check_fits

        check_fits(config, trainer.env.spec, runs=len(runs))
    mesh = distributed.device_mesh(args.devices)
    distributed.check_divisible(config.n_envs if runs is None else len(runs), mesh,
                                "n_envs" if runs is None else "the number of runs")
    if distributed.mesh_size(mesh) > 1:
        trainer = dataclasses.replace(trainer, callback_sharding=distributed.replicated(mesh))
    return trainer, runs, mesh


def _check_render(args: Any, trainer: Any) -> None:
    """--render: a missing package stops here, before any work; an env without a renderer only says so."""
    from .render import MissingDependency, NotRenderable, render_kind

    try:
        render_kind(trainer.env)
    except MissingDependency as err:
        raise CliError(f"--render: {err}") from None
    except NotRenderable as err:
        print(f"{PROG}: note: --render: {err}; training without a render", file=sys.stderr)
        args.render = False


def _create(job: Job, runs: Any) -> RunDir:
    """A new run's directory, with its config.json (settings, checkpoint_every, the run plan, provenance)."""
    from .config import to_jsonable

    document = to_jsonable(job.config, job.hparams)
    document["checkpoint_every"] = job.args.checkpoint_every
    if runs is not None:
        document["runs"] = plan_json(runs.labels)
    return RunDir.create(job.out_dir, document, job.held, job.argv)


def _header(job: Job, trainer: Any, runs: Any, mesh: Any, run: RunDir, say) -> None:
    """The run's first lines: what trains where, the preset, a note on a partial iteration, the output directory."""
    import jax

    from . import distributed

    args, config = job.args, job.config
    n_iter = config.n_iterations
    spec = trainer.env.spec
    seeds_text = f"seed {config.seed}" if runs is None else (
        f"{len(runs)} runs ({len(set(lb['setting'] for lb in runs.labels))} settings x "
        f"{len(set(lb['seed'] for lb in runs.labels))} seeds) in one program")
    say(f"{config.mode} on {config.env} ({spec.obs_dim}-d obs, {'discrete ' if spec.discrete else ''}"
        f"{spec.action_dim} actions): {n_iter} iterations x {config.iter_steps} steps = "
        f"{n_iter * config.iter_steps:,} env steps, {config.n_envs} envs, minibatch {config.minibatch_size}, "
        f"{seeds_text}, {distributed.mesh_size(mesh)} {jax.default_backend()} device(s)"
        + (f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""))
    if args.preset != "none" and not job.resuming:
        say(f"preset {args.preset}: " + ", ".join(f"{k}={v}" for k, v in args.preset_settings.items())
            + " (flags override)")
    if config.max_steps % config.iter_steps:
        say(f"note: max_steps={config.max_steps} is not a multiple of iter_steps={config.iter_steps}; running "
            f"{n_iter} whole iterations")
    say(f"output: {run.path}")


class _Layout:
    """Where the state lives: one run's envs split over the devices, or several runs split (distributed.py)."""

    def __init__(self, trainer: Any, runs: Any, hparams: Any, seed: int, mesh: Any):
        import jax

        from . import distributed

        if runs is None:
            hp, keys = hparams.as_arrays(), jax.random.PRNGKey(seed)
            self.init, self.chunk_fn = trainer.init_state, trainer.run
        else:
            hp, keys = runs.hparams.as_arrays(), runs.keys
            self.init, self.chunk_fn = jax.vmap(trainer.init_state), trainer.run_batched
        self.mesh = mesh
        self.state_sh = distributed.state_shardings(jax.eval_shape(self.init, keys, hp), mesh,
                                                    batched=runs is not None)
        self.keys, self.hp = (distributed.put(x, distributed.replicate(x, mesh) if runs is None else
                                              distributed.batch_shardings(x, mesh)) for x in (keys, hp))

    def like(self) -> Any:
        import jax

        return jax.eval_shape(self.init, self.keys, self.hp)

    def put_state(self, state: Any) -> Any:
        from . import distributed

        return distributed.put(state, self.state_sh)

    def initial_state(self) -> Any:
        import jax

        return jax.jit(self.init, out_shardings=self.state_sh)(self.keys, self.hp)

    @staticmethod
    def iteration_of(st: Any) -> int:
        """Runs advance in lockstep; a run stopped by NaN/Inf stays behind at its last good iteration."""
        import numpy as np

        from . import distributed

        return int(np.max(distributed.to_host(st.iteration)))


def _checkpointer(job: Job, run: RunDir) -> Any:
    from . import distributed

    checkpointer = distributed.HostCheckpointer(run.path, exclusive=True)
    job.held.callback(lambda: checkpointer.close(abandon=job.stop.requested))
    return checkpointer


def _monitor(job: Job, run: RunDir, runs: Any, start_iteration: int) -> Any:
    from .monitor import RunMonitor

    args, config = job.args, job.config
    return RunMonitor(run.path if run.primary else None, config.n_iterations, config.iter_steps,
                      quiet=args.quiet or not run.primary, verbose=args.verbose,
                      resume_after=start_iteration if job.resuming else None, tensorboard=args.tensorboard,
                      wandb_project=(args.wandb_project or "ppocma_jax") if args.wandb else None,
                      wandb_config=run.document if args.wandb else None,
                      run_labels=None if runs is None else runs.labels)


def _loop(job: Job, run: RunDir, trainer: Any, runs: Any, layout: _Layout, checkpointer: Any, state: Any,
          t_compile: float, say) -> Outcome:
    """Compile one chunk of `checkpoint_every` iterations, then run chunks with a checkpoint after each, until
    the run ends, NaN/Inf stops every run, or a stop is requested."""
    import jax
    import numpy as np

    from . import distributed
    from .checkpoint import CheckpointError
    from .stopping import wait_interruptibly

    args, config, stop = job.args, job.config, job.stop
    n_iter = config.n_iterations
    mesh, state_sh, chunk_fn, hp, iteration_of = (layout.mesh, layout.state_sh, layout.chunk_fn, layout.hp,
                                                  layout.iteration_of)
    start_iteration = iteration_of(state)
    monitor = _monitor(job, run, runs, start_iteration)

    # One compiled chunk of `chunk` iterations serves every chunk (the last one skips what is past n_iter).
    chunk = max(1, min(args.checkpoint_every or n_iter, n_iter))
    def chunk_keeping_layout(st, h, limit):  # returns the state laid out as it came: the next chunk takes it
        st, metrics = chunk_fn(st, h, chunk, monitor, limit)
        return distributed.constrain(st, state_sh), metrics

    run_chunk = jax.jit(chunk_keeping_layout, donate_argnums=0)
    limit = distributed.put(np.int32(n_iter), distributed.replicated(mesh))
    compiled = wait_interruptibly(lambda: run_chunk.lower(state, hp, limit).compile())
    compile_s = time.perf_counter() - t_compile
    say(f"compiled in {compile_s:.1f} s")

    def one_chunk(st):
        st, _ = compiled(st, hp, limit)
        jax.block_until_ready(st)
        jax.effects_barrier()  # every row of the chunk is written before its checkpoint
        return st

    monitor.start()
    t_run = time.perf_counter()
    done_iterations = start_iteration
    stop.deferring = True  # from here a first SIGINT / SIGTERM stops at the chunk's end, with a checkpoint
    try:
        while distributed.agree(done_iterations < n_iter and not monitor.all_runs_failed() and not stop.requested):
            state = wait_interruptibly(lambda: one_chunk(state))
            done_iterations = iteration_of(state)
            # Every process takes the same branch (saving is a collective); process 0 alone writes and knows.
            if distributed.agree(monitor.write_error is not None):  # rows of this chunk are missing:
                raise RunFailure(monitor.write_error or "process 0 could not write the metrics")  # no checkpoint
            save_error = None
            try:
                checkpointer.save(done_iterations, state)  # a failed run's slot holds its last good state
            except CheckpointError as err:
                save_error = err
            if distributed.agree(save_error is not None):
                raise save_error or RunFailure("process 0 could not write a checkpoint")
    finally:
        stop.deferring = False
        monitor.close()
    return _outcome(job, run, runs, monitor, checkpointer, state, start_iteration, done_iterations, compile_s,
                    time.perf_counter() - t_run)


def _outcome(job: Job, run: RunDir, runs: Any, monitor: Any, checkpointer: Any, state: Any, start_iteration: int,
             done_iterations: int, compile_s: float, run_s: float) -> Outcome:
    """The loop's end as an Outcome (a failed metrics write is RunFailure: the rows after the last checkpoint are
    missing). Several processes each print a state checksum; process 0 alone reports and writes."""
    import jax

    from . import distributed

    if monitor.write_error is not None:
        raise RunFailure(monitor.write_error)
    stop = job.stop
    stopped = stop.requested and done_iterations < job.config.n_iterations and not monitor.all_runs_failed()
    if not stopped and jax.process_count() > 1:  # every process took part
        print(f"process {jax.process_index()} of {jax.process_count()}: {done_iterations} iterations, state "
              f"checksum {distributed.checksum(state):.9g}", flush=True)
    return Outcome(job.config, monitor.rows, None if runs is None else runs.labels, start_iteration,
                   done_iterations, compile_s, run_s, checkpointer.directory, monitor.first_nonfinite,
                   len(monitor.failed_runs), stop.signum if stopped else None, run.primary, state=state)


def _render(trainer: Any, state: Any, rows: list[dict], runs: Any, run: RunDir, seed: int, say) -> None:
    """--render: one deterministic episode of the final policy (of the best run of a sweep) to RUN_DIR/render.*.
    A failure is one line on stderr; the run's other outputs are already written and stay."""
    from .render import RenderError, best_run, render_trained
    from .sweep import take_run

    say("rendering one deterministic episode ...", flush=True)
    try:
        index = 0 if runs is None else best_run(rows, len(runs))
        one = state if runs is None else take_run(state, index)
        path = render_trained(trainer, one, run.path / "render", seed)
        say(f"render: {path}" + ("" if runs is None else f" (run {index}, the best final return)"))
    except RenderError as err:
        print(f"{PROG}: warning: --render: {err}; the run's other outputs are kept in {run.path}", file=sys.stderr)
