"""`python -m ppocma_jax`: train one run (or a seeds / sweep program of runs) from the command line.

This module parses (flags.py, settings.py) and dispatches: a new run or a resume becomes a `settings.Job`, which the
compiled driver (compiled_train.py: gymnax, brax) or the host driver (host_train.py: gymnasium) trains; their
`Outcome` is reported by outcome.finish, and the run directory is handled by rundir.py.
Bad input ends with one line on stderr and exit code 2; a run that produces NaN/Inf ends with exit code 1, as does
a failed write (a full disk); SIGINT / SIGTERM stop at the next checkpoint boundary with exit code 130 / 143
(stopping.py). Every way a run ends leaves a directory that `--resume` continues (or restarts, when it holds no
readable checkpoint) to the same metrics as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .config import Config, ConfigError, HParams
from .errors import CliError, RunFailure
from .flags import RESUME_FLAGS, build_parser, check_one_spelling, given_flags, hparams_flags
from .outcome import finish
from .rundir import DEFAULT_CHECKPOINT_EVERY, PROG, RunDir, load_config, refuse_existing_run
from .settings import Job, assemble, resumed


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Config, HParams]:
    """Flags -> (namespace, Config, HParams): the preset (settings.assemble) with the given flags over it. Sets
    args.preset (its name, "none" for no preset) and args.preset_settings."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_one_spelling(parser, argv)
    config, hparams, args.preset, args.preset_settings = assemble(args.preset, args.mode, vars(args))
    return args, config, hparams


def default_out_dir(config: Config, suffix: str = "") -> Path:
    env = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.env)
    name = f"{config.mode}-{env}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return Path("runs") / (name + (f"-{suffix}" if suffix else ""))


def list_envs_text() -> str:
    from .envs import list_envs

    lines = [f"{'env':40s} {'obs':>5s}  actions"]
    for spec in list_envs():
        if spec.discrete:
            action = f"discrete({spec.action_dim})"
        else:
            action = f"box({spec.action_dim}) in [{min(spec.action_low):g}, {max(spec.action_high):g}]"
        lines.append(f"{spec.name:40s} {spec.obs_dim:5d}  {action}")
    from .envs.gymnasium_env import static_specs

    for spec in static_specs():  # stepped on the host (host_train.py); any Box gymnasium id works
        lines.append(f"{spec.name:40s} {spec.obs_dim:5d}  box({spec.action_dim}) in [{min(spec.action_low):g}, "
                     f"{max(spec.action_high):g}]")
    return "\n".join(lines)



def _resume_or_new(args: argparse.Namespace, config: Config, hparams: HParams, argv: Sequence[str] | None
                   ) -> tuple[Path, Config, HParams, dict[str, Any] | None, dict[str, list]]:
    """New run: the directory, checked to hold no run (it is created, locked and written by the driver once the
    settings are validated). --resume: config.json's settings with what a resume may change (settings.resumed);
    only those flags are accepted. -> (directory, config, hparams, config.json's document when resuming, changes).
    Sets args.checkpoint_every (given, stored, or the default)."""
    if not args.resume:
        if args.checkpoint_every is None:
            args.checkpoint_every = DEFAULT_CHECKPOINT_EVERY
        run_dir = Path(args.out) if args.out else default_out_dir(config, args.run_suffix)
        refuse_existing_run(run_dir)
        return run_dir, config, hparams, None, {}
    run_dir = Path(args.resume)
    given = set(given_flags(argv))
    if given - RESUME_FLAGS - hparams_flags():
        raise CliError(f"--resume continues the run as configured in its config.json; only --max-steps, "
                       f"--checkpoint-every, hyperparameters, --quiet and --verbose may be given with it (got "
                       f"{', '.join(sorted(given - RESUME_FLAGS - hparams_flags()))})")
    saved_config, saved_hparams, document = load_config(run_dir)
    config, hparams, args.checkpoint_every, changes = resumed(document, saved_config, saved_hparams, args.max_steps,
                                                              args.checkpoint_every, vars(args))
    return run_dir, config, hparams, document, changes


def run(argv: Sequence[str] | None = None) -> int:
    """Train (or resume) one run or one batch of runs as `python -m ppocma_jax` does; returns the exit code. The
    run directory's lock and the signal handlers are held until it returns."""
    with contextlib.ExitStack() as held:
        return _run(argv, held)


def _annotate(out_dir: Path):
    """An ExitStack exit callback: an interrupt or failure leaving `run` carries the run directory (for main's
    resume hint)."""
    def callback(exc_type, exc, tb) -> bool:
        if exc is not None and not hasattr(exc, "out_dir"):
            with contextlib.suppress(AttributeError):
                exc.out_dir = out_dir
        return False
    return callback


def _run(argv: Sequence[str] | None, held: contextlib.ExitStack) -> int:
    from .stopping import StopRequests, announce_stop

    args, config, hparams = parse_args(argv)
    if args.list_envs:
        print(list_envs_text())
        return 0
    if args.version:
        print(f"ppocma_jax {__version__}")
        return 0
    _check_run_flags(args)
    args.cache_dir = _configure_compile_cache(args.compile_cache)  # before anything compiles
    from .distributed import init_hosts

    init_hosts(args.coordinator_address, args.num_processes, args.process_id)  # before any JAX computation
    if config.env.startswith("gymnasium/"):  # flags a host run cannot honour: one line, before the run dir exists
        from .host_train import check_args

        check_args(args)
    out_dir, config, hparams, document, changes = _resume_or_new(args, config, hparams, argv)
    held.push(_annotate(out_dir))
    stop = held.enter_context(StopRequests(on_first=lambda signum: announce_stop(
        signum, "the end of the running iteration")))
    run = None if document is None else RunDir.reopen(out_dir, document, held, argv)
    job = Job(args, config, hparams, out_dir, argv, held, stop, run, changes)
    if config.env.startswith("gymnasium/"):  # stepped on the host, same compiled update: see host_train.py
        from .host_train import train_host as drive
    else:
        from .compiled_train import train_compiled as drive
    run, outcome = drive(job)
    return 0 if outcome is None else finish(run, outcome)


def _configure_compile_cache(flag: str | None) -> Path | None:
    """JAX's persistent compilation cache as --compile-cache / $PPOCMA_JAX_COMPILE_CACHE ask (compile_cache.py):
    the directory in use, or None (off, or unwritable: one warning line). A bad value is CliError."""
    import jax

    from .compile_cache import CacheSettingError, configure, resolve_cache_dir

    try:
        wanted = resolve_cache_dir(flag, jax_dir=jax.config.jax_compilation_cache_dir)
    except CacheSettingError as err:
        raise CliError(str(err)) from None
    directory, warning = configure(wanted)
    if warning is not None:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    return directory


def _check_run_flags(args: argparse.Namespace) -> None:
    """Flags that need a package, or each other: one line before anything else happens."""
    if args.wandb_project is not None and not args.wandb:
        raise CliError("--wandb-project is given without --wandb")
    if args.wandb:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise CliError('--wandb needs wandb: pip install wandb (or pip install -e ".[wandb]")') from None
    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise CliError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    if args.tensorboard:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise CliError("--tensorboard needs tensorboardX: pip install tensorboardX") from None


def _resume_hint(out_dir: Path | None) -> str:
    if out_dir is None or not (out_dir / "config.json").exists():
        return ""
    return f"; continue with: {PROG} --resume {out_dir}"


ABORTED = False  # set when main returns from an interrupt: __main__ then exits without waiting for XLA's threads


def main(argv: Sequence[str] | None = None) -> int:
    global ABORTED
    from .checkpoint import CheckpointError
    from .envs import UnknownEnvError
    from .monitor import MetricsWriteError
    from .stopping import Interrupted, signal_name

    try:
        return run(argv)
    except (CliError, ConfigError, UnknownEnvError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except (RunFailure, CheckpointError, MetricsWriteError) as err:
        print(f"{PROG}: error: {err}{_resume_hint(getattr(err, 'out_dir', None))}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted) as err:
        ABORTED = True
        signum = err.signum if isinstance(err, Interrupted) else 2
        print(f"{PROG}: stopped by {signal_name(signum)}{_resume_hint(getattr(err, 'out_dir', None))}",
              file=sys.stderr, flush=True)
        return 128 + signum


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
