"""The command line's flags: every Config and HParams field in underscore and dashed spelling (`--max_steps`,
`--max-steps`), the original Run.py switches in theirs (`--env_name`, `-m`, `-lr`, `--ppo_ent_l_w`, `--run_suffix`),
and the run's own flags. Bad input is CliError (one line, exit 2), never argparse's usage dump."""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import NoReturn, Sequence

from .compile_cache import ENV_VAR
from .config import MODES, config_fields, hparams_fields
from .errors import CliError
from .presets import DEFAULT_PRESET, preset_names
from .rundir import DEFAULT_CHECKPOINT_EVERY, PROG

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
                "--process-id", "--process_id", "--compile-cache", "--compile_cache"}


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


def given_flags(argv: Sequence[str] | None) -> list[str]:
    """The option strings on the command line, in order (negative numbers are values, not options)."""
    return [a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])
            if a.startswith("-") and not re.match(r"-[\d.]", a)]


def check_one_spelling(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> None:
    """Two spellings of one setting (--env and --env_name, -lr and --learning-rate) are refused: argparse would keep
    whichever came last, silently."""
    dest_of = {opt: action.dest for action in parser._actions for opt in action.option_strings}
    seen: dict[str, str] = {}
    for flag in given_flags(argv):
        dest = dest_of.get(flag)
        if dest is None or dest in ("sweep",):
            continue
        if dest in seen and seen[dest] != flag:
            raise CliError(f"{seen[dest]} and {flag} set the same thing ({dest}); give one of them")
        seen.setdefault(dest, flag)


def hparams_flags() -> set[str]:
    """Every spelling of every hyperparameter flag."""
    return {flag for f in hparams_fields() for flag in _spellings(f.name)}
