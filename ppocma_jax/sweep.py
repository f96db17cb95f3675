"""Many seeds and hyperparameter settings as ONE compiled program.

    from ppocma_jax import Config
    from ppocma_jax.sweep import hparams_grid, make_train_batched, take_run

    settings, labels = hparams_grid(learning_rate=[3e-4, 1e-3])        # 2 settings
    runs = expand_seeds(settings, labels, seeds=[0, 1, 2, 3])           # 8 runs: settings x seeds
    train = jax.jit(make_train_batched(Config(env="gymnax/Pendulum-v1", max_steps=200_000)))
    states, metrics = train(runs.keys, runs.hparams)                    # metrics: [iterations, runs]
    one_state = take_run(states, 5)                                     # run 5 alone, as a single-run TrainState

Every HParams field is a traced input, so settings differ only in data: no recompilation per setting.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .config import Config, ConfigError, HParams, hparams_fields, link_learning_rates
from .train import Trainer, TrainState

# Ranges for --sweep-random: the paper's robustness study drew hyperparameters at random; these are the ranges we
# draw from (log-uniform for rates, uniform otherwise). Fields not listed keep their base value.
RANDOM_RANGES: dict[str, tuple[float, float, str]] = {
    "learning_rate": (1e-4, 3e-3, "log"),
    "critic_learning_rate": (1e-4, 3e-3, "log"),
    "gamma": (0.95, 0.995, "linear"),
    "gae_lambda": (0.8, 1.0, "linear"),
    "kernel_scale": (0.5, 2.0, "linear"),
}


@dataclass(frozen=True)
class Runs:
    """R runs: their PRNG keys [R, 2], stacked HParams [R], and a description of each (seed and swept values)."""

    keys: jax.Array
    hparams: HParams
    labels: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.labels)


def hparam_names() -> list[str]:
    return [f.name for f in hparams_fields()]


def parse_sweep(spec: str) -> tuple[str, list[float]]:
    """'learning_rate=3e-4,1e-3' -> ('learning_rate', [3e-4, 1e-3]); one-line ConfigError otherwise."""
    if "=" not in spec:
        raise ConfigError(f"--sweep expects NAME=v1,v2,..., got {spec!r}")
    name, _, values = spec.partition("=")
    name = name.strip().replace("-", "_")
    if name == "lr":
        name = "learning_rate"
    if name not in hparam_names():
        raise ConfigError(f"cannot sweep {name!r}: sweepable fields are the hyperparameters "
                          f"{', '.join(hparam_names())} (static settings such as sizes need separate runs)")
    try:
        parsed = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--sweep {name}: values must be numbers, got {values!r}") from None
    if not parsed:
        raise ConfigError(f"--sweep {name}: no values given")
    return name, parsed


def hparams_grid(base: HParams | None = None, **values: Sequence[float]) -> tuple[list[HParams], list[dict]]:
    """The product grid over the given fields: (one HParams per setting, one {field: value} label per setting).

    Sweeping learning_rate alone also moves critic_learning_rate with it (the original used one rate for both),
    unless critic_learning_rate is swept too.
    """
    base = base or HParams()
    names = list(values)
    settings, labels = [], []
    for combo in itertools.product(*(values[n] for n in names)):
        changes = link_learning_rates(dict(zip(names, combo)))
        settings.append(dataclasses.replace(base, **changes))
        labels.append(dict(zip(names, combo)))
    return settings, labels


def random_hparams(n: int, seed: int = 0, base: HParams | None = None,
                   ranges: dict[str, tuple[float, float, str]] | None = None) -> tuple[list[HParams], list[dict]]:
    """n settings drawn from `ranges` (default RANDOM_RANGES), reproducibly from `seed`."""
    base = base or HParams()
    ranges = ranges or RANDOM_RANGES
    rng = np.random.default_rng(seed)
    settings, labels = [], []
    for _ in range(n):
        changes = {}
        for name, (lo, hi, scale) in ranges.items():
            value = math.exp(rng.uniform(math.log(lo), math.log(hi))) if scale == "log" else rng.uniform(lo, hi)
            changes[name] = float(f"{value:.4g}")
        settings.append(dataclasses.replace(base, **changes))
        labels.append(changes)
    return settings, labels


def expand_seeds(settings: list[HParams], labels: list[dict], seeds: Sequence[int]) -> Runs:
    """Every setting with every seed: R = len(settings) x len(seeds) runs, setting-major."""
    keys, hps, run_labels = [], [], []
    for setting_index, (hp, label) in enumerate(zip(settings, labels)):
        for seed in seeds:
            keys.append(jax.random.PRNGKey(seed))
            hps.append(hp)
            run_labels.append({"setting": setting_index, "seed": int(seed), **label})
    return Runs(jnp.stack(keys), HParams.stack(hps), run_labels)


def select_run(tree: Any, run: int | None, n_runs: int | None, what: str) -> Any:
    """Run `run` of a batched tree ([R, ...] leaves, `n_runs` = R), or the tree itself for a single run
    (`n_runs` None). ValueError (one line, naming `what` holds the runs) for a run index that does not fit."""
    import numpy as np

    if n_runs is None:
        if run is not None:
            raise ValueError(f"run={run} is for seed / sweep states; this {what} holds one run")
        return tree
    if run is None:
        raise ValueError(f"this {what} holds {n_runs} runs (seeds / sweep): pass run=k, 0 <= k < {n_runs}")
    if not isinstance(run, (int, np.integer)) or not 0 <= run < n_runs:
        raise ValueError(f"run must be an integer in [0, {n_runs}), got {run!r}")
    return take_run(tree, run)


def take_run(tree: Any, index: int) -> Any:
    """Run `index` of a batched result (states or metrics with the run axis first)."""
    return jax.tree.map(lambda x: x[index], tree)


def make_train_batched(config: Config, on_iteration: Callable[[dict, jax.Array], None] | None = None,
                       env: Any = None, networks: Any = None
                       ) -> Callable[[jax.Array, HParams], tuple[TrainState, dict[str, jax.Array]]]:
    """`train(keys [R, 2], hparams [R]) -> (states [R], metrics [iterations, R])`, pure and jit-able.

    Unlike `jax.vmap(make_train(config))`, the run axis is inside the iteration loop, so a logging callback sees
    all runs of an iteration at once. `env`: an env object instead of `config.env` (see `envs.wrap_env`);
    `networks`: your own networks instead of the built-in MLPs (networks.Networks, see `Trainer.build`).
    """
    trainer = Trainer.build(config, env, networks)

    def train(keys: jax.Array, hparams: HParams) -> tuple[TrainState, dict[str, jax.Array]]:
        hp = hparams.as_arrays()
        states = jax.vmap(trainer.init_state)(keys, hp)
        return trainer.run_batched(states, hp, config.n_iterations, on_iteration)

    train.trainer = trainer  # type: ignore[attr-defined]
    return train


def summarize(labels: list[dict], finals: Sequence[float], swept: Sequence[str]) -> list[dict]:
    """Per setting: final return mean / std / min / max over its seeds, best first."""
    groups: dict[int, list[float]] = {}
    for label, final in zip(labels, finals):
        groups.setdefault(label["setting"], []).append(final)
    table = []
    for setting, values in groups.items():
        label = next(lb for lb in labels if lb["setting"] == setting)
        arr = np.array([v for v in values if not math.isnan(v)])
        row = {"setting": setting, **{k: label[k] for k in swept}, "seeds": len(values)}
        row.update({"mean": float(arr.mean()) if arr.size else math.nan,
                    "std": float(arr.std()) if arr.size else math.nan,
                    "min": float(arr.min()) if arr.size else math.nan,
                    "max": float(arr.max()) if arr.size else math.nan})
        table.append(row)
    table.sort(key=lambda r: -r["mean"] if not math.isnan(r["mean"]) else math.inf)
    return table
