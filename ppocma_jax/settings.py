"""Config assembly, in one place: a preset, the flags over it, the learning-rate rule, the settings a resume may
change, and the run plan (seeds x sweep settings). The CLI uses it for new runs and resumes; the Agent and the sweeps
apply the same learning-rate rule (config.link_learning_rates).

`Job` is one parsed invocation, what the CLI hands to a driver (compiled_train.py or host_train.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .config import Config, HParams, config_fields, hparams_fields, link_learning_rates
from .errors import CliError
from .presets import DEFAULT_PRESET, PRESETS, preset_names, resolve_preset
from .rundir import DEFAULT_CHECKPOINT_EVERY, RunDir


@dataclass
class Job:
    """One invocation: the parsed flags, the settings to run with, where, and what the CLI holds for it (the
    run directory's lock and the signal handlers, in `held`; `stop`, the stopping.StopRequests). run: the reopened
    directory when resuming (None: a new run, which the driver creates once the settings are validated);
    changes: {name: [old, new]} changed on resume, for config.json's "continued" record."""

    args: argparse.Namespace
    config: Config
    hparams: HParams
    out_dir: Path
    argv: Sequence[str] | None
    held: contextlib.ExitStack
    stop: Any
    run: RunDir | None = None
    changes: dict[str, list] = field(default_factory=dict)

    @property
    def resuming(self) -> bool:
        return self.run is not None


def assemble(preset: str | None, mode: str | None, flags: dict[str, Any]) -> tuple[Config, HParams, str, dict]:
    """Config and HParams from a preset (None: `default` when no env is given, else none) and the flags that were
    given ({field: value}, Config and HParams fields alike), which override it. -> (config, hparams, preset name,
    the preset's settings for `mode`). CliError / ConfigError (one line) for an unknown preset or env."""
    name = preset if preset is not None else (DEFAULT_PRESET if flags.get("env") is None else "none")
    if name != "none" and name not in PRESETS:
        raise CliError(f"unknown preset {name!r}; valid: {', '.join(preset_names())}, none")
    settings = resolve_preset(name, mode) if name != "none" else {}
    hp_names = {f.name for f in hparams_fields()}
    cfg_changes = {k: v for k, v in settings.items() if k not in hp_names}
    hp_changes = {k: v for k, v in settings.items() if k in hp_names}
    cfg_changes.update({f.name: flags[f.name] for f in config_fields() if flags.get(f.name) is not None})
    hp_changes.update(given_hparams(flags))
    hp_changes = link_learning_rates(hp_changes)
    if "env" in cfg_changes and not str(cfg_changes["env"]).startswith("gymnasium/"):  # host envs: host_train.py
        from .envs import UnknownEnvError, canonical_env_name

        try:
            cfg_changes["env"] = canonical_env_name(cfg_changes["env"])
        except UnknownEnvError as err:
            raise CliError(str(err)) from None
    return Config(**cfg_changes), dataclasses.replace(HParams(), **hp_changes), name, settings


def given_hparams(flags: dict[str, Any]) -> dict[str, float]:
    """The HParams fields among the given flags."""
    return {f.name: flags[f.name] for f in hparams_fields() if flags.get(f.name) is not None}


def resumed(document: dict[str, Any], config: Config, hparams: HParams, max_steps: int | None,
            checkpoint_every: int | None, flags: dict[str, Any]) -> tuple[Config, HParams, int, dict[str, list]]:
    """The settings of a resumed run: config.json's, with what a resume may change (--max-steps,
    --checkpoint-every, hyperparameters not swept per run). -> (config, hparams, checkpoint_every, changes)."""
    changes: dict[str, list] = {}
    stored_every = document.get("checkpoint_every", DEFAULT_CHECKPOINT_EVERY)
    if checkpoint_every is None:
        checkpoint_every = stored_every
    elif checkpoint_every != stored_every:
        changes["checkpoint_every"] = [stored_every, checkpoint_every]
    if max_steps is not None and max_steps != config.max_steps:
        changes["max_steps"] = [config.max_steps, max_steps]
        config = config.replace(max_steps=max_steps)
    hp_changes = link_learning_rates(given_hparams(flags))  # as for a new run
    swept = {k for setting in document.get("runs", {}).get("changes", []) for k in setting}
    if swept & set(hp_changes):
        raise CliError(f"--resume cannot change {', '.join(sorted(swept & set(hp_changes)))}: the sweep sets it per "
                       "run")
    for name, value in hp_changes.items():
        old = getattr(hparams, name)
        if value != old:
            changes[name] = [old, value]
    return config, dataclasses.replace(hparams, **hp_changes), checkpoint_every, changes


def run_plan(config: Config, hparams: HParams, seeds: int, sweep: Sequence[str], sweep_random: int):
    """The runs of a new invocation: None for one run, else a sweep.Runs of settings x seeds."""
    from .sweep import expand_seeds, hparams_grid, parse_sweep, random_hparams

    if seeds < 1:
        raise CliError(f"--seeds must be >= 1, got {seeds}")
    if sweep and sweep_random:
        raise CliError("use either --sweep or --sweep-random, not both")
    if seeds == 1 and not sweep and not sweep_random:
        return None
    if sweep:
        grid = dict(parse_sweep(spec) for spec in sweep)
        settings, labels = hparams_grid(hparams, **grid)
    elif sweep_random:
        if sweep_random < 1:
            raise CliError(f"--sweep-random must be >= 1, got {sweep_random}")
        settings, labels = random_hparams(sweep_random, seed=config.seed, base=hparams)
    else:
        settings, labels = [hparams], [{}]
    return expand_seeds(settings, labels, [config.seed + j for j in range(seeds)])


def stored_plan(plan: dict[str, Any] | None, hparams: HParams):
    """The runs recorded in config.json's "runs" (rundir.plan_json), rebuilt on resume; None for one run."""
    from .sweep import expand_seeds, hparams_grid

    if plan is None:
        return None
    settings, labels = hparams_grid(hparams)  # one setting: the base
    if plan["swept"]:
        settings = [dataclasses.replace(hparams, **changes) for changes in plan["changes"]]
        labels = [{k: changes[k] for k in plan["swept"]} for changes in plan["changes"]]
    return expand_seeds(settings, labels, plan["seeds"])

