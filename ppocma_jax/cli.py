"""`python -m ppocma_jax`: train one run from the command line.

Every Config and HParams field is a flag, in underscore and dashed spelling (`--max_steps`, `--max-steps`); the
original Run.py switches keep their spellings (`--env_name`, `-m`, `-lr`, `--ppo_ent_l_w`, `--run_suffix`, ...).
Bad input ends with one line on stderr and exit code 2; a run that produces NaN/Inf ends with exit code 1, as does
a failed write (a full disk); SIGINT / SIGTERM stop at the next checkpoint boundary with exit code 130 / 143
(stopping.py). Every way a run ends leaves a directory that `--resume` continues (or restarts, when it holds no
readable checkpoint) to the same metrics as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, Sequence

from . import __version__
from .config import MODES, Config, ConfigError, HParams, config_fields, hparams_fields
from .errors import CliError, RunFailure
from .outcome import finish
from .presets import DEFAULT_PRESET, preset_names
from .rundir import DEFAULT_CHECKPOINT_EVERY, PROG, RunDir, load_config, refuse_existing_run
from .settings import Job, assemble, resumed

# Original Run.py spellings (and short forms) that differ from our field names.
ALIASES: dict[str, list[str]] = {
    "env": ["--env_name"],
    "mode": ["-m"],
    "learning_rate": ["-lr"],
    "entropy_weight": ["--ppo_ent_l_w"],
}

# What may be given with --resume besides hyperparameters: more steps, the checkpoint interval, the output's
# verbosity and sinks, and where it runs (other devices, other hosts: the state is laid out anew on restore).
RESUME_FLAGS = {"--resume", "--max-steps", "--max_steps", "--quiet", "-q", "--verbose", "--checkpoint-every",
                "--checkpoint_every", "--tensorboard", "--render", "--wandb", "--wandb-project", "--wandb_project",
                "--devices", "--coordinator-address", "--coordinator_address", "--num-processes", "--num_processes",
                "--process-id", "--process_id"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        raise CliError(message)


def _int(text: str) -> int:
    """Integers, also written as 1e6 or 1_000_000 (Run.py took --max_steps 1e6)."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value != int(value):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(value)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _spellings(name: str) -> list[str]:
    flags = [f"--{name}"]
    if "_" in name:
        flags.append(f"--{name.replace('_', '-')}")
    return ALIASES.get(name, []) + flags


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Train PPO-CMA (or PPO / PG) on a JAX environment as one compiled program.",
        epilog="Example: python -m ppocma_jax --env gymnax/Pendulum-v1 --max-steps 500000",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=36, width=120),
    )
    _add_run_flags(parser)
    _add_device_flags(parser)
    _add_field_flags(parser)
    return parser


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("run")
    run.add_argument("--out", type=str, default=None,
                     help="output directory (default: runs/<mode>-<env>-<timestamp>[-<run_suffix>])")
    run.add_argument("--run_suffix", "--run-suffix", dest="run_suffix", default="",
                     help="suffix appended to the default output directory name (Run.py's switch)")
    run.add_argument("--preset", default=None, metavar="NAME",
                     help=f"named settings that flags override: {', '.join(preset_names())}, or none (default: "
                          f"{DEFAULT_PRESET} when --env is not given, else none)")
    run.add_argument("--list-envs", "--list_envs", dest="list_envs", action="store_true",
                     help="print the available environments with observation and action sizes, then exit")
    run.add_argument("--version", action="store_true", help="print the package version, then exit")
    run.add_argument("--resume", default=None, metavar="RUN_DIR",
                     help="continue the run in RUN_DIR from its newest readable checkpoint (from scratch when it "
                          "has none); same config, except --max-steps, --checkpoint-every and hyperparameters "
                          "(e.g. a lower --learning-rate after a NaN halt), which are recorded in config.json")
    run.add_argument("--checkpoint-every", "--checkpoint_every", dest="checkpoint_every", type=_int, default=None,
                     metavar="K", help="save the full train state every K iterations and at the end; 0: only at "
                                       f"the end. The compiled loop runs K iterations per call, so Ctrl-C / "
                                       f"SIGTERM stop (and save) at the next multiple of K (default: "
                                       f"{DEFAULT_CHECKPOINT_EVERY}; stored in config.json for --resume)")
    run.add_argument("--seeds", type=_int, default=1, metavar="K",
                     help="train K seeds (seed, seed+1, ...) as one compiled program (default: 1)")
    run.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2",
                     help="sweep a hyperparameter over values; repeat for a grid (the product); with --seeds, "
                          "every setting runs every seed")
    run.add_argument("--sweep-random", "--sweep_random", dest="sweep_random", type=_int, default=0, metavar="N",
                     help="N settings drawn at random from ppocma_jax.sweep.RANDOM_RANGES (robustness study)")
    run.add_argument("--tensorboard", action="store_true",
                     help="also log every metric to RUN_DIR/tensorboard (needs tensorboardX)")
    run.add_argument("--quiet", "-q", action="store_true", help="print only the final summary")
    run.add_argument("--verbose", action="store_true", help="print every iteration with losses (Run.py's switch)")
    run.add_argument("--wandb", action="store_true",
                     help="also log every metric to Weights & Biases (needs wandb; WANDB_MODE=offline works offline)")
    run.add_argument("--wandb-project", "--wandb_project", dest="wandb_project", default=None, metavar="NAME",
                     help="wandb project of --wandb (default: ppocma_jax)")
    run.add_argument("--render", action="store_true",
                     help="at the end, render one deterministic episode to RUN_DIR/render.gif (gymnax) or "
                          "render.html (brax) (Run.py's switch)")


def _add_device_flags(parser: argparse.ArgumentParser) -> None:
    dist = parser.add_argument_group("devices and hosts (see ppocma_jax/distributed.py)")
    dist.add_argument("--devices", type=_int, default=None, metavar="N",
                      help="shard over the first N devices: the envs of one run, or the runs of --seeds / --sweep "
                           "(default: all devices of all processes)")
    dist.add_argument("--coordinator-address", "--coordinator_address", dest="coordinator_address", default=None,
                      metavar="HOST:PORT", help="multi-host: address of process 0 for jax.distributed.initialize; "
                                                "'auto' where jax detects the cluster (SLURM, ...)")
    dist.add_argument("--num-processes", "--num_processes", dest="num_processes", type=_int, default=None,
                      metavar="N", help="multi-host: number of processes")
    dist.add_argument("--process-id", "--process_id", dest="process_id", type=_int, default=None, metavar="I",
                      help="multi-host: index of this process; only process 0 writes files and reports")


def _add_field_flags(parser: argparse.ArgumentParser) -> None:
    """Every Config field (static: shapes and code paths) and HParams field (dynamic: a pytree) as a flag."""
    cfg = parser.add_argument_group("configuration (static: changing these recompiles)")
    for f in config_fields():
        help_text = f.metadata.get("help", "")
        if "default:" not in help_text:
            help_text += " (default: %(default)s)"
        if f.type in ("int", int):
            kind = dict(type=_int, metavar="N")
        elif f.type in ("bool", bool):
            kind = dict(action=argparse.BooleanOptionalAction)
        elif "tuple" in str(f.type):
            kind = dict(type=_floats, metavar="X,Y,..")
        elif f.name == "mode":
            kind = dict(choices=MODES, metavar="MODE")
        else:
            kind = dict(type=str, metavar="STR")
        cfg.add_argument(*_spellings(f.name), dest=f.name, default=None,
                         help=help_text.replace("%(default)s", str(f.default)), **kind)

    hp = parser.add_argument_group("hyperparameters (dynamic: a pytree, vmappable)")
    for f in hparams_fields():
        help_text = f.metadata.get("help", "") + f" (default: {f.default})"
        if f.name == "learning_rate":
            help_text += "; also sets critic_learning_rate unless that is given"
        hp.add_argument(*_spellings(f.name), dest=f.name, type=_float, default=None, metavar="X", help=help_text)


def _given_flags(argv: Sequence[str] | None) -> list[str]:
    """The option strings on the command line, in order (negative numbers are values, not options)."""
    return [a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])
            if a.startswith("-") and not re.match(r"-[\d.]", a)]


def _check_one_spelling(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> None:
    """Two spellings of one setting (--env and --env_name, -lr and --learning-rate) are refused: argparse would keep
    whichever came last, silently."""
    dest_of = {opt: action.dest for action in parser._actions for opt in action.option_strings}
    seen: dict[str, str] = {}
    for flag in _given_flags(argv):
        dest = dest_of.get(flag)
        if dest is None or dest in ("sweep",):
            continue
        if dest in seen and seen[dest] != flag:
            raise CliError(f"{seen[dest]} and {flag} set the same thing ({dest}); give one of them")
        seen.setdefault(dest, flag)


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Config, HParams]:
    """Flags -> (namespace, Config, HParams): the preset (settings.assemble) with the given flags over it. Sets
    args.preset (its name, "none" for no preset) and args.preset_settings."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_one_spelling(parser, argv)
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


def _hparams_flags() -> set[str]:
    return {flag for f in hparams_fields() for flag in _spellings(f.name)}


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
    given = set(_given_flags(argv))
    if given - RESUME_FLAGS - _hparams_flags():
        raise CliError(f"--resume continues the run as configured in its config.json; only --max-steps, "
                       f"--checkpoint-every, hyperparameters, --quiet and --verbose may be given with it (got "
                       f"{', '.join(sorted(given - RESUME_FLAGS - _hparams_flags()))})")
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
    from .distributed import init_hosts

    init_hosts(args.coordinator_address, args.num_processes, args.process_id)  # before any JAX computation
    if config.env.startswith("gymnasium/"):  # flags a host run cannot honour: one line, before the run dir exists
        from .host_train import check_args

        check_args(args)
    out_dir, config, hparams, document, changes = _resume_or_new(args, config, hparams, argv)
    held.push(_annotate(out_dir))
    stop = held.enter_context(StopRequests(on_first=lambda signum: announce_stop(
        signum, "the end of the running chunk (a multiple of --checkpoint-every iterations)")))
    run = None if document is None else RunDir.reopen(out_dir, document, held, argv)
    job = Job(args, config, hparams, out_dir, argv, held, stop, run, changes)
    if config.env.startswith("gymnasium/"):  # stepped on the host, same compiled update: see host_train.py
        from .host_train import train_host as drive
    else:
        from .compiled_train import train_compiled as drive
    run, outcome = drive(job)
    return 0 if outcome is None else finish(run, outcome)


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
