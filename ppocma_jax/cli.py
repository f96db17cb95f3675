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
import dataclasses
import json
import math
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import NoReturn, Sequence

from .errors import CliError, RunFailure
from .config import MODES, Config, ConfigError, HParams, config_fields, hparams_fields, to_jsonable
from .presets import DEFAULT_PRESET, PRESETS, preset_names, resolve_preset
from .compile_cache import ENV_VAR
from .stopping import signal_name

PROG = "python -m ppocma_jax"

# Original Run.py spellings (and short forms) that differ from our field names.
ALIASES: dict[str, list[str]] = {
    "env": ["--env_name"],
    "mode": ["-m"],
    "learning_rate": ["-lr"],
    "entropy_weight": ["--ppo_ent_l_w"],
}

# Thresholds at which gymnax's classic-control tasks count as solved (gym's reward_threshold).
SOLVED_AT: dict[str, float] = {
    "gymnax/MountainCarContinuous-v0": 90.0,
    "gymnax/CartPole-v1": 475.0,
    "gymnax/Pendulum-v1": -200.0,
}


DEFAULT_CHECKPOINT_EVERY = 25


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
    run.add_argument("--resume", default=None, metavar="RUN_DIR",
                     help="continue the run in RUN_DIR from its newest readable checkpoint (from scratch when it "
                          "has none); same config, except --max-steps, --checkpoint-every and hyperparameters "
                          "(e.g. a lower --learning-rate after a NaN halt), which are recorded in config.json")
    run.add_argument("--checkpoint-every", "--checkpoint_every", dest="checkpoint_every", type=_int, default=None,
                     metavar="K", help="save the full train state every K iterations and at the end; 0: only at "
                                       "the end. Ctrl-C / SIGTERM stop (and save) at the end of the running "
                                       f"iteration (default: {DEFAULT_CHECKPOINT_EVERY}; stored in config.json for "
                                       "--resume)")
    run.add_argument("--compile-cache", "--compile_cache", dest="compile_cache", default=None, metavar="DIR|off",
                     help="keep compiled programs in DIR, so the next run of the same configuration loads them "
                          f"instead of compiling; 'off': no cache (default: ${ENV_VAR}, else "
                          "$XDG_CACHE_HOME/ppocma_jax/xla, i.e. ~/.cache/ppocma_jax/xla)")
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

    cfg = parser.add_argument_group("configuration (static: changing these recompiles)")
    for f in config_fields():
        help_text = f.metadata.get("help", "")
        if "default:" not in help_text:
            help_text += " (default: %(default)s)"
        default = f.default
        if f.type in ("int", int):
            cfg.add_argument(*_spellings(f.name), dest=f.name, type=_int, default=None, metavar="N",
                             help=help_text.replace("%(default)s", str(default)))
        elif f.type in ("bool", bool):
            cfg.add_argument(*_spellings(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                             help=help_text.replace("%(default)s", str(default)))
        elif "tuple" in str(f.type):
            cfg.add_argument(*_spellings(f.name), dest=f.name, type=_floats, default=None, metavar="X,Y,..",
                             help=help_text.replace("%(default)s", str(default)))
        elif f.name == "mode":
            cfg.add_argument(*_spellings(f.name), dest=f.name, choices=MODES, default=None, metavar="MODE",
                             help=help_text.replace("%(default)s", str(default)))
        else:
            cfg.add_argument(*_spellings(f.name), dest=f.name, type=str, default=None, metavar="STR",
                             help=help_text.replace("%(default)s", str(default)))

    hp = parser.add_argument_group("hyperparameters (dynamic: a pytree, vmappable)")
    for f in hparams_fields():
        help_text = f.metadata.get("help", "") + f" (default: {f.default})"
        if f.name == "learning_rate":
            help_text += "; also sets critic_learning_rate unless that is given"
        hp.add_argument(*_spellings(f.name), dest=f.name, type=_float, default=None, metavar="X", help=help_text)
    return parser


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
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_one_spelling(parser, argv)
    preset_name = args.preset if args.preset is not None else (DEFAULT_PRESET if args.env is None else "none")
    if preset_name != "none" and preset_name not in PRESETS:
        raise CliError(f"unknown preset {preset_name!r}; valid: {', '.join(preset_names())}, none")
    preset = resolve_preset(preset_name, args.mode) if preset_name != "none" else {}
    args.preset_settings = preset
    args.preset = preset_name
    hp_names = {f.name for f in hparams_fields()}
    cfg_changes = {k: v for k, v in preset.items() if k not in hp_names}
    hp_changes = {k: v for k, v in preset.items() if k in hp_names}
    cfg_changes.update({f.name: getattr(args, f.name) for f in config_fields() if getattr(args, f.name) is not None})
    hp_changes.update({f.name: getattr(args, f.name) for f in hparams_fields() if getattr(args, f.name) is not None})
    if "learning_rate" in hp_changes and "critic_learning_rate" not in hp_changes:
        hp_changes["critic_learning_rate"] = hp_changes["learning_rate"]  # the original used one rate for both
    if "env" in cfg_changes and not str(cfg_changes["env"]).startswith("gymnasium/"):  # host envs: host_train.py
        from .envs import UnknownEnvError, canonical_env_name

        try:
            cfg_changes["env"] = canonical_env_name(cfg_changes["env"])
        except UnknownEnvError as err:
            raise CliError(str(err)) from None
    config = Config(**cfg_changes)
    hparams = dataclasses.replace(HParams(), **hp_changes)
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


def _load_run_config(run_dir: Path) -> tuple[Config, HParams]:
    from .config import from_jsonable

    path = run_dir / "config.json"
    try:
        return from_jsonable(json.loads(path.read_text()))
    except FileNotFoundError:
        raise CliError(f"{str(run_dir)!r} is not a run directory: no config.json there") from None
    except (ValueError, TypeError, KeyError) as err:
        raise CliError(f"{str(run_dir)!r} has an unreadable config.json ({err})") from None


def _hparams_flags() -> set[str]:
    return {flag for f in hparams_fields() for flag in _spellings(f.name)}


def _prepare_run_dir(args: argparse.Namespace, config: Config, hparams: HParams, argv: Sequence[str] | None
                     ) -> tuple[Path, Config, HParams, bool]:
    """New run: check the directory holds no run (it is created, locked and written later, once the settings are
    validated). --resume: read config.json back, apply the changes allowed on resume (--max-steps,
    --checkpoint-every, hyperparameters) and lock the directory. Sets args.checkpoint_every (given, stored, or the
    default), args.changes ({name: [old, new]}, for config.json's "continued" record) and args.document."""
    args.changes = {}
    args.document = None
    if args.resume:
        run_dir = Path(args.resume)
        given = set(_given_flags(argv))
        allowed = {"--resume", "--max-steps", "--max_steps", "--quiet", "-q", "--verbose", "--checkpoint-every",
                   "--checkpoint_every", "--tensorboard", "--render", "--wandb", "--wandb-project",
                   "--wandb_project", "--compile-cache", "--compile_cache"} | _hparams_flags()
        # where it runs may change: other devices, other hosts (the state is laid out anew on restore)
        allowed |= {"--devices", "--coordinator-address", "--coordinator_address", "--num-processes",
                    "--num_processes", "--process-id", "--process_id"}
        if given - allowed:
            raise CliError(f"--resume continues the run as configured in its config.json; only --max-steps, "
                           f"--checkpoint-every, hyperparameters, --quiet and --verbose may be given with it (got "
                           f"{', '.join(sorted(given - allowed))})")
        saved_config, saved_hparams = _load_run_config(run_dir)
        document = json.loads((run_dir / "config.json").read_text())
        args.document = document
        stored_every = document.get("checkpoint_every", DEFAULT_CHECKPOINT_EVERY)
        if args.checkpoint_every is None:
            args.checkpoint_every = stored_every
        elif args.checkpoint_every != stored_every:
            args.changes["checkpoint_every"] = [stored_every, args.checkpoint_every]
        if args.max_steps is not None and args.max_steps != saved_config.max_steps:
            args.changes["max_steps"] = [saved_config.max_steps, args.max_steps]
            saved_config = saved_config.replace(max_steps=args.max_steps)
        hp_changes = {f.name: getattr(args, f.name) for f in hparams_fields() if getattr(args, f.name) is not None}
        if "learning_rate" in hp_changes and "critic_learning_rate" not in hp_changes:
            hp_changes["critic_learning_rate"] = hp_changes["learning_rate"]  # as for a new run
        swept = {k for changes in document.get("runs", {}).get("changes", []) for k in changes}
        if swept & set(hp_changes):
            raise CliError(f"--resume cannot change {', '.join(sorted(swept & set(hp_changes)))}: the sweep sets "
                           "it per run")
        for name, value in hp_changes.items():
            old = getattr(saved_hparams, name)
            if value != old:
                args.changes[name] = [old, value]
        saved_hparams = dataclasses.replace(saved_hparams, **hp_changes)
        return run_dir, saved_config, saved_hparams, True
    if args.checkpoint_every is None:
        args.checkpoint_every = DEFAULT_CHECKPOINT_EVERY
    run_dir = Path(args.out) if args.out else default_out_dir(config, args.run_suffix)
    refuse_existing_run(run_dir)
    return run_dir, config, hparams, False


def refuse_existing_run(run_dir: Path) -> None:
    """A new run never writes into a directory that already holds one (CliError, one line saying what to do)."""
    from .checkpoint import has_checkpoint
    from .distributed import is_primary

    if (run_dir / "config.json").exists() and is_primary():  # other processes see process 0's new file
        if not has_checkpoint(run_dir):
            raise CliError(f"{str(run_dir)!r} holds a run that stopped before its first checkpoint; start it again "
                           f"with --resume {run_dir} (same settings), or choose another --out")
        raise CliError(f"{str(run_dir)!r} already holds a run; continue it with --resume {run_dir} or choose "
                       "another --out")


def lock_run_dir(run_dir: Path) -> contextlib.AbstractContextManager:
    """This process's exclusive lock on `run_dir` (runlock.py), as a context manager; a no-op on processes other
    than 0, which never write. A second writer is CliError (one line, exit 2)."""
    from .distributed import is_primary
    from .runlock import RunLock, RunLockError

    if not is_primary():
        return contextlib.nullcontext()
    try:
        lock = RunLock.acquire(run_dir)
    except RunLockError as err:
        raise CliError(str(err)) from None
    if not lock.held:
        print(f"{PROG}: note: {run_dir} is on a file system without locks: a second run writing it would not be "
              "detected", file=sys.stderr)
    return lock


def write_config_json(run_dir: Path, document: dict) -> None:
    """config.json, replaced atomically (a kill or a full disk leaves the old one or the new one)."""
    tmp = run_dir / "config.json.tmp"
    try:
        tmp.write_text(json.dumps(document, indent=2) + "\n")
        tmp.replace(run_dir / "config.json")
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CliError(f"cannot write {run_dir / 'config.json'}: {err.strerror or err}") from None


def resume_point(args: argparse.Namespace, config: Config, out_dir: Path, iteration: int | None) -> bool:
    """After the restore on --resume: True when the run is already finished (say so; nothing to do). Refuses
    (CliError) a --max-steps below the checkpoint. Otherwise records the changes made on resume in config.json
    (its settings become the new ones; "continued" lists when and what changed) and returns False."""
    n_iter = config.n_iterations
    if iteration is not None and iteration > n_iter:
        raise CliError(f"--max-steps {config.max_steps} is below the newest checkpoint of {out_dir} (after iteration "
                       f"{iteration}, {iteration * config.iter_steps:,} env steps); give at least "
                       f"{iteration * config.iter_steps}")
    if iteration is not None and iteration >= n_iter:
        print(f"{out_dir} is finished: {iteration} iterations ({iteration * config.iter_steps:,} env steps) done; "
              "nothing to do (raise --max-steps to train further)")
        return True
    if args.changes:
        from .distributed import is_primary

        document = args.document
        for name, (_, new) in args.changes.items():
            if name == "checkpoint_every":
                document["checkpoint_every"] = new
            elif name == "max_steps":
                document["config"]["max_steps"] = new
            else:
                document["hparams"][name] = new
        document.setdefault("continued", []).append({"after_iteration": iteration or 0, "changed": args.changes})
        if is_primary():
            write_config_json(out_dir, document)
    return False


def restore_or_restart(checkpointer, like, out_dir: Path) -> tuple[int | None, object]:
    """--resume: the newest readable checkpoint (iteration, state), or (None, None) when there is none: the run
    starts again from scratch in the same directory. Prints one line per damaged checkpoint skipped and one when
    restarting; a checkpoint of another configuration (or an unreadable disk) is CliError."""
    from .checkpoint import CheckpointError

    try:
        found = checkpointer.restore_latest(like)
    except CheckpointError as err:
        raise CliError(f"cannot resume {out_dir}: {err}") from None
    for line in found.skipped:
        print(f"{PROG}: warning: {line}", file=sys.stderr)
    if found.iteration is None:
        print(f"{PROG}: note: {out_dir} holds no readable checkpoint: starting the run again from scratch (same "
              "settings, same seed)", file=sys.stderr)
    return found.iteration, found.state


def _run_plan(args: argparse.Namespace, config: Config, hparams: HParams, saved: dict | None):
    """The runs of this invocation: None for one run, else a sweep.Runs of settings x seeds (from the flags, or
    from config.json when resuming)."""
    from .sweep import expand_seeds, hparams_grid, parse_sweep, random_hparams

    if saved is not None:  # resuming: the plan recorded in config.json
        if "runs" not in saved:
            return None
        plan = saved["runs"]
        settings, labels = hparams_grid(hparams)  # one setting: the base
        if plan["swept"]:
            settings = [dataclasses.replace(hparams, **changes) for changes in plan["changes"]]
            labels = [{k: changes[k] for k in plan["swept"]} for changes in plan["changes"]]
        return expand_seeds(settings, labels, plan["seeds"])
    if args.seeds < 1:
        raise CliError(f"--seeds must be >= 1, got {args.seeds}")
    if args.sweep and args.sweep_random:
        raise CliError("use either --sweep or --sweep-random, not both")
    if args.seeds == 1 and not args.sweep and not args.sweep_random:
        return None
    if args.sweep:
        grid = dict(parse_sweep(spec) for spec in args.sweep)
        settings, labels = hparams_grid(hparams, **grid)
    elif args.sweep_random:
        if args.sweep_random < 1:
            raise CliError(f"--sweep-random must be >= 1, got {args.sweep_random}")
        settings, labels = random_hparams(args.sweep_random, seed=config.seed, base=hparams)
    else:
        settings, labels = [hparams], [{}]
    return expand_seeds(settings, labels, [config.seed + j for j in range(args.seeds)])


def _plan_json(runs, hparams: HParams) -> dict:
    settings = {}
    for label in runs.labels:
        settings.setdefault(label["setting"], {k: v for k, v in label.items() if k not in ("setting", "seed")})
    swept = sorted({k for changes in settings.values() for k in changes})
    changes = []
    for index in sorted(settings):
        c = dict(settings[index])
        if "learning_rate" in c and "critic_learning_rate" not in c:
            c["critic_learning_rate"] = c["learning_rate"]
        changes.append(c)
    seeds = sorted({label["seed"] for label in runs.labels})
    return {"seeds": seeds, "swept": swept, "changes": changes}


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


def _run(argv: Sequence[str] | None, held: contextlib.ExitStack) -> int:
    from .stopping import StopRequests, announce_stop, wait_interruptibly

    args, config, hparams = parse_args(argv)
    if args.list_envs:
        print(list_envs_text())
        return 0
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
    cache_dir = _configure_compile_cache(args.compile_cache)  # before anything compiles
    from .distributed import init_hosts, is_primary

    init_hosts(args.coordinator_address, args.num_processes, args.process_id)  # before any JAX computation
    primary = is_primary()
    if config.env.startswith("gymnasium/"):  # flags a host run cannot honour: one line, before the run dir exists
        from .host_train import check_args

        check_args(args)
    out_dir, config, hparams, resuming = _prepare_run_dir(args, config, hparams, argv)
    held.push(_annotate(out_dir))
    stop = held.enter_context(StopRequests(on_first=lambda signum: announce_stop(
        signum, "the end of the running iteration")))
    if resuming:
        held.enter_context(lock_run_dir(out_dir))
    if config.env.startswith("gymnasium/"):  # stepped on the host, same compiled update: see host_train.py
        from .host_train import run_host

        return run_host(args, config, hparams, out_dir, resuming,
                        SOLVED_AT.get(config.env.replace("gymnasium/", "gymnax/")), PROG, held=held, stop=stop)

    import jax
    import numpy as np

    from .checkpoint import CheckpointError
    from .compile_cache import CacheEvents, ProgramStore
    from .monitor import RunMonitor, summarize_returns
    from .train import Trainer

    config.validate()
    hparams.validate()
    trainer = Trainer.build(config)  # ConfigError / UnknownEnvError before any compilation
    if args.render:  # a missing package stops here, before any work; an env without a renderer only says so
        from .render import MissingDependency, NotRenderable, render_kind

        try:
            render_kind(trainer.env)
        except MissingDependency as err:
            raise CliError(f"--render: {err}") from None
        except NotRenderable as err:
            print(f"{PROG}: note: --render: {err}; training without a render", file=sys.stderr)
            args.render = False
    saved = args.document if resuming else None
    runs = _run_plan(args, config, hparams, saved)
    for index in range(1 if runs is None else len(runs)):
        trainer.check_hparams(hparams if runs is None else jax.tree.map(lambda x: x[index], runs.hparams))
    if runs is not None:  # R runs in one program hold R states: ConfigError (one line) where they cannot fit
        from .resources import check_fits

        check_fits(config, trainer.env.spec, runs=len(runs))
    from . import distributed

    mesh = distributed.device_mesh(args.devices)
    n_devices = distributed.mesh_size(mesh)
    distributed.check_divisible(config.n_envs if runs is None else len(runs), mesh,
                                "n_envs" if runs is None else "the number of runs")
    if not resuming and primary:
        document = to_jsonable(config, hparams)
        document["checkpoint_every"] = args.checkpoint_every
        if runs is not None:
            document["runs"] = _plan_json(runs, hparams)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CliError(f"cannot write the run directory {str(out_dir)!r}: {err.strerror or err}") from None
        held.enter_context(lock_run_dir(out_dir))
        refuse_existing_run(out_dir)  # again, under the lock: another run may have started meanwhile
        write_config_json(out_dir, document)

    n_iter = config.n_iterations
    n_runs = 1 if runs is None else len(runs)
    say = (lambda *a, **k: None) if args.quiet else print
    seeds_text = f"seed {config.seed}" if runs is None else (
        f"{n_runs} runs ({len(set(lb['setting'] for lb in runs.labels))} settings x "
        f"{len(set(lb['seed'] for lb in runs.labels))} seeds) in one program")
    say(f"{config.mode} on {config.env} ({trainer.env.spec.obs_dim}-d obs, "
        f"{'discrete ' if trainer.env.spec.discrete else ''}{trainer.env.spec.action_dim} actions): "
        f"{n_iter} iterations x {config.iter_steps} steps = {n_iter * config.iter_steps:,} env steps, "
        f"{config.n_envs} envs, minibatch {config.minibatch_size}, {seeds_text}, {n_devices} "
        f"{jax.default_backend()} device(s)" + (f" in {jax.process_count()} processes" if jax.process_count() > 1
                                                else ""))
    if args.preset != "none" and not resuming:
        say(f"preset {args.preset}: " + ", ".join(f"{k}={v}" for k, v in args.preset_settings.items())
            + " (flags override)")
    if config.max_steps % config.iter_steps:
        say(f"note: max_steps={config.max_steps} is not a multiple of iter_steps={config.iter_steps}; running "
            f"{n_iter} whole iterations")
    say(f"output: {out_dir}")
    say(f"compile cache: {cache_dir if cache_dir is not None else 'off'}")

    if runs is None:
        hp = hparams.as_arrays()
        keys = jax.random.PRNGKey(config.seed)
        init = trainer.init_state
        chunk_fn = trainer.run
    else:
        hp = runs.hparams.as_arrays()
        keys = runs.keys
        init = jax.vmap(trainer.init_state)
        chunk_fn = trainer.run_batched
    # One run: its envs split over the devices; several: the runs split (distributed.py).
    state_sh = distributed.state_shardings(jax.eval_shape(init, keys, hp), mesh, batched=runs is not None)
    keys, hp = (distributed.put(x, distributed.replicate(x, mesh) if runs is None else
                                distributed.batch_shardings(x, mesh)) for x in (keys, hp))
    checkpointer = distributed.HostCheckpointer(out_dir, exclusive=True)
    held.callback(lambda: checkpointer.close(abandon=stop.requested))
    # Runs advance in lockstep; a run stopped by NaN/Inf stays behind at its last good iteration.
    def iteration_of(st) -> int:
        return int(np.max(distributed.to_host(st.iteration)))

    t_compile, cpu_compile = time.perf_counter(), time.process_time()  # CPU time: what a loaded machine cannot inflate
    programs = ProgramStore(cache_dir)  # the compiled programs, loaded without tracing on a later run
    state = None
    init_s = 0.0
    if resuming:
        latest, restored = restore_or_restart(checkpointer, jax.eval_shape(init, keys, hp), out_dir)
        if latest is not None:
            state = distributed.put(restored, state_sh)
            latest = iteration_of(state)
        if resume_point(args, config, out_dir, latest):
            return 0  # finished: nothing compiled, result.json untouched
        if latest is not None:
            say(f"resuming from the checkpoint after iteration {latest}")
    if state is None:
        say("compiling and initialising the policy ...", flush=True)
        init_program = wait_interruptibly(lambda: programs.compile(
            "init", f"{config!r} batched={runs is not None} -> {state_sh!r}",
            lambda k, h: distributed.constrain(init(k, h), state_sh), (keys, hp)))
        t_init, cpu_init = time.perf_counter(), time.process_time()
        state = wait_interruptibly(lambda: jax.block_until_ready(init_program(keys, hp)))
        init_s = time.perf_counter() - t_init  # running, not compiling (the policy's initial fit)
        cpu_compile += time.process_time() - cpu_init

    start_iteration = iteration_of(state)
    monitor = RunMonitor(out_dir if primary else None, n_iter, config.iter_steps, quiet=args.quiet or not primary,
                         verbose=args.verbose,
                         resume_after=start_iteration if resuming else None, tensorboard=args.tensorboard,
                         wandb_project=(args.wandb_project or "ppocma_jax") if args.wandb else None,
                         wandb_config=json.loads((out_dir / "config.json").read_text()) if args.wandb else None,
                         run_labels=None if runs is None else runs.labels)

    # One compiled chunk of `chunk` iterations serves every chunk (the last one skips what is past n_iter). It
    # returns its metrics instead of calling back to the host: JAX never stores a program with a host callback in
    # its persistent compilation cache (compile_cache.py). The host writes and prints each chunk's rows, so chunks
    # are short (progress stays live) and a checkpoint is saved every `every` iterations (a multiple of `chunk`).
    every = max(1, min(args.checkpoint_every or n_iter, n_iter))
    chunk = live_chunk_length(every)
    replicated = distributed.replicated(mesh)

    def chunk_keeping_layout(st, h, limit):  # returns the state laid out as it came: the next chunk takes it
        st, metrics = chunk_fn(st, h, chunk, None, limit)
        return distributed.constrain(st, state_sh), distributed.constrain(metrics, replicated)

    limit = distributed.put(np.int32(n_iter), replicated)
    with CacheEvents() as cache_events:
        compiled = wait_interruptibly(lambda: programs.compile(
            "chunk", f"{config!r} batched={runs is not None} chunk={chunk} -> {state_sh!r}",
            chunk_keeping_layout, (state, hp, limit), donate_first=True))
    compile_s = time.perf_counter() - t_compile - init_s
    compile_cpu_s = time.process_time() - cpu_compile
    say(f"compiled in {compile_s:.1f} s ({compile_cpu_s:.1f} s CPU) {cache_events.describe(cache_dir)}".rstrip()
        + (f"; initialised in {init_s:.1f} s" if init_s else ""))

    def one_chunk(st):
        st, metrics = compiled(st, hp, limit)
        return st, distributed.to_host(metrics)  # waits for the chunk

    def report(metrics) -> None:
        """The chunk's rows to the monitor, as the in-loop callback gave them: iterations past the end are left
        out, and a single run reports nothing after its first NaN/Inf iteration (those were skipped)."""
        for i in range(chunk):
            row = jax.tree.map(lambda x: x[i], metrics)
            ran = np.asarray(row["iteration"]).reshape(-1)[0] <= n_iter
            if runs is None and (monitor.failed_runs or not ran):
                return
            monitor(row, ran)

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
    if monitor.write_error is not None:
        raise RunFailure(monitor.write_error)
    run_s = time.perf_counter() - t_run
    if stop.requested and done_iterations < n_iter and not monitor.all_runs_failed():
        print(f"{PROG}: stopped by {signal_name(stop.signum)} after iteration {done_iterations} of {n_iter}; "
              f"checkpoint saved; continue with: {PROG} --resume {out_dir}", file=sys.stderr)
        return 128 + stop.signum
    steps_run = (done_iterations - start_iteration) * config.iter_steps * n_runs
    steps = done_iterations * config.iter_steps
    if jax.process_count() > 1:  # every process took part; process 0 alone reports and writes
        print(f"process {jax.process_index()} of {jax.process_count()}: {done_iterations} iterations, state "
              f"checksum {distributed.checksum(state):.9g}", flush=True)
        if not primary:
            return 0

    from .plot import plot_runs

    plot_runs([out_dir], out_dir / "curve.png", title=f"{config.mode} on {config.env}")
    result = {"env_steps": steps, "runs": n_runs, "compile_s": round(compile_s, 2),
              "compile_cpu_s": round(compile_cpu_s, 2), "init_s": round(init_s, 2), "run_s": round(run_s, 2),
              "steps_per_s": round(steps_run / max(run_s, 1e-9), 1)}
    timing = (f"{steps_run:,} env steps in {run_s:.1f} s ({result['steps_per_s']:,.0f} steps/s) + "
              f"{compile_s:.1f} s compile; saved to {out_dir}")
    if runs is None:
        final, best = summarize_returns(monitor.rows)
        result.update(final_return=final, best_return=best)
        solved = SOLVED_AT.get(config.env)
        verdict = ""
        if solved is not None and not math.isnan(final):
            verdict = f" ({'solved' if final >= solved else 'not solved'}: threshold {solved:g})"
        summary_text = f"result: final mean return {final:.1f} (last 5 iterations with episodes), best {best:.1f}" \
                       f"{verdict}; {timing}"
    else:
        summary_text = _sweep_summary(runs, monitor.rows, out_dir, result) + f"\nresult: {n_runs} runs; {timing}"
    if monitor.first_nonfinite is not None:
        result["nonfinite_at_iteration"] = monitor.first_nonfinite
    try:
        (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    except OSError as err:
        raise RunFailure(f"cannot write {out_dir / 'result.json'}: {err.strerror or err}") from None
    print(summary_text)
    if args.render:
        _render(trainer, state, monitor.rows, None if runs is None else len(runs), out_dir, config.seed, say)
    if monitor.first_nonfinite is not None:
        scope = "" if runs is None else f" in {len(monitor.failed_runs)} of {n_runs} runs"
        print(f"{PROG}: error: training produced NaN/Inf at iteration {monitor.first_nonfinite}{scope} (losses or "
              f"parameters); the last good state (after iteration {monitor.first_nonfinite - 1}) is kept in the "
              f"newest checkpoint in {checkpointer.directory}", file=sys.stderr)
        return 1
    return 0


LIVE_CHUNK = 1  # iterations per compiled chunk: a progress line per iteration (brax iterations take seconds)


def live_chunk_length(every: int) -> int:
    """Iterations per compiled chunk: the largest divisor of the checkpoint interval `every` not above LIVE_CHUNK,
    so that checkpoints fall on chunk ends."""
    return max(d for d in range(1, min(every, LIVE_CHUNK) + 1) if every % d == 0)


def _render(trainer, state, rows: list[dict], n_runs: int | None, out_dir: Path, seed: int, say) -> None:
    """--render: one deterministic episode of the final policy (of the best run of a sweep) to RUN_DIR/render.*.
    A failure is one line on stderr; the run's other outputs are already written and stay."""
    from .render import RenderError, render_trained

    say("rendering one deterministic episode ...", flush=True)
    try:
        path, run = render_trained(trainer, state, rows, n_runs, out_dir / "render", seed)
        say(f"render: {path}" + ("" if n_runs is None else f" (run {run}, the best final return)"))
    except RenderError as err:
        print(f"{PROG}: warning: --render: {err}; the run's other outputs are kept in {out_dir}", file=sys.stderr)


def _sweep_summary(runs, rows: list[dict], out_dir: Path, result: dict) -> str:
    """Final return per run -> table per setting (mean, std, min, max over seeds), best first; also saved."""
    from .monitor import summarize_returns
    from .sweep import summarize

    finals = [summarize_returns([r for r in rows if int(r["run"]) == index])[0] for index in range(len(runs))]
    swept = [k for k in runs.labels[0] if k not in ("setting", "seed")]
    table = summarize(runs.labels, finals, swept)
    (out_dir / "summary.json").write_text(json.dumps({"runs": [dict(label, final_return=f) for label, f in
                                                                zip(runs.labels, finals)],
                                                       "settings": table}, indent=2) + "\n")
    head = "".join(f"{k:>22s}" for k in swept) + f"{'seeds':>6s}{'mean':>10s}{'std':>9s}{'min':>10s}{'max':>10s}"
    lines = ["final return (mean of each run's last 5 iterations with episodes), per setting, best first:", head]
    for row in table:
        lines.append("".join(f"{row[k]:>22.4g}" for k in swept) + f"{row['seeds']:>6d}{row['mean']:>10.1f}"
                     f"{row['std']:>9.1f}{row['min']:>10.1f}{row['max']:>10.1f}")
    if len(table) > 1:
        best = table[0]
        lines.append("best setting: " + (", ".join(f"{k}={best[k]:g}" for k in swept) or "-")
                     + f" (mean final return {best['mean']:.1f})")
    result["settings"] = table
    return "\n".join(lines)


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
