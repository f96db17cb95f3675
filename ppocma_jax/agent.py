"""The host-side Agent: PPO-CMA for any Python simulator, with the original Tutorial's interface (algorithm.md §7).

    agent = Agent(state_dim, action_dim, action_min, action_max, iter_steps=2000)
    while True:
        action = agent.act(obs)                                   # jit-compiled, inside the action box
        next_obs, reward, terminated, truncated, _ = sim.step(action)
        agent.memorize(obs, action, reward, next_obs, terminated, truncated)
        ...                                                       # reset the simulator when the episode ends
        if agent.ready:                                           # iter_steps transitions memorised
            mean_return = agent.update_with_memorized()

The update is `Trainer.learn`, the same compiled function `make_train` runs after its own rollout: there is no
second copy of the algorithm. What the Agent adds is bookkeeping on the host: the per-env decision index of each
transition (the critic's time feature), episode returns, and the batch that `learn` needs.

Fixed-size iterations (the design choice): `learn` is compiled for one batch shape, and PPO-CMA's history stores
exactly `samples_per_iter` samples per iteration, so every update consumes exactly `iter_steps` transitions: the
oldest `iter_steps / n_envs` memorised steps of each of the `n_envs` simulators, in order. Transitions memorised
beyond that are kept for the next update, and so is an unfinished episode: its memorised part is learned now,
bootstrapped from the critic at the cut exactly as `make_train` does at a rollout cut, and it continues with its
true time index in the next iteration (the original discarded it). Fewer than `iter_steps` transitions is an error
(`ready` says when enough are there). Padding or resampling a short batch would change the algorithm (the
minibatch draws and the history's per-iteration weighting); one compiled shape keeps it exact and compiles once.
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
import shutil
import time
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .config import (Config, ConfigError, HParams, config_fields, from_jsonable, hparams_fields, link_learning_rates,
                     to_jsonable)
from .envs.base import EnvSpec
from .networks import Networks
from .normalize import ScalerState, scaler_apply
from .policy import Policy, PolicyParams
from .rollout import Transition
from .rundir import CONFIG_FILE, read_document, write_json_atomic
from .train import Trainer, TrainState, iteration_keys

AGENT_ENV = "host/agent"  # Config.env of an Agent: its data comes from the caller, not from a JAX env
HOST_STATE_FILE = "agent_host.npz"
# Config fields that describe a JAX env, not an Agent's learning (the caller owns the simulator).
_NOT_AGENT_SETTINGS = ("env", "backend", "mode", "seed")


class AgentError(ValueError):
    """Bad input to the Agent (shapes, call order), phrased as one line."""


# ---------------------------------------------------------------- the spec-only env
@dataclass(frozen=True)
class HostEnv:
    """A JAX `Env` in shape only: `Trainer.build` and `init_state` need an env's spec and a reset to size their
    carry; the transitions come from a Python simulator, so `step` is never part of a compiled program."""

    spec: EnvSpec

    def reset(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jnp.zeros((), jnp.int32), jnp.zeros((self.spec.obs_dim,), jnp.float32)

    def step(self, key: jax.Array, state: Any, action: jax.Array):
        raise NotImplementedError(f"{self.spec.name} is a host simulator: step it in Python and pass the "
                                  "transitions to Agent.memorize")


def host_spec(state_dim: int, action_dim: int, action_min: Any, action_max: Any, name: str = AGENT_ENV,
              max_episode_steps: int | None = None) -> EnvSpec:
    """Validate the Agent's dimensions and bounds (scalars broadcast to every action dimension) -> EnvSpec."""
    for label, value in (("state_dim", state_dim), ("action_dim", action_dim)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise AgentError(f"{label} must be a positive integer, got {value!r}")
    bounds = []
    for label, value in (("action_min", action_min), ("action_max", action_max)):
        try:
            arr = np.broadcast_to(np.asarray(value, np.float64), (int(action_dim),))
        except (ValueError, TypeError):
            raise AgentError(f"{label} must be a number or {action_dim} numbers, got {value!r}") from None
        if not np.all(np.isfinite(arr)):
            raise AgentError(f"{label} must be finite (the policy's mean is squashed into the box), got {value!r}")
        bounds.append(tuple(float(v) for v in arr))
    low, high = bounds
    if not all(lo < hi for lo, hi in zip(low, high)):
        raise AgentError(f"action_min {list(low)} must be below action_max {list(high)} in every dimension")
    return EnvSpec(name, int(state_dim), False, int(action_dim), low, high, max_episode_steps)


def agent_config(mode: str, seed: int, hyperparameters: dict[str, Any]) -> tuple[Config, HParams]:
    """Keyword hyperparameters -> (Config, HParams). Any Config / HParams field is accepted; unknown names raise
    ConfigError. Agent defaults differ from the CLI's in two places: one simulator (n_envs=1), and max_steps
    is only a counter limit (never below one iteration)."""
    cfg_names = {f.name for f in config_fields()} - set(_NOT_AGENT_SETTINGS)
    hp_names = {f.name for f in hparams_fields()}
    for name in hyperparameters:
        if name in _NOT_AGENT_SETTINGS:
            raise ConfigError(f"{name!r} is not an Agent hyperparameter"
                              + (f" (pass it as Agent(..., {name}=...))" if name in ("mode", "seed") else
                                 " (the caller owns the simulator)"))
        if name not in cfg_names | hp_names:
            raise ConfigError(f"unknown Agent hyperparameter {name!r}; valid: "
                              f"{', '.join(sorted(cfg_names | hp_names))}")
    cfg = {k: v for k, v in hyperparameters.items() if k in cfg_names}
    hp = link_learning_rates({k: v for k, v in hyperparameters.items() if k in hp_names})
    cfg.setdefault("n_envs", 1)
    cfg.setdefault("max_steps", max(Config.max_steps, int(cfg.get("iter_steps", Config.iter_steps))))
    for key in ("initial_mean", "initial_std"):
        if cfg.get(key) is not None:
            cfg[key] = tuple(float(v) for v in np.atleast_1d(cfg[key]))
    try:
        config = Config(env=AGENT_ENV, mode=mode, seed=seed, **cfg)
    except TypeError as err:  # pragma: no cover - names are checked above
        raise ConfigError(str(err)) from None
    return config.validate(), HParams(**hp).validate()


# ---------------------------------------------------------------- compiled pieces (shared by equal configs)
@partial(jax.jit, static_argnums=(0,))
def _init_state(trainer: Trainer, key: jax.Array, hp: HParams) -> TrainState:
    return trainer.init_state(key, hp)


@partial(jax.jit, static_argnums=(0, 1))
def _act(policy: Policy, deterministic: bool, params: PolicyParams, scaler: ScalerState, key: jax.Array,
         obs: jax.Array, hp: HParams) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Actions [n, d] for observations [n, D], the mean std used (0 when deterministic), and the next key.

    Until the first update (scaler never updated) actions come from the initial Gaussian, as in rollout.py."""
    key, key_act = jax.random.split(key)
    x = scaler_apply(scaler, obs)
    first = scaler.count == 0
    if deterministic:
        mean0 = jnp.broadcast_to(jnp.asarray(policy.initial_mean, jnp.float32), (obs.shape[0], policy.action_dim))
        return jnp.where(first, mean0, policy.deterministic(params, x)), jnp.zeros((), jnp.float32), key
    action, std = policy.sample(key_act, params, x, hp)
    init_action, init_std = policy.sample_initial(key_act, obs.shape[:1])
    action = jnp.where(first, init_action, action)
    std = jnp.where(first, init_std, std)
    return action, jnp.mean(std), key


# Trainer.learn itself, compiled on its own: the update half of make_train's iteration, nothing added inside.
_learn = jax.jit(Trainer.learn, static_argnums=(0,))


# ---------------------------------------------------------------- host-side bookkeeping
def _as_batch(name: str, value: Any, n: int, trailing: tuple[int, ...], dtype: Any) -> np.ndarray:
    """`value` as [n, *trailing]; one unbatched item is accepted when n == 1. Raises AgentError otherwise."""
    arr = np.asarray(value, dtype)
    if arr.shape == trailing and n == 1:
        return arr.reshape((1,) + trailing)
    if arr.shape != (n,) + trailing:
        want = f"{trailing or 'a scalar'} (one simulator) or {(n,) + trailing}" if n == 1 else f"{(n,) + trailing}"
        raise AgentError(f"{name} has shape {arr.shape}; expected {want} for n_envs={n}")
    return arr


@dataclass
class EpisodeTracker:
    """Per-simulator decision index and running return, plus the episodes finished since the last update."""

    time: np.ndarray  # [n] int32 decisions since the episode started (the critic's time feature)
    ep_return: np.ndarray  # [n] float64
    ep_length: np.ndarray  # [n] int64
    returns: list[float] = dataclasses.field(default_factory=list)
    lengths: list[int] = dataclasses.field(default_factory=list)

    @staticmethod
    def new(n: int) -> EpisodeTracker:
        return EpisodeTracker(np.zeros(n, np.int32), np.zeros(n, np.float64), np.zeros(n, np.int64))

    def step(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Record one step of every simulator; return the time index of the step just taken."""
        time = self.time.copy()
        self.ep_return += reward
        self.ep_length += 1
        self.time += 1
        if done.any():  # in place and only on episode ends: memorize runs once per simulator step
            ended = np.flatnonzero(done)
            self.returns.extend(self.ep_return[ended].tolist())
            self.lengths.extend(self.ep_length[ended].tolist())
            self.time[ended] = 0
            self.ep_return[ended] = 0.0
            self.ep_length[ended] = 0
        return time


_FIELDS = ("obs", "action", "reward", "terminated", "truncated", "next_obs", "time")


class Agent:
    """PPO-CMA (or PPO / PG) for a Python simulator: act, memorize, update_with_memorized, save, load.

    Args:
      state_dim, action_dim: observation and action sizes.
      action_min, action_max: the action box (a number for every dimension, or one per dimension).
      mode: PPO-CMA-m (default), PPO-CMA, PPO, PG or PG-pos.
      seed: seeds the networks, the update's minibatches and the exploration noise.
      networks: your own networks instead of the built-in MLPs (ppocma_jax.Networks: flax.linen modules or
        (init, apply) pairs, as for make_train); `Agent.load` then needs the same ones again.
      **hyperparameters: any `Config` or `HParams` field, e.g. iter_steps=2000 (N: transitions per update, the
        main knob), n_envs=8 (simulators memorised together as a batch), learning_rate=5e-4, batch_size=512,
        history_buffer_size=9, hidden_units=128. Unknown names raise ConfigError.
    """

    def __init__(self, state_dim: int, action_dim: int, action_min: Any, action_max: Any, mode: str = "PPO-CMA-m",
                 seed: int = 0, networks: Networks | None = None, **hyperparameters: Any):
        spec = host_spec(state_dim, action_dim, action_min, action_max)
        config, hparams = agent_config(mode, seed, hyperparameters)
        self._setup(spec, config, hparams, networks=networks)

    @classmethod
    def from_config(cls, spec: EnvSpec, config: Config, hparams: HParams) -> Agent:
        """An Agent for `spec` with a complete configuration (what the CLI's gymnasium suite and `load` use)."""
        agent = cls.__new__(cls)
        agent._setup(spec, config, hparams)
        return agent

    def _setup(self, spec: EnvSpec, config: Config, hparams: HParams, state: TrainState | None = None,
               networks: Networks | None = None) -> None:
        self.spec = spec
        self._low, self._high = spec.low_high()
        self.trainer = Trainer.build(config, env=HostEnv(spec), networks=networks)  # ConfigError: bad networks
        self._custom_networks = sorted(networks.given()) if networks is not None else []
        self.trainer.check_hparams(hparams)
        self.config = self.trainer.config
        self.hparams = hparams
        self._hp = hparams.as_arrays()
        root = jax.random.PRNGKey(config.seed)
        self.state = state if state is not None else _init_state(self.trainer, root, self._hp)
        self._act_key = jax.random.fold_in(root, 1)  # its own stream: acting never shifts the update's keys
        self._rows: list[tuple[np.ndarray, ...]] = []
        self._episodes = EpisodeTracker.new(config.n_envs)
        self._std_sum: list[jax.Array] = []
        self.last_metrics: dict[str, float] = {}
        self._agent_id = secrets.token_hex(8)  # in config.json: `save` refuses a directory of another agent

    # ---------------------------------------------------------------- acting
    @property
    def n_envs(self) -> int:
        return self.config.n_envs

    def act(self, obs: Any, deterministic: bool = False) -> np.ndarray:
        """Action(s) for one observation [state_dim] -> [action_dim], or a batch [n, state_dim] -> [n, action_dim].

        Stochastic actions are sampled from the policy (before the first update: from the initial Gaussian, as the
        original) and clipped to the box; deterministic=True gives the mean action."""
        x = np.asarray(obs, np.float32)
        single = x.ndim == 1
        if x.ndim not in (1, 2) or x.shape[-1] != self.spec.obs_dim:
            raise AgentError(f"obs has shape {x.shape}; expected ({self.spec.obs_dim},) or "
                             f"(batch, {self.spec.obs_dim})")
        if not np.isfinite(x).all():
            raise AgentError("obs contains NaN or Inf")
        batch = x[None] if single else x
        action, std, self._act_key = _act(self.trainer.policy, bool(deterministic), self.state.policy_params,
                                          self.state.scaler, self._act_key, batch, self._hp)
        if not deterministic:
            self._std_sum.append(std)  # kept as a device scalar: no host sync beyond the action's
        action = np.asarray(action)
        return action[0] if single else action

    # ---------------------------------------------------------------- memorising
    def memorize(self, obs: Any, action: Any, reward: Any, next_obs: Any, terminated: Any,
                 truncated: Any = False) -> None:
        """Store one transition per simulator: arrays with a leading [n_envs] axis, or unbatched when n_envs=1.

        next_obs is the true successor: the episode's final observation when it ended (not the reset one).
        terminated: a true end (no bootstrap); truncated: a time limit or any other cut (bootstrapped from
        next_obs). The action is clipped to the box, as the trainer stores it."""
        n, D, d = self.n_envs, self.spec.obs_dim, self.spec.action_dim
        obs_b = _as_batch("obs", obs, n, (D,), np.float32)
        next_b = _as_batch("next_obs", next_obs, n, (D,), np.float32)
        action_b = _as_batch("action", action, n, (d,), np.float32)
        reward_b = _as_batch("reward", reward, n, (), np.float32)
        term_b = _as_batch("terminated", _as_flags("terminated", terminated), n, (), bool)
        trunc_b = (np.full(n, bool(truncated)) if isinstance(truncated, (bool, np.bool_))
                   else _as_batch("truncated", _as_flags("truncated", truncated), n, (), bool))
        for name, arr in (("obs", obs_b), ("next_obs", next_b), ("action", action_b), ("reward", reward_b)):
            if not np.isfinite(arr).all():
                raise AgentError(f"{name} contains NaN or Inf")
        action_b = np.minimum(np.maximum(action_b, self._low), self._high)  # np.clip costs more at this size
        time = self._episodes.step(reward_b.astype(np.float64), term_b | trunc_b)
        self._rows.append((obs_b, action_b, reward_b, term_b, trunc_b, next_b, time))

    @property
    def memorized_steps(self) -> int:
        """Steps memorised and not yet learned (one step = one transition of every simulator)."""
        return len(self._rows)

    @property
    def ready(self) -> bool:
        """True when an update has its full batch: iter_steps / n_envs steps of every simulator."""
        return len(self._rows) >= self.config.rollout_len

    # ---------------------------------------------------------------- learning
    def update_with_memorized(self) -> float:
        """One PPO-CMA iteration on the oldest iter_steps memorised transitions (the rest stay memorised).

        Returns the mean undiscounted return of the episodes that finished since the last update, NaN if none did
        (the original divided by zero). Raises AgentError when fewer than iter_steps transitions are memorised."""
        T, n = self.config.rollout_len, self.n_envs
        if not self._rows:
            raise AgentError(f"nothing to learn from: memorize transitions first (an update uses iter_steps="
                             f"{self.config.iter_steps}: {T} steps of {n} simulator(s))")
        if len(self._rows) < T:
            raise AgentError(f"an update needs iter_steps={self.config.iter_steps} transitions ({T} steps of {n} "
                             f"simulator(s)) but {len(self._rows) * n} are memorised; memorize more (Agent.ready "
                             "says when) or create the Agent with a smaller iter_steps")
        rows, self._rows = self._rows[:T], self._rows[T:]
        traj = Transition(*(jnp.asarray(np.stack(column)) for column in zip(*rows)))
        metrics = self.learn(traj)
        tracker = self._episodes
        episodes = len(tracker.returns)
        mean_return = float(np.mean(tracker.returns)) if episodes else math.nan
        std = float(np.mean(np.stack(self._std_sum))) if self._std_sum else math.nan
        self.last_metrics = dict(metrics, iteration=int(self.state.iteration), env_steps=int(self.state.env_steps),
                                 mean_return=mean_return, episodes=episodes,
                                 mean_length=float(np.mean(tracker.lengths)) if episodes else math.nan,
                                 policy_std=std)
        tracker.returns, tracker.lengths, self._std_sum = [], [], []
        return mean_return

    def learn(self, traj: Transition) -> dict[str, float]:
        """The compiled update on a caller-made time-major batch ([T, n_envs, ...] with T = iter_steps / n_envs),
        like the original's `update(trajectories)`. Returns the learning metrics (losses, approx_kl, ...).

        This is `Trainer.learn` with the keys `Trainer.iteration` derives from the state's key (its second key,
        the rollout's, is unused here) and the same counter updates, so an Agent in the state of a make_train run,
        given that iteration's rollout, reaches the same parameters. A NaN/Inf update is discarded (the agent
        keeps its last good state, as the compiled loop does) and raises FloatingPointError."""
        want = (self.config.rollout_len, self.n_envs)
        if tuple(traj.reward.shape) != want:
            raise AgentError(f"learn needs a batch of shape [T, n_envs] = {list(want)}, got "
                             f"{list(traj.reward.shape)}")
        state = self.state
        key, _key_rollout, key_critic, key_policy = iteration_keys(state.key)
        learned, metrics = _learn(self.trainer, state, traj, key_critic, key_policy, self._hp)
        metrics = {k: float(v) for k, v in metrics.items()}
        if metrics["finite"] != 1:
            raise FloatingPointError(f"the update of iteration {int(state.iteration) + 1} produced NaN/Inf "
                                     "(losses or parameters); it was discarded and the agent kept its last good "
                                     "state")
        self.state = self.trainer.advance(learned, key)
        return metrics

    def warm_up(self, eval_batch: int | None = None) -> float:
        """Compile `act` (a batch of n_envs; and deterministic at `eval_batch` if given) and the update now, on
        throw-away inputs, without changing the agent; returns the seconds spent (the compile time to report)."""
        t0 = time.perf_counter()
        D, n, T = self.spec.obs_dim, self.n_envs, self.config.rollout_len
        policy, params, scaler = self.trainer.policy, self.state.policy_params, self.state.scaler
        jax.block_until_ready(_act(policy, False, params, scaler, self._act_key, jnp.zeros((n, D)), self._hp))
        if eval_batch:
            jax.block_until_ready(_act(policy, True, params, scaler, self._act_key, jnp.zeros((eval_batch, D)),
                                       self._hp))
        zeros = lambda *shape, dtype=jnp.float32: jnp.zeros((T, n) + shape, dtype)  # noqa: E731
        dummy = Transition(zeros(D), zeros(self.spec.action_dim), zeros(), zeros(dtype=bool), zeros(dtype=bool),
                           zeros(D), zeros(dtype=jnp.int32))
        key = self.state.key
        jax.block_until_ready(_learn(self.trainer, self.state, dummy, key, key, self._hp))  # result discarded
        return time.perf_counter() - t0

    @property
    def policy_std(self) -> float:
        """Mean action std over act() calls since the last update (the original's getAverageActionStdev)."""
        return float(np.mean(np.stack(self._std_sum))) if self._std_sum else math.nan

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the agent to directory `path`: config.json (as a CLI run), the TrainState as an orbax checkpoint
        in path/checkpoints/<iteration>/ (the trainer's format), and the host bookkeeping (memorised transitions,
        episode trackers, acting key) in agent_host.npz, so `Agent.load(path)` continues exactly.

        Saving again into this agent's own directory updates it. A directory that holds another agent or a
        training run is refused (AgentError) unless overwrite=True, which replaces the whole directory once the
        new save is complete. Every failure (a full disk included) is an AgentError in one line."""
        path = Path(path)
        replace = self._check_save_target(path, overwrite)
        target = path.with_name(f".{path.name}.saving-{os.getpid()}-{secrets.token_hex(4)}") if replace else path
        try:
            self._write(target)
            if replace:
                old = path.with_name(target.name.replace(".saving-", ".replaced-"))
                path.rename(old)
                target.rename(path)
                shutil.rmtree(old, ignore_errors=True)
        except BaseException as err:
            if replace:
                shutil.rmtree(target, ignore_errors=True)
            if isinstance(err, AgentError) or not isinstance(err, Exception):
                raise  # KeyboardInterrupt: the checkpointer abandoned its write; the earlier save is intact
            raise AgentError(f"cannot save the agent to {str(path)!r}: {_save_failure(err)}") from err
        return path

    def _check_save_target(self, path: Path, overwrite: bool) -> bool:
        """Raise AgentError when `path` holds something else than this agent's earlier save (unless overwrite);
        return True when that content is to be replaced."""
        from .checkpoint import CHECKPOINT_DIR

        if path.exists() and not path.is_dir():
            raise AgentError(f"cannot save the agent to {str(path)!r}: it is a file, not a directory")
        config_file = path / CONFIG_FILE
        if not any((path / name).exists() for name in (CONFIG_FILE, CHECKPOINT_DIR, HOST_STATE_FILE)):
            return False
        try:
            info = read_document(path).get("agent")
        except (OSError, ValueError, AttributeError):
            info = None
        if isinstance(info, dict) and info.get("agent_id") == self._agent_id:
            return False  # this agent's own earlier save: updated in place, as a run updates its checkpoints
        if not overwrite:
            what = ("another agent" if isinstance(info, dict) else
                    "a training run" if config_file.exists() else "a checkpoint of something else")
            raise AgentError(f"{str(path)!r} already holds {what}; save elsewhere, or pass overwrite=True to "
                             "replace it all")
        return True

    def _write(self, path: Path) -> None:
        """config.json, then the checkpoint, then agent_host.npz naming the checkpoint's iteration (each file
        replaced atomically: a kill between them leaves the previous save's npz, which names its own checkpoint)."""
        from .checkpoint import Checkpointer

        path.mkdir(parents=True, exist_ok=True)
        document = to_jsonable(self.config, self.hparams)
        document["agent"] = {"state_dim": self.spec.obs_dim, "action_dim": self.spec.action_dim,
                             "action_min": list(self.spec.action_low), "action_max": list(self.spec.action_high),
                             "env_name": self.spec.name, "max_episode_steps": self.spec.max_episode_steps,
                             "agent_id": self._agent_id, "custom_networks": self._custom_networks}
        write_json_atomic(path / CONFIG_FILE, document)
        with Checkpointer(path) as checkpointer:
            checkpointer.save(int(self.state.iteration), self.state)
        tmp = path / (HOST_STATE_FILE + ".tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, iteration=np.asarray(int(self.state.iteration), np.int64), **self._host_arrays())
            tmp.replace(path / HOST_STATE_FILE)
        finally:
            tmp.unlink(missing_ok=True)

    def _host_arrays(self) -> dict[str, np.ndarray]:
        n, D, d = self.n_envs, self.spec.obs_dim, self.spec.action_dim
        empty = {"obs": (n, D), "action": (n, d), "reward": (n,), "terminated": (n,), "truncated": (n,),
                 "next_obs": (n, D), "time": (n,)}
        columns = list(zip(*self._rows)) if self._rows else [np.zeros((0,) + empty[f]) for f in _FIELDS]
        arrays = {f"rows_{f}": np.stack(c) if self._rows else c for f, c in zip(_FIELDS, columns)}
        tracker = self._episodes
        return dict(arrays, act_key=np.asarray(self._act_key),
                    time=tracker.time, ep_return=tracker.ep_return, ep_length=tracker.ep_length,
                    returns=np.asarray(tracker.returns, np.float64), lengths=np.asarray(tracker.lengths, np.int64),
                    std=np.asarray([float(s) for s in self._std_sum], np.float32))

    @classmethod
    def load(cls, path: str | Path, networks: Networks | None = None) -> Agent:
        """An Agent from a directory written by `save` (or a `--env gymnasium/...` CLI run: its newest checkpoint).
        An agent saved with custom networks needs the same ones again (`networks=`; their parameters come from the
        checkpoint). Every failure (missing, damaged or mismatched files, missing networks) is an AgentError in
        one line."""
        from .checkpoint import CheckpointError, Checkpointer

        path = Path(path)
        try:
            document = read_document(path)
            config, hparams = from_jsonable(document)
        except (FileNotFoundError, NotADirectoryError):
            raise AgentError(f"{str(path)!r} holds no saved agent (no config.json)") from None
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
            raise AgentError(f"{str(path)!r} has an unreadable config.json ({_first_line(err)})") from None
        _check_networks(path, document, networks)
        agent = cls.__new__(cls)
        try:
            spec = _spec_from_document(document, config)
            agent._setup(spec, config, hparams, state=_init_state_shape(spec, config, hparams, networks),
                         networks=networks)
        except AgentError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as err:  # ConfigError included
            if str(err).startswith("networks"):  # the given networks do not fit (networks.custom_network)
                raise AgentError(str(err)) from None
            raise AgentError(f"{str(path)!r} has an invalid config.json ({_first_line(err)})") from None
        info = document.get("agent")
        if isinstance(info, dict) and isinstance(info.get("agent_id"), str):
            agent._agent_id = info["agent_id"]  # the same agent: saving back into `path` updates it
        host = _read_host_arrays(path / HOST_STATE_FILE)
        iteration = int(host["iteration"]) if host is not None and "iteration" in host else None
        with Checkpointer(path) as checkpointer:
            if checkpointer.latest_iteration() is None:
                raise AgentError(f"{str(path)!r} has no checkpoint")
            try:
                agent.restore_state(checkpointer.restore(agent.state, iteration))
            except FileNotFoundError:
                raise AgentError(f"{str(path)!r} has no checkpoint {iteration}, which its {HOST_STATE_FILE} "
                                 "belongs to") from None
            except CheckpointError as err:  # damaged, or written by another configuration / TrainState layout
                raise AgentError(f"cannot load the agent in {str(path)!r}: {err}") from None
        if host is not None:
            try:
                agent._restore_host(host)
            except (KeyError, ValueError, TypeError, IndexError) as err:
                raise AgentError(f"{str(path / HOST_STATE_FILE)!r} does not match the agent "
                                 f"({_first_line(err)})") from None
        return agent

    def restore_state(self, state: TrainState) -> None:
        """Adopt a restored TrainState. Its arrays come back committed to a device, which would make the cached
        compiled programs (traced with uncommitted inputs) compile again; a host round trip avoids that."""
        self.state = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), state)

    def _restore_host(self, arrays: dict[str, np.ndarray]) -> None:
        n, D, d = self.n_envs, self.spec.obs_dim, self.spec.action_dim
        shapes = {"rows_obs": (n, D), "rows_action": (n, d), "rows_next_obs": (n, D), "rows_reward": (n,),
                  "rows_terminated": (n,), "rows_truncated": (n,), "rows_time": (n,)}
        count = arrays["rows_obs"].shape[0]
        for name, shape in shapes.items():
            if arrays[name].shape != (count,) + shape:
                raise ValueError(f"{name} has shape {arrays[name].shape}, expected {(count,) + shape}")
        for name in ("time", "ep_return", "ep_length"):
            if arrays[name].shape != (n,):
                raise ValueError(f"{name} has shape {arrays[name].shape}, expected {(n,)}")
        self._rows = [tuple(arrays[f"rows_{f}"][i] for f in _FIELDS) for i in range(count)]
        self._act_key = jnp.asarray(arrays["act_key"])
        self._episodes = EpisodeTracker(arrays["time"].astype(np.int32), arrays["ep_return"],
                                        arrays["ep_length"], list(map(float, arrays["returns"])),
                                        list(map(int, arrays["lengths"])))
        self._std_sum = [jnp.asarray(s) for s in arrays["std"]]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _save_failure(err: BaseException) -> str:
    """What went wrong in a save, in a few words (the checkpointer's own message already is one line)."""
    from .checkpoint import CheckpointError, is_no_space

    if isinstance(err, CheckpointError):
        return str(err)
    if is_no_space(err):
        return "no space left on device"
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}" + (f" ({err.filename})" if err.filename else "")
    return _first_line(err)


def _read_host_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """agent_host.npz as a dict (None if the save has none); a truncated or damaged file is an AgentError."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise AgentError(f"{str(path)!r} is damaged ({type(err).__name__}: {_first_line(err)}); the agent's "
                         "memorised transitions cannot be restored") from None


def _as_flags(name: str, value: Any) -> Any:
    """`terminated` / `truncated` as booleans: bools, or numbers that are exactly 0 or 1. Anything else (a string
    such as "False", None, 0.5) is an AgentError: np.asarray("False", bool) would be True."""
    if isinstance(value, (bool, np.bool_)):
        return value
    arr = np.asarray(value)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "iuf" and np.all((arr == 0) | (arr == 1)):  # empty: _as_batch names the shape
        return arr.astype(bool)
    raise AgentError(f"{name} must be a bool (or 0 / 1) per simulator, got {value!r}")


def _spec_from_document(document: dict, config: Config) -> EnvSpec:
    """The EnvSpec recorded by `save`, or the gymnasium env's own (a CLI run directory)."""
    info = document.get("agent")
    if info is not None:
        return host_spec(info["state_dim"], info["action_dim"], info["action_min"], info["action_max"],
                         name=info.get("env_name", AGENT_ENV), max_episode_steps=info.get("max_episode_steps"))
    if config.env.startswith("gymnasium/"):
        from .envs.gymnasium_env import gymnasium_spec

        return gymnasium_spec(config.env.split("/", 1)[1], config.action_repeat)
    raise AgentError(f"config.json describes a run of {config.env}, not an agent; resume it with "
                     "python -m ppocma_jax --resume")


def _check_networks(path: Path, document: dict, networks: Networks | None) -> None:
    """AgentError (one line) unless `networks` gives exactly the custom networks the saved agent was built with."""
    info = document.get("agent")
    saved = sorted(info.get("custom_networks") or []) if isinstance(info, dict) else []
    if networks is not None and not isinstance(networks, Networks):
        raise AgentError(f"networks must be ppocma_jax.Networks(...), got {type(networks).__name__}")
    given = sorted(networks.given()) if networks is not None else []
    if given == saved:
        return
    if not saved:
        raise AgentError(f"{str(path)!r} was saved with the built-in networks; load it without networks=")
    raise AgentError(f"{str(path)!r} was saved with custom networks ({', '.join(saved)}): pass the same ones, "
                     f"Agent.load(path, networks=Networks({', '.join(f + '=...' for f in saved)}))")


def _init_state_shape(spec: EnvSpec, config: Config, hparams: HParams, networks: Networks | None = None
                      ) -> TrainState:
    """A TrainState of the right structure without running the policy pre-training (restore overwrites it)."""
    trainer = Trainer.build(config, env=HostEnv(spec), networks=networks)
    abstract = jax.eval_shape(trainer.init_state, jax.random.PRNGKey(0), hparams.as_arrays())
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract)

