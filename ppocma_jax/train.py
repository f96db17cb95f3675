"""The training program: `make_train(config) -> train(key, hparams) -> (state, metrics)`, one jit-able function.

One iteration (algorithm.md §3.1, with the fixed-length-rollout adjustments of algorithm.md §10 D1-D2):
  rollout (n_envs x T decisions) -> scaler update -> critic: lambda-return targets from the current critic, then
  n_updates L1 minibatch steps -> GAE advantages from the freshly trained critic -> (ReLU for PPO-CMA / PG-pos)
  -> divide by std -> mode step:
     PPO-CMA(-m): push to the H-deep history; mean_old = current mean; variance pass over the history;
                  mean pass over the current data (with mirroring for -m), using the updated variance;
     PPO: clipped surrogate on the joint network; PG / PG-pos: vanilla policy gradient.
The passes themselves are update.py's functions; `Trainer` orders them and runs the loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from .config import Config, ConfigError, HParams
from .envs import Env, EnvSpec, make_env, wrap_env
from .evaluation import episode_limit, eval_due, evaluate_policy
from .history import History, history_init, history_push
from .metrics import METRIC_NAMES
from .networks import MLP, CustomNetwork, MLPParams, Networks, custom_network
from .normalize import ScalerState, scaler_apply, scaler_init, scaler_update
from .optim import adam_init, learning_rate_scale
from .policy import Policy, PolicyParams, gaussian_log_prob
from .resources import check_fits
from .rollout import EnvCarry, Transition, env_reset, rollout
from .update import (CriticBatch, CriticResult, PolicyBatch, PolicyUpdate, ReplayIndices, cma_update, critic_pass,
                     joint_update, preprocess_advantages)

@struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly: a checkpoint of this is a resumable run."""

    policy_params: PolicyParams
    critic_params: MLPParams
    opt_states: dict  # separate persistent Adam states: "critic" and "mean"/"logvar" or "joint"
    scaler: ScalerState
    history: History | None  # PPO-CMA modes only
    env: EnvCarry
    key: jax.Array
    eval_key: jax.Array  # fixed for the run: every evaluation starts from the same env states (comparable curves)
    iteration: jax.Array  # int32, iterations completed
    env_steps: jax.Array  # int32, environment (simulator) steps so far


# METRIC_NAMES, the per-iteration metrics, live in metrics.py (the host side reads them without the trainer).


def iteration_keys(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """An iteration's keys from the state's key: (next state key, rollout, critic pass, policy passes).

    The one place they are derived: the host Agent and experiments that call `Trainer.learn` on their own data use
    it too, so the same state and data give the same update as `make_train`."""
    next_key, key_rollout, key_critic, key_policy = jax.random.split(key, 4)
    return next_key, key_rollout, key_critic, key_policy


def _flatten(tree: Any) -> Any:
    """[T, n, ...] -> [T * n, ...]."""
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


@dataclass(frozen=True)
class Trainer:
    """The static parts of a run (config, env, networks) and the pure functions built on them."""

    config: Config
    env: Env
    policy: Policy
    critic: MLP | CustomNetwork
    # Set it (e.g. to distributed.replicated(mesh)) when a program with an on_iteration callback is sharded over
    # several devices: the callback then gets a replicated copy of the metrics (else XLA warns once per sharded
    # array), and is unordered, as XLA supports ordered callbacks on one device only (the host still gets iterations
    # in order: the loop is serial). The CLI no longer needs it: its chunks return their metrics, no callback.
    callback_sharding: Any = None

    @staticmethod
    def build(config: Config, env: Any = None, networks: Networks | None = None) -> Trainer:
        """`env` replaces `make_env(config.env, ...)`: an env object (see `envs.wrap_env`: our Env protocol, a
        gymnax Environment or (Environment, params)), or a host simulator's spec-only stand-in (agent.py), whose
        data reaches `learn` from outside the compiled program. The object wins over `config.env`, which is then
        only a label.

        `networks` (networks.Networks): flax.linen modules or (init, apply) pairs replacing the built-in MLPs of
        the policy and / or the critic; their outputs are checked here (ConfigError, one line)."""
        config = config.validate()
        if networks is not None and not isinstance(networks, Networks):
            raise ConfigError(f"networks must be ppocma_jax.Networks(mean=..., logvar=..., policy=..., critic=...), "
                              f"got {type(networks).__name__}")
        if env is None:
            env = make_env(config.env, config.action_repeat, backend=config.backend)
        elif not isinstance(getattr(env, "spec", None), EnvSpec):
            env = wrap_env(env, action_repeat=config.action_repeat)
        spec = env.spec
        if spec.discrete and config.is_cma:
            raise ConfigError(f"mode {config.mode} needs continuous actions but {spec.name} has {spec.action_dim} "
                              "discrete actions; use --mode PPO, PG or PG-pos")
        if spec.discrete:
            if config.initial_mean is not None or config.initial_std is not None:
                raise ConfigError(f"initial_mean / initial_std are for continuous actions; {spec.name} is discrete")
        else:
            low, high = spec.low_high()
            for name, value in (("initial_mean", config.initial_mean), ("initial_std", config.initial_std)):
                if value is not None and len(value) != spec.action_dim:
                    raise ConfigError(f"{name} has {len(value)} values but {spec.name} has {spec.action_dim} "
                                      "action dimensions")
                if value is not None and not all(math.isfinite(v) for v in value):
                    raise ConfigError(f"{name} must be finite, got {value}")
            if config.initial_mean is not None and not all(lo < m < hi for m, lo, hi in
                                                           zip(config.initial_mean, low, high)):
                raise ConfigError(f"initial_mean {config.initial_mean} must lie strictly inside the action box "
                                  f"[{list(map(float, low))}, {list(map(float, high))}] (the mean is soft-clipped)")
            if config.initial_std is not None and min(config.initial_std) <= 0:
                raise ConfigError(f"initial_std must be > 0, got {config.initial_std}")
        check_fits(config, spec)  # ConfigError (one line) for sizes this machine cannot hold: before any compile
        policy = Policy.from_config(config, spec, networks)
        if networks is not None and networks.critic is not None:  # input: scaled obs + the time feature
            critic = custom_network(networks.critic, "critic", spec.obs_dim + 1, 1, "the state value")
        else:
            critic = MLP(spec.obs_dim + 1, 1, config.hidden_layers, config.hidden_units, config.activation,
                         config.dense_skips, config.init)
        return Trainer(config, env, policy, critic)

    def check_hparams(self, hp: HParams) -> None:
        """Host-side checks of concrete hyperparameters against this env (ConfigError, one line).

        Skipped for traced values (inside jit/vmap); the CLI always runs it."""
        try:
            values = {name: np.asarray(getattr(hp, name), np.float64) for name in ("sigma_min", "sigma_max_scale")}
        except jax.errors.TracerArrayConversionError:
            return
        hp.validate()
        if self.policy.discrete:
            return
        low, high = self.env.spec.low_high()
        sigma_max = values["sigma_max_scale"][..., None] * (high - low)
        sigma_min = values["sigma_min"][..., None]
        if np.any(sigma_min >= sigma_max):
            raise ConfigError(f"sigma_min={hp.sigma_min} must be below sigma_max = sigma_max_scale x action range = "
                              f"{np.min(sigma_max):g} for {self.env.spec.name}")
        std0 = np.asarray(self.policy.initial_std)
        if np.any(std0 <= sigma_min) or np.any(std0 >= sigma_max):
            raise ConfigError(f"initial_std {tuple(map(float, std0))} must lie strictly between sigma_min "
                              f"({hp.sigma_min}) and sigma_max ({np.min(sigma_max):g}): the policy cannot "
                              "represent it otherwise")

    # ---------------------------------------------------------------- init
    def init_state(self, key: jax.Array, hp: HParams) -> TrainState:
        cfg = self.config
        key_policy, key_critic, key_env, key_run, key_eval = jax.random.split(key, 5)
        policy_params = self.policy.init(key_policy, hp, cfg.policy_init, cfg.pretrain_steps)
        critic_params = self.critic.init(key_critic)
        opt_states = {"critic": adam_init(critic_params)}
        opt_states.update({name: adam_init(p) for name, p in policy_params.items()})
        history = None
        if cfg.is_cma:
            history = history_init(cfg.history_buffer_size, cfg.samples_per_iter, self.env.spec.obs_dim,
                                   self.env.spec.action_dim)
        return TrainState(
            policy_params=policy_params,
            critic_params=critic_params,
            opt_states=opt_states,
            scaler=scaler_init(self.env.spec.obs_dim),
            history=history,
            env=env_reset(self.env, key_env, cfg.n_envs),
            key=key_run,
            eval_key=key_eval,
            iteration=jnp.zeros((), jnp.int32),
            env_steps=jnp.zeros((), jnp.int32),
        )

    # ---------------------------------------------------------------- one iteration
    def iteration(self, state: TrainState, hp: HParams, evaluate: bool = True
                  ) -> tuple[TrainState, dict[str, jax.Array]]:
        """Collect one rollout and update: the body of the compiled loop.

        evaluate=False leaves eval_return NaN: `run_batched` evaluates outside its vmap, where the schedule is one
        scalar condition (under vmap a cond on a batched predicate would run the evaluation every iteration)."""
        cfg = self.config
        key, key_rollout, key_critic, key_policy = iteration_keys(state.key)
        env_carry, traj, stats = rollout(self.env, self.policy, state.policy_params, state.scaler, state.env,
                                         key_rollout, cfg.rollout_len, hp)
        learned, learn_metrics = self.learn(state, traj, key_critic, key_policy, hp)
        new_state = self.advance(learned, key).replace(env=env_carry)
        episodes = stats.episodes
        has_episodes = episodes > 0
        metrics = {
            "iteration": new_state.iteration,
            "env_steps": new_state.env_steps,
            "mean_return": jnp.where(has_episodes, stats.return_sum / jnp.maximum(episodes, 1), jnp.nan),
            "episodes": episodes,
            "mean_length": jnp.where(has_episodes, stats.length_sum / jnp.maximum(episodes, 1), jnp.nan),
            "policy_std": (stats.std_sum / cfg.rollout_len) if not self.policy.discrete else jnp.array(jnp.nan),
            **learn_metrics,
            "eval_return": self._maybe_evaluate(new_state, hp) if evaluate else jnp.array(jnp.nan, jnp.float32),
        }
        metrics = {name: jnp.asarray(metrics[name]) for name in METRIC_NAMES}
        return new_state, metrics

    def advance(self, state: TrainState, key: jax.Array) -> TrainState:
        """The bookkeeping that closes an iteration: the next PRNG key and the counters (one more iteration,
        iter_steps more env steps). Shared by `iteration`, the host Agent and experiments that run `learn` alone,
        so all of them stay step-for-step equal to `make_train`."""
        return state.replace(key=key, iteration=state.iteration + 1, env_steps=state.env_steps + self.config.iter_steps)

    def learn(self, state: TrainState, traj: Transition, key_critic: jax.Array, key_policy: jax.Array,
              hp: HParams, replay: ReplayIndices | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
        """The update half of an iteration, on a given time-major batch `traj` [T, n, ...] (from `rollout` or from
        a host simulator, see agent.py): scaler, critic, advantages, policy (algorithm.md §3.1 steps 2-6).

        Returns the state with new parameters, optimizer states, scaler and history (env, key and counters are
        left to the caller) and the learning metrics: critic_loss, policy_loss, variance_loss, approx_kl,
        adv_std, value_mean, finite. `replay` (tests only) replaces every minibatch draw with given rows. The
        batch's shape may differ from the config's rollout (the Agent's
        iterations vary in length); the PPO-CMA history needs exactly `samples_per_iter` samples.
        """
        cfg = self.config
        if replay is not None and not cfg.is_cma:  # joint_pass draws its own rows: say so rather than ignore
            raise ValueError(f"replay indices are for the PPO-CMA modes; mode {cfg.mode} has no variance / mean pass")
        if cfg.lr_schedule != "constant":  # both rates scaled by the schedule's factor (algorithm.md §3.7)
            scale = learning_rate_scale(cfg.lr_schedule, state.iteration, cfg.n_iterations)
            hp = hp.replace(learning_rate=hp.learning_rate * scale,
                            critic_learning_rate=hp.critic_learning_rate * scale)
        scaler = scaler_update(state.scaler, traj.obs, cfg.obs_norm)  # algorithm.md §3.1 step 2, §5
        critic = critic_pass(self.critic, cfg, state.critic_params, state.opt_states["critic"],
                             self._critic_batch(scaler, traj, hp), state.iteration == 0, key_critic, hp,
                             None if replay is None else replay.critic)  # algorithm.md §3.1 steps 3-4
        flat = _flatten(traj)
        # (Scaled before the advantages, in this order: XLA's fusion follows program order, and this order keeps
        # results bit-identical to earlier versions of this function.)
        obs = scaler_apply(scaler, flat.obs)
        adv, adv_std = preprocess_advantages(cfg, critic.advantages.reshape(-1))
        batch = PolicyBatch(obs=obs, actions=flat.action, advantages=adv)
        mean_old, log_prob_old = self._old_policy(state.policy_params, batch, hp)
        opt_states = dict(state.opt_states, critic=critic.trained.opt_state)
        history = state.history
        if cfg.is_cma:  # algorithm.md §3.1 step 5: push raw states (§3.8), then the variance and mean passes
            history = history_push(state.history, flat.obs, flat.action, adv)
            update = cma_update(self.policy, cfg, state.policy_params, opt_states, history, scaler, batch,
                                jax.lax.stop_gradient(mean_old), key_policy, hp, replay)
        else:
            update = joint_update(self.policy, cfg, state.policy_params, opt_states, batch, log_prob_old,
                                  key_policy, hp)
        new_state = state.replace(policy_params=update.params, critic_params=critic.trained.params,
                                  opt_states=update.opt_states, scaler=scaler, history=history)
        return new_state, self._learn_metrics(critic, update, batch, log_prob_old, adv_std, hp)

    def _critic_batch(self, scaler: ScalerState, traj: Transition, hp: HParams) -> CriticBatch:
        """The critic's view of `traj` [T, n, ...]: inputs at s_t (time t) and at the successor (time t + 1; time 0
        too with episode_ends="original", algorithm.md §10 D1)."""
        end_inputs = None
        if self.config.episode_ends == "original":
            end_inputs = self._critic_inputs(scaler, traj.next_obs, jnp.zeros_like(traj.time), hp)
        return CriticBatch(inputs=self._critic_inputs(scaler, traj.obs, traj.time, hp),
                           next_inputs=self._critic_inputs(scaler, traj.next_obs, traj.time + 1, hp),
                           end_inputs=end_inputs, reward=traj.reward, terminated=traj.terminated,
                           truncated=traj.truncated)

    def _old_policy(self, params: PolicyParams, batch: PolicyBatch, hp: HParams
                    ) -> tuple[jax.Array | None, jax.Array]:
        """(mean_old [n, d] or None for discrete actions, log pi_old(a_i | s_i) [n]) before the policy update."""
        if self.policy.discrete:
            return None, self.policy.log_prob(params, batch.obs, batch.actions, hp)
        # one forward pass gives both the old mean (PPO-CMA's mirroring centre) and log pi_old
        mean_old, logvar_old = self.policy.gaussian(params, batch.obs, hp)
        return mean_old, gaussian_log_prob(batch.actions, mean_old, logvar_old)

    def _learn_metrics(self, critic: CriticResult, update: PolicyUpdate, batch: PolicyBatch,
                       log_prob_old: jax.Array, adv_std: jax.Array, hp: HParams) -> dict[str, jax.Array]:
        """The learning metrics of one update (see METRIC_NAMES)."""
        log_ratio = self.policy.log_prob(update.params, batch.obs, batch.actions, hp) - log_prob_old
        losses_finite = jnp.isfinite(critic.trained.loss) & jnp.isfinite(update.policy_loss)
        return {
            "critic_loss": critic.trained.loss,
            "policy_loss": update.policy_loss,
            "variance_loss": update.variance_loss,
            "approx_kl": jnp.mean(jnp.expm1(log_ratio) - log_ratio),  # KL(old || new), the k3 estimator
            "adv_std": adv_std,
            "value_mean": critic.value_mean,
            "finite": (losses_finite & _all_finite((update.params, critic.trained.params))).astype(jnp.int32),
        }

    def evaluate(self, state: TrainState, hp: HParams) -> jax.Array:
        """The mean undiscounted return [] of `eval_episodes` deterministic episodes of `state`'s policy, each from
        a fresh env drawn with the run's fixed eval_key (so successive evaluations are comparable). Pure; the CLI
        compiles it as a program of its own (compiled_train.py), `run` inlines it."""
        returns = evaluate_policy(self.env, self.policy, state.policy_params, state.scaler, state.eval_key,
                                  self.config.eval_episodes, episode_limit(self.env), hp)
        return jnp.mean(returns)

    def _maybe_evaluate(self, state: TrainState, hp: HParams) -> jax.Array:
        """`evaluate` on the iterations `eval_due` names; NaN otherwise."""
        if self.config.eval_every == 0:
            return jnp.array(jnp.nan, jnp.float32)
        return jax.lax.cond(eval_due(state.iteration, self.config), lambda s: self.evaluate(s, hp),
                            lambda _: jnp.array(jnp.nan, jnp.float32), state)

    # ---------------------------------------------------------------- critic + GAE
    def _critic_inputs(self, scaler: ScalerState, obs: jax.Array, time: jax.Array, hp: HParams) -> jax.Array:
        """[scaled obs, time_scale * decision index] (algorithm.md §4; the policy never sees the time feature)."""
        # The original forces the time feature to 0 when gamma = 0 (bandit problems: time carries no value).
        feature = jnp.where(hp.gamma > 0, hp.critic_time_scale, 0.0) * time.astype(jnp.float32)
        return jnp.concatenate([scaler_apply(scaler, obs), feature[..., None]], axis=-1)

    # ---------------------------------------------------------------- whole run
    def run(self, state: TrainState, hp: HParams, n_iterations: int,
            on_iteration: Callable[[dict], None] | None = None, limit: jax.Array | int | None = None,
            evaluate: bool = True) -> tuple[TrainState, dict[str, jax.Array]]:
        """`n_iterations` iterations as one lax.scan; `on_iteration(metrics)` runs on the host after each.

        `limit` (optional, may be traced) is the total iteration count at which to stop: iterations past it are
        skipped, so one compiled chunk of fixed length serves every chunk of a checkpointed run, the last included.
        After a NaN/Inf the remaining iterations are skipped too and report finite=0. evaluate=False leaves
        eval_return NaN, for a caller that runs `evaluate` as a program of its own (compiled_train.py).
        """
        metric_shapes = jax.eval_shape(self.iteration, state, hp)[1]

        def skipped(state):
            return state, {k: jnp.full(v.shape, jnp.nan if jnp.issubdtype(v.dtype, jnp.floating) else 0, v.dtype)
                           for k, v in metric_shapes.items()}

        def step(state, failed, past_limit, i):
            new_state, metrics = jax.lax.cond(failed | past_limit, skipped,
                                              lambda s: self.iteration(s, hp, evaluate), state)
            return new_state, metrics, ~(failed | past_limit)

        report = None if on_iteration is None else lambda metrics, ran: on_iteration(metrics) if ran else None
        return self._loop(step, state, n_iterations, limit, report)

    def run_batched(self, states: TrainState, hps: HParams, n_iterations: int,
                    on_iteration: Callable[[dict, jax.Array], None] | None = None,
                    limit: jax.Array | int | None = None, evaluate: bool = True
                    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """R runs (leading axis of `states` and `hps`: seeds and/or hyperparameter settings) trained together.

        The run axis sits INSIDE the iteration loop (a vmap of one iteration), so `on_iteration(metrics, ran)`
        fires once per iteration with [R] arrays, not R times. Metrics have shape [n_iterations, R]. A run whose
        update turns NaN/Inf keeps its last good state and reports finite=0 from then on; the others go on.
        `ran` is False for iterations past `limit` (see `run`), which the host ignores. evaluate=False: as in `run`.
        """
        first = states.iteration[0]  # every run advances in lockstep
        n_runs = states.iteration.shape[0]

        def step(states, failed, past_limit, i):
            new_states, metrics = jax.vmap(lambda st, h: self.iteration(st, h, evaluate=False))(states, hps)
            if evaluate and self.config.eval_every > 0:  # one scalar schedule for all runs (lockstep)
                nan_r = jnp.full((n_runs,), jnp.nan, jnp.float32)
                metrics["eval_return"] = jax.lax.cond(
                    eval_due(first + i + 1, self.config) & ~past_limit,
                    lambda st: jax.vmap(self.evaluate)(st, hps), lambda _: nan_r, new_states)
            return new_states, metrics, ~past_limit

        return self._loop(step, states, n_iterations, limit, on_iteration)

    def _loop(self, step: Callable, states: TrainState, n_iterations: int, limit: jax.Array | int | None,
              report: Callable[[dict, jax.Array], None] | None) -> tuple[TrainState, dict[str, jax.Array]]:
        """The loop body `run` and `run_batched` share, as one lax.scan over `n_iterations`: one run (scalar
        flags) or R runs in lockstep (flags [R], leading axis of every state leaf).

        `step(states, failed, past_limit, i) -> (new states, metrics, ran)` is one iteration. Around it: the limit
        (iterations at or past `limit` keep the state), the NaN/Inf guard (algorithm.md §3.1 step 6: a non-finite
        update is discarded, the run keeps its last good state and reports finite=0 and NaN from then on), rows
        numbered by attempted iteration (unique after a halt), and `report(metrics, ran)` on the host."""
        first = states.iteration.reshape(-1)[0]  # runs advance in lockstep
        iter_steps = jnp.int32(self.config.iter_steps)

        def body(carry, i):
            states, failed = carry
            past_limit = jnp.array(False) if limit is None else first + i >= limit
            new_states, metrics, ran = step(states, failed, past_limit, i)
            ok = (metrics["finite"] == 1) & ~failed
            keep_new = ok & ~past_limit
            states = jax.tree.map(lambda new, old: jnp.where(_expand(keep_new, new), new, old), new_states, states)
            nan_out = lambda v: jnp.where(failed, jnp.nan, v) if jnp.issubdtype(v.dtype, jnp.floating) else v
            metrics = {k: nan_out(v) for k, v in metrics.items()}
            metrics["finite"] = jnp.where(failed, 0, metrics["finite"])
            metrics["iteration"] = jnp.broadcast_to(first + i + 1, failed.shape)
            metrics["env_steps"] = metrics["iteration"] * iter_steps
            if report is not None:
                if self.callback_sharding is not None:
                    metrics = jax.lax.with_sharding_constraint(metrics, self.callback_sharding)
                jax.debug.callback(report, metrics, ran, ordered=self.callback_sharding is None)
            return (states, failed | (~ok & ~past_limit)), metrics

        failed = jnp.zeros(states.iteration.shape, bool)
        (states, _), metrics = jax.lax.scan(body, (states, failed), jnp.arange(n_iterations, dtype=jnp.int32))
        return states, metrics


def _expand(flag: jax.Array, leaf: jax.Array) -> jax.Array:
    """A per-run flag [] or [R] broadcastable against a state leaf [R, ...]."""
    return flag.reshape(flag.shape + (1,) * (leaf.ndim - flag.ndim))


def make_train(config: Config, on_iteration: Callable[[dict], None] | None = None, env: Any = None,
               networks: Networks | None = None) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Build `train(key, hparams=None) -> (final TrainState, metrics)`.

    `train` is pure and jit-able as a whole; metrics arrays have a leading iteration axis (see METRIC_NAMES).
    hparams=None uses HParams() defaults. Raises ConfigError for invalid configs (before any compilation).
    `on_iteration`, if given, receives each iteration's metrics on the host (jax.debug.callback).
    `env`, if given, is an env object trained instead of `config.env` (see `Trainer.build`, `envs.wrap_env`).
    `networks`, if given, replaces built-in MLPs with your own (networks.Networks; see `Trainer.build`).
    """
    trainer = Trainer.build(config, env, networks)

    def train(key: jax.Array, hparams: HParams | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
        hparams = hparams if hparams is not None else HParams()
        trainer.check_hparams(hparams)  # concrete values only; a no-op under jit / vmap tracing
        hp = hparams.as_arrays()
        state = trainer.init_state(key, hp)
        return trainer.run(state, hp, config.n_iterations, on_iteration)

    train.trainer = trainer  # type: ignore[attr-defined]
    return train
