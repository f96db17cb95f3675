"""The compiled driver: one run, or a seeds / sweep program of runs, of a JAX suite (gymnax, brax, didactic).

`train_compiled(job)` validates the settings against the env, lays the runs out on the device mesh
(distributed.py), creates or reopens the run directory (rundir.py), compiles (or loads from the persistent cache,
compile_cache.py) one chunk of iterations that returns its metrics, and loops over chunks, the host writing and
printing each chunk's rows and checkpointing every `checkpoint_every` iterations, until the run ends, NaN/Inf stops
every run, or a SIGINT / SIGTERM asks to stop. It returns the `Outcome` (outcome.py), or None when a resumed run was already
finished; the CLI reports it with `outcome.finish`.
"""

from __future__ import annotations

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

    from .compile_cache import ProgramStore
    from .envs.factory import is_factory_spec

    timer = _CompileTimer()
    # The compiled programs, loaded without tracing on a later run; but an env from a factory (--env module:factory)
    # is the user's code, which can change between runs where no key sees it: traced every run (JAX's own cache
    # still serves the executable when the traced program is unchanged).
    programs = ProgramStore(None if is_factory_spec(config.env) else args.cache_dir)
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
        init_program = wait_interruptibly(lambda: layout.initial_program(programs, config))
        state = timer.initialise(lambda: wait_interruptibly(lambda: jax.block_until_ready(
            init_program(layout.keys, layout.hp))))
    outcome = _loop(job, run, runs, layout, checkpointer, state, programs, timer, say)
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
    say(f"compile cache: {args.cache_dir if args.cache_dir is not None else 'off'}")


class _Layout:
    """Where the state lives: one run's envs split over the devices, or several runs split (distributed.py)."""

    def __init__(self, trainer: Any, runs: Any, hparams: Any, seed: int, mesh: Any):
        import jax

        from . import distributed

        if runs is None:
            hp, keys = hparams.as_arrays(), jax.random.PRNGKey(seed)
            self.init, self.chunk_fn, self.eval_fn = trainer.init_state, trainer.run, trainer.evaluate
        else:
            hp, keys = runs.hparams.as_arrays(), runs.keys
            self.init, self.chunk_fn = jax.vmap(trainer.init_state), trainer.run_batched
            self.eval_fn = jax.vmap(trainer.evaluate)  # [R] returns, one per run
        self.mesh, self.batched = mesh, runs is not None
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

    def initial_program(self, programs: Any, config: Any) -> Any:
        """The compiled `init(keys, hp)`, laid out on the mesh (from the program store when it holds it)."""
        from . import distributed

        return programs.compile("init", f"{config!r} batched={self.batched} -> {self.state_sh!r}",
                                lambda k, h: distributed.constrain(self.init(k, h), self.state_sh),
                                (self.keys, self.hp))

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


# Iterations per compiled chunk. One keeps progress live (a line per iteration; a brax iteration takes seconds) and
# lets the host run the evaluation, a program of its own, after exactly the iterations that call for it.
CHUNK = 1


class _CompileTimer:
    """Wall and CPU seconds from the driver's start to the compiled chunk, the policy's initialisation (running,
    not compiling) taken out."""

    def __init__(self):
        self.t0, self.cpu0, self.init_s = time.perf_counter(), time.process_time(), 0.0

    def initialise(self, fn):
        t, cpu = time.perf_counter(), time.process_time()
        out = fn()
        self.init_s = time.perf_counter() - t
        self.cpu0 += time.process_time() - cpu
        return out

    def compiled(self) -> tuple[float, float]:
        """(wall s, CPU s) of compiling so far: what a loaded machine inflates, and what it does not."""
        return time.perf_counter() - self.t0 - self.init_s, time.process_time() - self.cpu0


def _compile_chunk(job: Job, layout: _Layout, programs: Any, state: Any, chunk: int, limit: Any) -> Any:
    """One compiled chunk of `chunk` iterations serves every chunk (the last one skips what is past n_iter). It
    returns its metrics instead of calling back to the host: JAX never stores a program with a host callback in
    its persistent compilation cache (compile_cache.py). It leaves the evaluation out (`_Evaluation`)."""
    from . import distributed
    from .stopping import wait_interruptibly

    replicated = distributed.replicated(layout.mesh)

    def chunk_keeping_layout(st, h, lim):  # returns the state laid out as it came: the next chunk takes it
        st, metrics = layout.chunk_fn(st, h, chunk, None, lim, evaluate=False)
        return distributed.constrain(st, layout.state_sh), distributed.constrain(metrics, replicated)

    return wait_interruptibly(lambda: programs.compile(
        "chunk", f"{job.config!r} batched={layout.batched} chunk={chunk} -> {layout.state_sh!r}",
        chunk_keeping_layout, (state, layout.hp, limit), donate_first=True))


class _Evaluation:
    """The deterministic evaluation (Trainer.evaluate) as a program of its own, run by the host after the chunks
    that end on an evaluation iteration (evaluation.eval_due), rather than inside the chunk.

    Why: in a brax env the evaluation's episodes hold a second copy of the physics step, as large as the whole
    training iteration besides it (brax/hopper: 23k of the chunk's 61k HLO instructions). Loading a program from
    the cache takes time in proportion to its size, so without it the chunk loads in under half the time, and the
    evaluation loads (or compiles, the first time) on a thread of its own while the first iterations run.

    The values are those of the inlined evaluation (`Trainer.run`), the same function of the same state: equal to
    the last digit on the gymnax runs compared, within a float32 rounding on brax/hopper (XLA arranges the
    standalone program's sums a little differently). One difference by design: an iteration whose update was
    discarded (NaN/Inf) reports no evaluation, where the inlined one evaluated the discarded parameters."""

    def __init__(self, job: Job, layout: _Layout, programs: Any, state: Any):
        import jax

        from . import distributed
        from .compile_cache import BackgroundCompile

        self.config, self.hp = job.config, layout.hp
        replicated = distributed.replicated(layout.mesh)
        # shapes and layouts only: the chunk donates (deletes) `state`'s buffers while this compiles
        like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        self._program = BackgroundCompile(lambda: programs.compile(
            "eval", f"{job.config!r} batched={layout.batched} -> {replicated!r}",
            lambda st, h: distributed.constrain(layout.eval_fn(st, h), replicated), (like, layout.hp)), "eval")

    def fill(self, state: Any, metrics: dict) -> dict:
        """`metrics` (host arrays, one iteration [1] or [1, R], as the chunk returned them) with eval_return set
        when that iteration ran and calls for an evaluation: the return of `state`, the chunk's result, for each
        run whose update was kept (finite=1); NaN for a run whose update was discarded (its state is the one
        before). Waits for the program on the first call."""
        import numpy as np

        from . import distributed
        from .evaluation import eval_due

        iteration = int(np.max(metrics["iteration"][0]))
        if iteration > self.config.n_iterations or not eval_due(iteration, self.config):
            return metrics
        returns = distributed.to_host(self._program.result()(state, self.hp))
        kept = np.asarray(metrics["finite"][0]) == 1
        return dict(metrics, eval_return=np.where(kept, returns, np.nan).astype(np.float32)[None])

    @property
    def seconds(self) -> float | None:
        """Wall seconds the program took to load or compile (on its own thread), once it is ready."""
        return self._program.seconds


def _reporter(monitor: Any, chunk: int, n_iter: int, single: bool):
    """`report(metrics)`: a chunk's rows to the monitor, as an in-loop callback would give them: iterations past
    the end are left out, and a single run reports nothing after its first NaN/Inf iteration (those were skipped)."""
    import jax
    import numpy as np

    def report(metrics: dict) -> None:
        for i in range(chunk):
            row = jax.tree.map(lambda x: x[i], metrics)
            ran = np.asarray(row["iteration"]).reshape(-1)[0] <= n_iter
            if single and (monitor.failed_runs or not ran):
                return
            monitor(row, ran)

    return report


def _loop(job: Job, run: RunDir, runs: Any, layout: _Layout, checkpointer: Any, state: Any, programs: Any,
          timer: _CompileTimer, say) -> Outcome:
    """Compile the chunk, then run chunks, the host writing each chunk's rows and saving a checkpoint every
    `checkpoint_every` iterations, until the run ends, NaN/Inf stops every run, or a stop is requested."""
    import numpy as np

    from . import distributed
    from .compile_cache import CacheEvents
    from .stopping import wait_interruptibly

    args, config, stop = job.args, job.config, job.stop
    n_iter = config.n_iterations
    hp, iteration_of = layout.hp, layout.iteration_of
    start_iteration = iteration_of(state)
    monitor = _monitor(job, run, runs, start_iteration)

    every = max(1, min(args.checkpoint_every or n_iter, n_iter))  # a checkpoint every `every` iterations
    limit = distributed.put(np.int32(n_iter), distributed.replicated(layout.mesh))
    with CacheEvents() as cache_events:
        compiled = _compile_chunk(job, layout, programs, state, CHUNK, limit)
    compile_s, compile_cpu_s = timer.compiled()
    say(f"compiled in {compile_s:.1f} s ({compile_cpu_s:.1f} s CPU) {cache_events.describe(args.cache_dir)}".rstrip()
        + (f"; initialised in {timer.init_s:.1f} s" if timer.init_s else ""))
    evaluation = _Evaluation(job, layout, programs, state) if config.eval_every > 0 else None
    report = _reporter(monitor, CHUNK, n_iter, runs is None)

    def one_chunk(st):
        st, metrics = compiled(st, hp, limit)
        metrics = distributed.to_host(metrics)  # waits for the chunk
        return st, metrics if evaluation is None else evaluation.fill(st, metrics)

    monitor.start()
    t_run = time.perf_counter()
    done_iterations = start_iteration
    stop.deferring = True  # from here a first SIGINT / SIGTERM stops at the chunk's end, with a checkpoint
    try:
        stopping = False  # read once per chunk: a stop requested between the checkpoint and the test is not lost
        while distributed.agree(done_iterations < n_iter and not monitor.all_runs_failed() and not stopping):
            state, metrics = wait_interruptibly(lambda: one_chunk(state))
            report(metrics)
            done_iterations = iteration_of(state)
            # Every process takes the same branch (saving is a collective); process 0 alone writes and knows.
            if distributed.agree(monitor.write_error is not None):  # rows of this chunk are missing:
                raise RunFailure(monitor.write_error or "process 0 could not write the metrics")  # no checkpoint
            stopping = stop.requested
            if not distributed.agree(done_iterations % every == 0 or done_iterations >= n_iter
                                     or monitor.all_runs_failed() or stopping):
                continue  # no checkpoint due
            _save(checkpointer, done_iterations, state)
    finally:
        stop.deferring = False
        monitor.close()
    outcome = _outcome(job, run, runs, monitor, checkpointer, state, start_iteration, done_iterations, compile_s,
                       time.perf_counter() - t_run)
    outcome.init_s, outcome.compile_cpu_s = timer.init_s, compile_cpu_s
    outcome.eval_compile_s = None if evaluation is None else evaluation.seconds
    return outcome


def _save(checkpointer: Any, iteration: int, state: Any) -> None:
    """A checkpoint after `iteration` (a failed run's slot holds its last good state). Every process takes the
    same branch (saving is a collective); a failed write is CheckpointError, or RunFailure on the other processes."""
    from . import distributed
    from .checkpoint import CheckpointError

    save_error = None
    try:
        checkpointer.save(iteration, state)
    except CheckpointError as err:
        save_error = err
    if distributed.agree(save_error is not None):
        raise save_error or RunFailure("process 0 could not write a checkpoint")


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
