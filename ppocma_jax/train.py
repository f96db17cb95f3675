"""The training program: `make_train(config) -> train(key, hparams) -> (state, metrics)`, one jit-able function.

One iteration (algorithm.md §3.1, with the fixed-length-rollout adjustments of algorithm.md §10 D1-D2):
  rollout (n_envs x T decisions) -> scaler update -> critic: lambda-return targets from the current critic, then
  n_updates L1 minibatch steps -> GAE advantages from the freshly trained critic -> (ReLU for PPO-CMA / PG-pos)
  -> divide by std -> mode step:
     PPO-CMA(-m): push to the H-deep history; mean_old = current mean; variance pass over the history;
                  mean pass over the current data (with mirroring for -m), using the updated variance;
     PPO: clipped surrogate on the joint network; PG / PG-pos: vanilla policy gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from . import losses
from .config import Config, ConfigError, HParams
from .envs import Env, EnvSpec, make_env, wrap_env
from .evaluation import episode_limit, evaluate_policy
from .gae import compute_gae, monte_carlo_returns
from .history import History, history_init, history_push, history_sample
from .metrics import METRIC_NAMES
from .networks import MLP, CustomNetwork, MLPParams, Networks, custom_network
from .normalize import ScalerState, scaler_apply, scaler_init, scaler_update
from .optim import adam_init, adam_step
from .policy import Policy, PolicyParams, gaussian_log_prob
from .resources import check_fits
from .rollout import EnvCarry, Transition, env_reset, rollout

ADV_EPS = 1e-10  # the original's epsilon in A / (std(A) + eps)


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


@struct.dataclass
class ReplayIndices:
    """Minibatch rows to use instead of drawing them, each [n_updates, M] int32: for replaying a reference update
    (tests/test_golden.py replays the original code's recorded draws). `var_slot` is the history slot (0 = oldest
    pushed, while fewer than H pushes), `var_sample` the sample within it."""

    critic: jax.Array
    var_slot: jax.Array
    var_sample: jax.Array
    mean: jax.Array


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
    # Set (by the CLI, see distributed.py) for a program sharded over several devices: the logging callback then
    # gets a replicated copy of the metrics (else XLA warns once per sharded array), and is unordered, as XLA
    # supports ordered callbacks on one device only (the host still gets iterations in order: the loop is serial).
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
        a host simulator, see agent.py): scaler, critic, advantages, policy.

        Returns the state with new parameters, optimizer states, scaler and history (env, key and counters are
        left to the caller) and the learning metrics: critic_loss, policy_loss, variance_loss, approx_kl,
        adv_std, value_mean, finite. `replay` (tests only) replaces every minibatch draw with given rows. The
        batch's shape may differ from the config's rollout (the Agent's
        iterations vary in length); the PPO-CMA history needs exactly `samples_per_iter` samples.
        """
        cfg = self.config
        if replay is not None and not cfg.is_cma:  # _joint_update draws its own rows: say so rather than ignore
            raise ValueError(f"replay indices are for the PPO-CMA modes; mode {cfg.mode} has no variance / mean pass")
        scaler = scaler_update(state.scaler, traj.obs, cfg.obs_norm)

        critic_params, critic_opt, critic_loss, advantages, value_mean = self._critic_and_advantages(
            state, scaler, traj, key_critic, hp, None if replay is None else replay.critic)

        flat = _flatten(traj)
        obs = scaler_apply(scaler, flat.obs)
        adv = advantages.reshape(-1)
        if cfg.relu_advantages:
            adv = jnp.maximum(adv, 0.0)
        adv_std = jnp.std(adv)
        if cfg.advantage_norm == "meanstd":
            adv = (adv - jnp.mean(adv)) / (adv_std + ADV_EPS)
        else:
            adv = adv / (adv_std + ADV_EPS)

        opt_states = dict(state.opt_states, critic=critic_opt)
        if self.policy.discrete:
            log_prob_old = self.policy.log_prob(state.policy_params, obs, flat.action, hp)
        else:  # one forward pass gives both the old mean (PPO-CMA's mirroring centre) and log pi_old
            mean_old, logvar_old = self.policy.gaussian(state.policy_params, obs, hp)
            log_prob_old = gaussian_log_prob(flat.action, mean_old, logvar_old)
        if cfg.is_cma:
            history = history_push(state.history, flat.obs, flat.action, adv)
            policy_params, opt_states, policy_loss, var_loss = self._cma_update(
                state.policy_params, opt_states, history, scaler, obs, flat.action, adv,
                jax.lax.stop_gradient(mean_old), key_policy, hp, replay)
        else:
            history = state.history
            policy_params, opt_states, policy_loss = self._joint_update(
                state.policy_params, opt_states, obs, flat.action, adv, log_prob_old, key_policy, hp)
            var_loss = jnp.array(jnp.nan, jnp.float32)
        log_ratio = self.policy.log_prob(policy_params, obs, flat.action, hp) - log_prob_old
        approx_kl = jnp.mean(jnp.expm1(log_ratio) - log_ratio)

        new_state = state.replace(policy_params=policy_params, critic_params=critic_params, opt_states=opt_states,
                                  scaler=scaler, history=history)
        losses_finite = jnp.isfinite(critic_loss) & jnp.isfinite(policy_loss)
        metrics = {
            "critic_loss": critic_loss,
            "policy_loss": policy_loss,
            "variance_loss": var_loss,
            "approx_kl": approx_kl,
            "adv_std": adv_std,
            "value_mean": value_mean,
            "finite": (losses_finite & _all_finite((policy_params, critic_params))).astype(jnp.int32),
        }
        return new_state, metrics

    def _eval_due(self, iteration: jax.Array) -> jax.Array:
        cfg = self.config
        return (iteration % cfg.eval_every == 0) | (iteration == cfg.n_iterations)

    def _eval_return(self, state: TrainState, hp: HParams) -> jax.Array:
        returns = evaluate_policy(self.env, self.policy, state.policy_params, state.scaler, state.eval_key,
                                  self.config.eval_episodes, episode_limit(self.env), hp)
        return jnp.mean(returns)

    def _maybe_evaluate(self, state: TrainState, hp: HParams) -> jax.Array:
        """Mean deterministic return every eval_every iterations and at the last one; NaN otherwise."""
        if self.config.eval_every == 0:
            return jnp.array(jnp.nan, jnp.float32)
        return jax.lax.cond(self._eval_due(state.iteration), lambda s: self._eval_return(s, hp),
                            lambda _: jnp.array(jnp.nan, jnp.float32), state)

    # ---------------------------------------------------------------- critic + GAE
    def _critic_inputs(self, scaler: ScalerState, obs: jax.Array, time: jax.Array, hp: HParams) -> jax.Array:
        """[scaled obs, time_scale * decision index] (algorithm.md §4; the policy never sees the time feature)."""
        # The original forces the time feature to 0 when gamma = 0 (bandit problems: time carries no value).
        feature = jnp.where(hp.gamma > 0, hp.critic_time_scale, 0.0) * time.astype(jnp.float32)
        return jnp.concatenate([scaler_apply(scaler, obs), feature[..., None]], axis=-1)

    def _critic_and_advantages(self, state: TrainState, scaler: ScalerState, traj: Transition, key: jax.Array,
                               hp: HParams, replay_rows: jax.Array | None = None):
        """Train the critic, then compute advantages with it (algorithm.md §3.1 steps 3-4).

        Targets (`value_targets`): lambda-returns from the critic as it was before this iteration by default, or the
        original's Monte-Carlo returns cut at every episode end (algorithm.md §3.3, D2); the advantages then use
        the freshly trained critic, as the original does. Successor states get time index t+1, also at a time
        limit; `episode_ends="original"` bootstraps every episode end from time feature 0 instead (§10 D1).
        `replay_rows` [n_updates, M] replaces the minibatch draws (ReplayIndices)."""
        cfg = self.config
        inputs = self._critic_inputs(scaler, traj.obs, traj.time, hp)
        next_inputs = self._critic_inputs(scaler, traj.next_obs, traj.time + 1, hp)
        # Data-dependent bias init on the first iteration's inputs (the original does it on its first batch).
        critic_params = jax.lax.cond(
            state.iteration == 0,
            lambda p: self.critic.bias_init(p, inputs.reshape(-1, inputs.shape[-1])),
            lambda p: p,
            state.critic_params,
        )

        episode_end = traj.terminated | traj.truncated
        if cfg.episode_ends == "original":  # every episode end bootstraps from V(s', time feature 0) (§10 D1)
            end_inputs = self._critic_inputs(scaler, traj.next_obs, jnp.zeros_like(traj.time), hp)

        def gae_with(params, lam):
            values = self.critic.apply(params, inputs)[..., 0]
            next_values = self.critic.apply(params, next_inputs)[..., 0]
            terminated, truncated = traj.terminated, traj.truncated
            if cfg.episode_ends == "original":
                next_values = jnp.where(episode_end, self.critic.apply(params, end_inputs)[..., 0], next_values)
                terminated, truncated = jnp.zeros_like(terminated), episode_end
            adv, targets = compute_gae(traj.reward, values, next_values, terminated, truncated, hp.gamma, lam)
            return adv, targets, values, next_values

        old_advantages, targets, old_values, old_next_values = gae_with(critic_params, hp.gae_lambda)
        if cfg.value_targets == "returns":  # rewards-to-go: the lambda = 1 return (values enter only at cuts)
            targets = gae_with(critic_params, jnp.ones_like(hp.gae_lambda))[1]
        elif cfg.value_targets == "mc":  # the original's targets: no bootstrap at any episode end (§3.3, D2)
            targets = monte_carlo_returns(traj.reward, episode_end, old_next_values[-1], hp.gamma)
        flat_inputs = inputs.reshape(-1, inputs.shape[-1])
        flat_targets = jax.lax.stop_gradient(targets.reshape(-1))
        n = flat_targets.shape[0]

        def step(carry, draw):
            params, opt = carry
            idx = self._minibatch(draw, n) if replay_rows is None else draw
            loss, grads = jax.value_and_grad(losses.critic_loss)(params, self.critic, flat_inputs[idx],
                                                                 flat_targets[idx], cfg.critic_loss)
            params, opt = adam_step(params, grads, opt, hp.critic_learning_rate, cfg.adam_epsilon)
            return (params, opt), loss

        draws = jax.random.split(key, cfg.n_updates) if replay_rows is None else replay_rows
        (critic_params, critic_opt), step_losses = jax.lax.scan(step, (critic_params, state.opt_states["critic"]),
                                                                draws)
        if cfg.advantage_critic == "old":
            advantages, values = old_advantages, old_values
        else:
            advantages, _, values, _ = gae_with(critic_params, hp.gae_lambda)
        return critic_params, critic_opt, jnp.mean(step_losses), advantages, jnp.mean(values)

    def _minibatch(self, key: jax.Array, n: int) -> jax.Array:
        """Indices of one minibatch: M_eff drawn with replacement (algorithm.md §3.2), or all n with full_batch."""
        if self.config.full_batch:
            return jnp.arange(n)
        return jax.random.randint(key, (self.config.minibatch_size,), 0, n)

    # ---------------------------------------------------------------- policy updates
    def _cma_update(self, params: PolicyParams, opt_states: dict, history: History, scaler: ScalerState,
                    obs: jax.Array, actions: jax.Array, adv: jax.Array, mean_old: jax.Array, key: jax.Array,
                    hp: HParams, replay: ReplayIndices | None = None):
        """PPO-CMA's two passes (algorithm.md §3.4): variance over the history first, then the mean over current data.

        What each pass holds frozen is computed once, not per minibatch: the variance pass's mean for all its
        minibatches in one forward (the mean net does not change during that pass), and the mean pass's targets,
        weights and log-variances for the whole iteration (the variance net no longer changes). The math is the
        same as evaluating them inside every step; it saves a forward pass of the other network per step.
        `mean_old`: [n, d] the mean at `obs` before both passes.
        """
        cfg = self.config
        policy = self.policy
        batch = cfg.minibatch_size
        n = adv.shape[0]
        key_var, key_mean = jax.random.split(key)

        # Variance pass: draw every minibatch up front, [n_updates, B, ...].
        if replay is None:
            h_obs, h_actions, h_adv = history_sample(history, key_var, cfg.n_updates * batch)
        else:
            slot, sample = replay.var_slot.reshape(-1), replay.var_sample.reshape(-1)
            h_obs, h_actions, h_adv = history.obs[slot, sample], history.actions[slot, sample], \
                history.advantages[slot, sample]
        h_obs = scaler_apply(scaler, h_obs)  # history keeps raw states: rescale with the newest scaler
        h_mean = jax.lax.stop_gradient(policy.mean(params, h_obs))
        split = lambda x: x.reshape((cfg.n_updates, batch) + x.shape[1:])
        var_batches = tuple(map(split, (h_obs, h_actions, h_adv, h_mean)))

        def var_step(carry, minibatch):
            logvar_params, opt = carry
            m_obs, m_actions, m_adv, m_mean = minibatch

            def loss_fn(lp):
                return losses.variance_loss(dict(params, logvar=lp), m_obs, m_actions, m_adv, policy, hp, m_mean)

            loss, grads = jax.value_and_grad(loss_fn)(logvar_params)
            logvar_params, opt = adam_step(logvar_params, grads, opt, hp.learning_rate, cfg.adam_epsilon)
            return (logvar_params, opt), loss

        (logvar_params, opt_var), var_losses = jax.lax.scan(var_step, (params["logvar"], opt_states["logvar"]),
                                                            var_batches)
        params = dict(params, logvar=logvar_params)

        # Mean pass, with the updated (now frozen) variance.
        targets, weights, logvar = losses.mean_loss_targets(params, obs, actions, adv, mean_old, policy, hp,
                                                            cfg.mirroring)

        def mean_step(carry, draw):
            mean_params, opt = carry
            idx = self._minibatch(draw, n) if replay is None else draw

            def loss_fn(mp):
                return losses.mean_nll(dict(params, mean=mp), obs[idx], targets[idx], weights[idx], logvar[idx],
                                       policy)

            loss, grads = jax.value_and_grad(loss_fn)(mean_params)
            mean_params, opt = adam_step(mean_params, grads, opt, hp.learning_rate, cfg.adam_epsilon)
            return (mean_params, opt), loss

        draws = jax.random.split(key_mean, cfg.n_updates) if replay is None else replay.mean
        (mean_params, opt_mean), mean_losses = jax.lax.scan(mean_step, (params["mean"], opt_states["mean"]), draws)
        params = dict(params, mean=mean_params)
        opt_states = dict(opt_states, logvar=opt_var, mean=opt_mean)
        return params, opt_states, jnp.mean(mean_losses), jnp.mean(var_losses)

    def _joint_update(self, params: PolicyParams, opt_states: dict, obs: jax.Array, actions: jax.Array,
                      adv: jax.Array, log_prob_old: jax.Array, key: jax.Array, hp: HParams):
        """PPO (clipped surrogate) or PG / PG-pos on the single policy network (algorithm.md §3.5-§3.6).

        With target_kl > 0 (PPO's early stop, as the Keras example), the pass ends after the first step whose
        approximate KL mean(log pi_old - log pi_new) over all the iteration's samples exceeds 1.5 x target_kl; that
        step is kept. The remaining steps of the fixed-length scan are skipped (lax.cond), not computed and masked.
        """
        cfg = self.config
        policy = self.policy
        name = "logits" if policy.discrete else "joint"
        n = adv.shape[0]
        log_prob_old = jax.lax.stop_gradient(log_prob_old)
        use_kl_stop = cfg.mode == "PPO"

        def loss_fn(p, idx):
            if cfg.mode == "PPO":
                return losses.ppo_loss(p, obs[idx], actions[idx], adv[idx], log_prob_old[idx], policy, hp)[0]
            return losses.pg_loss(p, obs[idx], actions[idx], adv[idx], policy, hp)

        def update(net, opt, k):
            idx = self._minibatch(k, n)
            loss, grads = jax.value_and_grad(lambda w: loss_fn({name: w}, idx))(net)
            net, opt = adam_step(net, grads, opt, hp.learning_rate, cfg.adam_epsilon)
            if use_kl_stop:  # the full-batch KL costs a forward pass over all samples: only when asked for
                stop = jax.lax.cond(
                    hp.target_kl > 0,
                    lambda: jnp.mean(log_prob_old - policy.log_prob({name: net}, obs, actions, hp))
                    > 1.5 * hp.target_kl,
                    lambda: jnp.array(False))
            else:
                stop = jnp.array(False)
            return net, opt, loss, stop

        def step(carry, k):
            net, opt, stopped = carry
            net, opt, loss, stop = jax.lax.cond(
                stopped, lambda: (net, opt, jnp.array(jnp.nan, jnp.float32), jnp.array(True)),
                lambda: update(net, opt, k))
            return (net, opt, stopped | stop), loss

        (net, opt, _), step_losses = jax.lax.scan(step, (params[name], opt_states[name], jnp.array(False)),
                                                  jax.random.split(key, cfg.n_updates))
        return {name: net}, dict(opt_states, **{name: opt}), jnp.nanmean(step_losses)

    # ---------------------------------------------------------------- whole run
    def run(self, state: TrainState, hp: HParams, n_iterations: int,
            on_iteration: Callable[[dict], None] | None = None, limit: jax.Array | int | None = None
            ) -> tuple[TrainState, dict[str, jax.Array]]:
        """`n_iterations` iterations as one lax.scan; `on_iteration(metrics)` runs on the host after each.

        `limit` (optional, may be traced) is the total iteration count at which to stop: iterations past it are
        skipped, so one compiled chunk of fixed length serves every chunk of a checkpointed run, the last included.
        After a NaN/Inf the remaining iterations are skipped too and report finite=0.
        """
        first = state.iteration
        metric_shapes = jax.eval_shape(self.iteration, state, hp)[1]

        def skipped(state):
            return state, {k: jnp.full(v.shape, jnp.nan if jnp.issubdtype(v.dtype, jnp.floating) else 0, v.dtype)
                           for k, v in metric_shapes.items()}

        def run_iteration(state):
            new_state, metrics = self.iteration(state, hp)
            if on_iteration is not None:
                if self.callback_sharding is not None:
                    metrics = jax.lax.with_sharding_constraint(metrics, self.callback_sharding)
                jax.debug.callback(on_iteration, metrics, ordered=self.callback_sharding is None)
            return new_state, metrics

        def body(carry, i):
            state, failed = carry
            past_limit = jnp.array(False) if limit is None else first + i >= limit
            new_state, metrics = jax.lax.cond(failed | past_limit, skipped, run_iteration, state)
            # Rows are numbered by attempted iteration, so they stay unique after a halt.
            metrics = dict(metrics, iteration=first + i + 1,
                           env_steps=(first + i + 1) * jnp.int32(self.config.iter_steps))
            # NaN/Inf guard: a non-finite update is discarded, so the carried state stays the last good one.
            ok = (metrics["finite"] == 1) | past_limit
            state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
            return (state, failed | ~ok), metrics

        (state, _), metrics = jax.lax.scan(body, (state, jnp.array(False)), jnp.arange(n_iterations, dtype=jnp.int32))
        return state, metrics


    def run_batched(self, states: TrainState, hps: HParams, n_iterations: int,
                    on_iteration: Callable[[dict, jax.Array], None] | None = None,
                    limit: jax.Array | int | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
        """R runs (leading axis of `states` and `hps`: seeds and/or hyperparameter settings) trained together.

        The run axis sits INSIDE the iteration loop (a vmap of one iteration), so `on_iteration(metrics, ran)`
        fires once per iteration with [R] arrays, not R times. Metrics have shape [n_iterations, R]. A run whose
        update turns NaN/Inf keeps its last good state and reports finite=0 from then on; the others go on.
        `ran` is False for iterations past `limit` (see `run`), which the host ignores.
        """
        first = states.iteration[0]  # every run advances in lockstep
        n_runs = states.iteration.shape[0]

        def body(carry, i):
            states, failed = carry
            past_limit = jnp.array(False) if limit is None else first + i >= limit
            new_states, metrics = jax.vmap(lambda st, h: self.iteration(st, h, evaluate=False))(states, hps)
            if self.config.eval_every > 0:  # one scalar schedule for all runs (they advance in lockstep)
                nan_r = jnp.full((n_runs,), jnp.nan, jnp.float32)
                metrics["eval_return"] = jax.lax.cond(
                    self._eval_due(first + i + 1) & ~past_limit,
                    lambda st: jax.vmap(self._eval_return)(st, hps), lambda _: nan_r, new_states)
            ok = (metrics["finite"] == 1) & ~failed
            keep_new = ok & ~past_limit

            def select(new, old):
                mask = keep_new.reshape(keep_new.shape + (1,) * (new.ndim - 1))
                return jnp.where(mask, new, old)

            states = jax.tree.map(select, new_states, states)
            nan_out = lambda v: jnp.where(failed, jnp.nan, v) if jnp.issubdtype(v.dtype, jnp.floating) else v
            metrics = {k: nan_out(v) for k, v in metrics.items()}
            metrics["finite"] = jnp.where(failed, 0, metrics["finite"])
            metrics["iteration"] = jnp.broadcast_to(first + i + 1, (n_runs,))
            metrics["env_steps"] = metrics["iteration"] * jnp.int32(self.config.iter_steps)
            if on_iteration is not None:
                if self.callback_sharding is not None:
                    metrics = jax.lax.with_sharding_constraint(metrics, self.callback_sharding)
                jax.debug.callback(on_iteration, metrics, ~past_limit, ordered=self.callback_sharding is None)
            return (states, failed | (~ok & ~past_limit)), metrics

        (states, _), metrics = jax.lax.scan(body, (states, jnp.zeros((n_runs,), bool)),
                                            jnp.arange(n_iterations, dtype=jnp.int32))
        return states, metrics


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
