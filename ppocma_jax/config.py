"""Run configuration: the static `Config` (shapes, code paths) and the dynamic `HParams` pytree.

Static fields decide array shapes and which code runs (env, mode, batch sizes, counts, network widths); changing
one recompiles. `HParams` holds the numbers that only enter arithmetic (learning rates, gamma, lambda, PPO epsilon,
sigma bounds, mirroring kernel width, ...), so a sweep over them is a `jax.vmap`, not a recompile.

Defaults follow the original PPO-CMA code (Run.py / Agent.py, see docs/algorithm.md §6-§7) unless noted.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

MODES: tuple[str, ...] = ("PPO-CMA-m", "PPO-CMA", "PPO", "PG", "PG-pos")
"""Training modes (algorithm.md §1). PPO-CMA-m is the paper's default: PPO-CMA with negative-advantage mirroring."""

CMA_MODES: tuple[str, ...] = ("PPO-CMA-m", "PPO-CMA")
ACTIVATIONS: tuple[str, ...] = ("lrelu", "relu", "tanh", "selu", "swish")
INITS: tuple[str, ...] = ("unit_norm", "glorot")
POLICY_INITS: tuple[str, ...] = ("pretrain", "analytic")
ADV_NORMS: tuple[str, ...] = ("auto", "std", "meanstd")
OBS_NORMS: tuple[str, ...] = ("scaler", "welford", "none")
CRITIC_LOSSES: tuple[str, ...] = ("l1", "mse")
VALUE_TARGETS: tuple[str, ...] = ("lambda", "returns", "mc")
EPISODE_ENDS: tuple[str, ...] = ("split", "original")
ADAM_EPSILONS: tuple[str, ...] = ("optax", "tf1")
ADVANTAGE_CRITICS: tuple[str, ...] = ("updated", "old")
LR_SCHEDULES: tuple[str, ...] = ("constant", "linear")

# int32 counters in the compiled loop: keep total env steps well inside 2**31.
MAX_TOTAL_STEPS = 2_000_000_000


class ConfigError(ValueError):
    """A configuration problem, phrased as one line that names the field and the valid choices."""


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass(frozen=True)
class Config:
    """Static configuration: everything that fixes shapes or code paths (changing it recompiles)."""

    env: str = _help("environment as SUITE/NAME, e.g. gymnax/Pendulum-v1, or your own as module.path:factory or "
                     "file.py:factory (a zero-argument callable returning a gymnax Environment, (env, params), a "
                     "Brax Env or our Env protocol)", default="gymnax/MountainCarContinuous-v0")
    mode: str = _help("algorithm: " + ", ".join(MODES), default="PPO-CMA-m")
    backend: str | None = _help("Brax physics backend: spring, positional, generalized or mjx (default: the "
                                "fastest sound one on CPU for that env; brax envs only)", default=None)
    seed: int = _help("random seed (same seed, same machine: same result)", default=0)
    max_steps: int = _help("total environment steps of the run", default=1_000_000)
    iter_steps: int = _help("N: environment steps per iteration (= n_envs x rollout length x action repeat)",
                            default=4000)
    n_envs: int = _help("parallel environments stepped in lockstep (iter_steps must be divisible by it)",
                        default=16)
    action_repeat: int = _help("simulator steps per decision, rewards summed (the original used 2)", default=1)
    batch_size: int = _help("minibatch size M (the effective size is min(samples per iteration, M)); 512 is the "
                            "original Agent's default and the paper's tuned value (Run.py's CLI had 2048)",
                            default=512)
    history_buffer_size: int = _help("H: iterations of data kept for the PPO-CMA variance update", default=9)
    n_updates: int = _help("minibatch steps per pass (critic, variance, mean / policy)", default=100)
    hidden_layers: int = _help("hidden layers of every network", default=2)
    hidden_units: int = _help("units per hidden layer", default=128)
    activation: str = _help("hidden activation: " + ", ".join(ACTIVATIONS) + " (lrelu has slope 0.1)",
                            default="lrelu")
    dense_skips: bool = _help("DenseNet-style skips (each hidden layer also passes its input on); the original "
                              "code ran with them on although its callers asked for them off", default=True)
    init: str = _help("weight init: unit_norm (original: unit-norm rows) or glorot", default="unit_norm")
    policy_init: str = _help("how the policy starts at N(centre, half range^2): pretrain (original, 2000 Adam "
                             "steps) or analytic (zero output weights, matching biases)", default="pretrain")
    pretrain_steps: int = _help("Adam steps of the policy pre-training to the initial Gaussian", default=2000)
    obs_norm: str = _help("observation normalisation: scaler (original: divide by 2 x running RMS, scale only "
                          "shrinks), welford (running mean / std over all observations) or none", default="scaler")
    critic_loss: str = _help("critic regression loss: l1 (original) or mse", default="l1")
    value_targets: str = _help("critic targets: lambda (lambda-returns from the pre-update critic) or returns "
                               "(discounted rewards-to-go, bootstrapped only at truncations and the rollout cut, "
                               "as the Keras PPO example) or mc (the original's discounted Monte-Carlo returns, cut "
                               "without a bootstrap at every episode end, termination or time limit; a rollout cut "
                               "that is not an episode end still bootstraps from the critic)", default="lambda")
    episode_ends: str = _help("how GAE treats an episode end: split (a termination never bootstraps, a time limit "
                              "bootstraps from the final observation with its time index) or original (every "
                              "episode end bootstraps from V(final observation, time feature 0), as the original "
                              "code)", default="split")
    adam_epsilon: str = _help("where Adam adds epsilon: optax (to the bias-corrected sqrt(v)) or tf1 (to the "
                              "uncorrected sqrt(v), the original's TensorFlow-1 Adam)", default="optax")
    max_grad_norm: float = _help("clip each network's gradient to this global L2 norm before its Adam step "
                                 "(optax.clip_by_global_norm); 0: off, as the original", default=0.0)
    lr_schedule: str = _help("learning-rate schedule of every network: constant (the original) or linear (annealed "
                             "from the learning rate in the first iteration towards 0 at the end of the run)",
                             default="constant")
    advantage_critic: str = _help("critic the advantages come from: updated (original PPO-CMA: trained on this "
                                  "iteration first) or old (values as recorded while acting: most PPO code)",
                                  default="updated")
    full_batch: bool = _help("every update step uses all samples of the iteration (Keras PPO example) instead of "
                             "batch_size samples drawn with replacement; PPO / PG modes only", default=False)
    adv_norm: str = _help("advantage normalisation: auto (meanstd for PPO, std for every other mode), std (the "
                          "original's, no centring; PPO-CMA and PG modes need it: the sign picks good and bad "
                          "actions) or meanstd (standard PPO practice; PPO mode only). The original's PPO used std, "
                          "which drives the policy std to its bound on Pendulum: --preset original keeps it",
                          default="auto")
    eval_every: int = _help("deterministic evaluation (mean action) every K iterations and at the end, logged "
                            "as eval_return; 0: off", default=10)
    eval_episodes: int = _help("episodes per deterministic evaluation, on separate env instances", default=8)
    initial_mean: tuple[float, ...] | None = _help("initial action mean per dimension (default: centre of the "
                                                   "action box)", default=None)
    initial_std: tuple[float, ...] | None = _help("initial action std per dimension (default: half the range)",
                                                  default=None)

    def __post_init__(self) -> None:
        # The CLI passes a float field's flag value as text: hold the number, or say in one line why not.
        if isinstance(self.max_grad_norm, str):
            try:
                object.__setattr__(self, "max_grad_norm", float(self.max_grad_norm))
            except ValueError:
                raise ConfigError(f"max_grad_norm must be a number >= 0 (0: off), got {self.max_grad_norm!r}") from None

    # ---- derived quantities (pure functions of the fields) ----
    @property
    def is_cma(self) -> bool:
        return self.mode in CMA_MODES

    @property
    def mirroring(self) -> bool:
        return self.mode == "PPO-CMA-m"

    @property
    def relu_advantages(self) -> bool:
        """PPO-CMA and PG-pos prune negative advantages before normalising (algorithm.md §3.1 step 5)."""
        return self.mode in ("PPO-CMA", "PG-pos")

    @property
    def advantage_norm(self) -> str:
        """The advantage normalisation in force: `adv_norm`, with auto resolved per mode (standard PPO centres its
        advantages; PPO-CMA and the PG modes must not, since the sign selects and mirrors actions)."""
        if self.adv_norm != "auto":
            return self.adv_norm
        return "meanstd" if self.mode == "PPO" else "std"

    @property
    def rollout_len(self) -> int:
        """Decisions per env per iteration."""
        return self.iter_steps // (self.n_envs * self.action_repeat)

    @property
    def samples_per_iter(self) -> int:
        """Learning samples (decisions) per iteration."""
        return self.n_envs * self.rollout_len

    @property
    def minibatch_size(self) -> int:
        """M_eff = min(samples per iteration, batch_size) (algorithm.md §3.2); all samples with full_batch."""
        return self.samples_per_iter if self.full_batch else min(self.samples_per_iter, self.batch_size)

    @property
    def n_iterations(self) -> int:
        return self.max_steps // self.iter_steps

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def validate(self) -> Config:
        """Raise ConfigError (one line) on anything that cannot run; return self."""
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        for name in ("max_steps", "iter_steps", "n_envs", "action_repeat", "batch_size", "history_buffer_size",
                     "n_updates", "hidden_units", "pretrain_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ConfigError(f"eval_every must be a non-negative integer, got {self.eval_every!r}")
        if not isinstance(self.eval_episodes, int) or self.eval_episodes <= 0:
            raise ConfigError(f"eval_episodes must be a positive integer, got {self.eval_episodes!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        if not isinstance(self.hidden_layers, int) or self.hidden_layers < 0:
            raise ConfigError(f"hidden_layers must be a non-negative integer, got {self.hidden_layers!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}")
        if self.obs_norm not in OBS_NORMS:
            raise ConfigError(f"unknown obs_norm {self.obs_norm!r}; valid: {', '.join(OBS_NORMS)}")
        for name, valid in (("critic_loss", CRITIC_LOSSES), ("value_targets", VALUE_TARGETS),
                            ("advantage_critic", ADVANTAGE_CRITICS), ("episode_ends", EPISODE_ENDS),
                            ("adam_epsilon", ADAM_EPSILONS), ("lr_schedule", LR_SCHEDULES)):
            if getattr(self, name) not in valid:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; valid: {', '.join(valid)}")
        if (not isinstance(self.max_grad_norm, (int, float)) or isinstance(self.max_grad_norm, bool)
                or not math.isfinite(self.max_grad_norm) or self.max_grad_norm < 0):
            raise ConfigError(f"max_grad_norm must be a finite number >= 0 (0: off), got {self.max_grad_norm!r}")
        if self.full_batch and self.is_cma:
            raise ConfigError(f"full_batch is for PPO / PG modes; {self.mode} draws its variance-pass minibatches "
                              "from the H-iteration history")
        if self.init not in INITS:
            raise ConfigError(f"unknown init {self.init!r}; valid: {', '.join(INITS)}")
        if self.policy_init not in POLICY_INITS:
            raise ConfigError(f"unknown policy_init {self.policy_init!r}; valid: {', '.join(POLICY_INITS)}")
        if self.adv_norm not in ADV_NORMS:
            raise ConfigError(f"unknown adv_norm {self.adv_norm!r}; valid: {', '.join(ADV_NORMS)}")
        if self.advantage_norm == "meanstd" and self.mode != "PPO":
            raise ConfigError(f"adv_norm=meanstd is only for mode PPO: {self.mode} uses the advantage sign "
                              "to choose good and bad actions, so centring would change the algorithm")
        per_env = self.n_envs * self.action_repeat
        if self.iter_steps % per_env != 0:
            lo = max(per_env, (self.iter_steps // per_env) * per_env)
            raise ConfigError(f"iter_steps={self.iter_steps} is not divisible by n_envs x action_repeat = "
                              f"{self.n_envs} x {self.action_repeat}; try iter_steps={lo} or "
                              f"{lo + per_env}")
        if self.max_steps < self.iter_steps:
            raise ConfigError(f"max_steps={self.max_steps} is smaller than one iteration "
                              f"(iter_steps={self.iter_steps})")
        if self.max_steps > MAX_TOTAL_STEPS:
            raise ConfigError(f"max_steps={self.max_steps} exceeds the supported {MAX_TOTAL_STEPS} per run")
        return self


def _hp(default: float, text: str) -> Any:
    return struct.field(pytree_node=True, default=default, metadata={"help": text})


@struct.dataclass
class HParams:
    """Dynamic hyperparameters: a pytree of scalars, so runs with different values vmap into one program.

    Every field may be a Python float, a 0-d array, or (for sweeps) an array with a leading batch axis.
    """

    learning_rate: Any = _hp(5e-4, "Adam learning rate of the policy networks (original: 5e-4)")
    critic_learning_rate: Any = _hp(5e-4, "Adam learning rate of the critic (original: same as the policy)")
    gamma: Any = _hp(0.99, "discount per decision")
    gae_lambda: Any = _hp(0.95, "GAE lambda")
    ppo_epsilon: Any = _hp(0.2, "PPO clip range epsilon (PPO mode only)")
    entropy_weight: Any = _hp(0.0, "entropy bonus weight (PPO mode only)")
    sigma_min: Any = _hp(0.01, "lower bound of the action std (absolute, as in the original)")
    sigma_max_scale: Any = _hp(1.0, "upper bound of the action std, in units of the action range width")
    kernel_scale: Any = _hp(1.0, "mirroring kernel width in units of the action std (PPO-CMA-m)")
    critic_time_scale: Any = _hp(0.001, "scale of the critic's time feature (decision index in the episode)")
    target_kl: Any = _hp(0.0, "PPO early stop: end the policy pass after the step whose approximate KL on the "
                              "iteration's samples exceeds 1.5 x target_kl (Keras PPO example); 0: off")

    def as_arrays(self) -> HParams:
        """Every field as a float32 array (what the compiled program consumes)."""
        return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.float32), self)

    @staticmethod
    def stack(settings: list[HParams]) -> HParams:
        """Stack settings along a new leading axis: `jax.vmap(train, in_axes=(None, 0))(key, HParams.stack(...))`
        trains them all in one program."""
        if not settings:
            raise ConfigError("HParams.stack needs at least one setting")
        return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x, jnp.float32) for x in xs]), *settings)

    def validate(self) -> HParams:
        """Raise ConfigError on values that cannot train (checked on the host, before compiling)."""
        import numpy as np

        def arr(name: str) -> np.ndarray:
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if not np.all(np.isfinite(value)):
                raise ConfigError(f"{name} must be finite, got {getattr(self, name)!r}")
            return value

        for name in ("learning_rate", "critic_learning_rate", "sigma_min", "sigma_max_scale", "kernel_scale"):
            if np.any(arr(name) <= 0):
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("gamma", "gae_lambda"):
            value = arr(name)
            if np.any(value < 0) or np.any(value > 1):
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("ppo_epsilon", "entropy_weight", "critic_time_scale", "target_kl"):
            if np.any(arr(name) < 0):
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        return self


def hparams_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(HParams))


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(Config))


def link_learning_rates(changes: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameter changes with the one rule that links two of them: learning_rate also sets
    critic_learning_rate unless that is given too (the original used one rate for both). Every place that turns
    user settings into HParams (the CLI, a resume, a sweep, the Agent) applies it through here."""
    if "learning_rate" in changes and "critic_learning_rate" not in changes:
        return {**changes, "critic_learning_rate": changes["learning_rate"]}
    return dict(changes)


def to_jsonable(config: Config, hparams: HParams) -> dict[str, Any]:
    """Everything needed to rerun, as plain JSON types."""
    import numpy as np

    def plain(x: Any) -> Any:
        if isinstance(x, tuple):
            return list(x)
        arr = np.asarray(x)
        if arr.ndim == 0 and arr.dtype.kind in "fiu":
            value = arr.item()
            return value if not (isinstance(value, float) and math.isnan(value)) else None
        if arr.dtype.kind in "fiu":
            return arr.tolist()
        return x

    return {
        "config": {f.name: plain(getattr(config, f.name)) for f in config_fields()},
        "hparams": {f.name: plain(getattr(hparams, f.name)) for f in hparams_fields()},
    }


def from_jsonable(data: dict[str, Any]) -> tuple[Config, HParams]:
    cfg = dict(data["config"])
    for key in ("initial_mean", "initial_std"):
        if cfg.get(key) is not None:
            cfg[key] = tuple(cfg[key])
    return Config(**cfg), HParams(**data["hparams"])
