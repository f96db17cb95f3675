"""The update's passes, one rule per function: critic, variance, mean (with mirroring) and joint (algorithm.md §3).

Each pass is a pure function of the static pieces it needs (Config, Policy or critic MLP), the trained network's
parameters and optimiser state, its data (a flax.struct dataclass) and the dynamic HParams; it returns a
`PassResult` (or `CriticResult`). `Trainer.learn` (train.py) orders them (algorithm.md §3.1); the equations live in
losses.py and gae.py, cited here on the line that applies them.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from . import losses
from .config import Config, HParams
from .gae import compute_gae, monte_carlo_returns
from .history import History, history_sample
from .networks import MLP, CustomNetwork, MLPParams
from .normalize import ScalerState, scaler_apply
from .optim import Optimizer
from .policy import Policy, PolicyParams

ADV_EPS = 1e-10  # the original's epsilon in A / (std(A) + eps)


@struct.dataclass
class PassResult:
    """What one pass leaves: the trained network's parameters, its optimiser state and the pass's loss (the mean
    over its minibatch steps)."""

    params: Any
    opt_state: optax.OptState
    loss: jax.Array  # scalar


@struct.dataclass
class CriticBatch:
    """The iteration as the critic sees it, time-major [T, n, ...] (algorithm.md §4): inputs are
    [scaled obs, time feature]."""

    inputs: jax.Array  # [T, n, obs_dim + 1] at s_t, time index t
    next_inputs: jax.Array  # [T, n, obs_dim + 1] at the true successor s_t', time index t + 1
    end_inputs: jax.Array | None  # [T, n, obs_dim + 1] at s_t', time feature 0 (episode_ends="original"), else None
    reward: jax.Array  # [T, n]
    terminated: jax.Array  # [T, n] bool
    truncated: jax.Array  # [T, n] bool


@struct.dataclass
class Gae:
    """GAE of a batch under one critic (algorithm.md §3.3), each [T, n]."""

    advantages: jax.Array
    targets: jax.Array  # advantages + values: the lambda-returns
    values: jax.Array
    next_values: jax.Array


@struct.dataclass
class CriticResult:
    """The critic pass's outcome: the trained critic and the advantages the policy passes use."""

    trained: PassResult
    advantages: jax.Array  # [T, n], raw (before the mode's preprocessing)
    value_mean: jax.Array  # scalar: mean value over the batch under the critic the advantages come from


@struct.dataclass
class PolicyBatch:
    """The iteration's samples as the policy passes see them, flattened to n = T x n_envs rows."""

    obs: jax.Array  # [n, obs_dim] scaled with the newest scaler
    actions: jax.Array  # [n, d] (continuous) or [n] int (discrete)
    advantages: jax.Array  # [n] preprocessed for the mode (`preprocess_advantages`)


@struct.dataclass
class HistoryMinibatches:
    """Every minibatch of the variance pass drawn up front, [n_updates, B, ...] (algorithm.md §3.4, §3.8)."""

    obs: jax.Array  # [U, B, obs_dim] raw states rescaled with the newest scaler
    actions: jax.Array  # [U, B, d]
    advantages: jax.Array  # [U, B]
    mean: jax.Array  # [U, B, d] the current mean net's output, held fixed (stop-gradient) through the pass


# ---------------------------------------------------------------- shared machinery
def minibatch_rows(config: Config, key: jax.Array, n: int) -> jax.Array:
    """Rows of one minibatch [M]: M_eff drawn with replacement (algorithm.md §3.2), or all n with full_batch."""
    if config.full_batch:
        return jnp.arange(n)
    return jax.random.randint(key, (config.minibatch_size,), 0, n)


def optimizer(config: Config) -> Optimizer:
    """Every network's optimiser (algorithm.md §3.7): optional gradient clipping, then Adam, then the rate."""
    return Optimizer(adam_epsilon=config.adam_epsilon, max_grad_norm=config.max_grad_norm)


def adam_steps(loss_fn: Callable[[Any, Any], jax.Array], params: Any, opt_state: optax.OptState, draws: Any,
               learning_rate: jax.Array, config: Config, rows: Callable[[Any], Any] | None = None) -> PassResult:
    """One optimiser step of `loss_fn(params, rows(draw))` per leading entry of `draws` (algorithm.md §3.7), as a
    lax.scan; the loss is the mean over the steps. `rows` (default: the draw itself) turns a draw into the
    minibatch's rows, outside the gradient."""

    def step(carry, draw):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, draw if rows is None else rows(draw))
        params, opt_state = optimizer(config).step(params, grads, opt_state, learning_rate)
        return (params, opt_state), loss

    (params, opt_state), step_losses = jax.lax.scan(step, (params, opt_state), draws)
    return PassResult(params, opt_state, jnp.mean(step_losses))


# ---------------------------------------------------------------- critic pass
def critic_gae(critic: MLP | CustomNetwork, config: Config, params: MLPParams, batch: CriticBatch, gamma: jax.Array,
               lam: jax.Array) -> Gae:
    """GAE under `params` (algorithm.md §3.3): a termination never bootstraps, a time limit or the rollout cut
    bootstraps from the true successor at time t+1; episode_ends="original" bootstraps every episode end from
    time feature 0 (algorithm.md §3.3, §10 D1)."""
    values = critic.apply(params, batch.inputs)[..., 0]
    next_values = critic.apply(params, batch.next_inputs)[..., 0]
    terminated, truncated = batch.terminated, batch.truncated
    if config.episode_ends == "original":  # algorithm.md §3.3, §10 D1
        episode_end = batch.terminated | batch.truncated
        next_values = jnp.where(episode_end, critic.apply(params, batch.end_inputs)[..., 0], next_values)
        terminated, truncated = jnp.zeros_like(terminated), episode_end
    advantages, targets = compute_gae(batch.reward, values, next_values, terminated, truncated, gamma, lam)
    return Gae(advantages, targets, values, next_values)


def critic_targets(critic: MLP | CustomNetwork, config: Config, params: MLPParams, batch: CriticBatch, hp: HParams
                   ) -> tuple[jax.Array, Gae]:
    """The critic's regression targets [T, n] under `value_targets` (algorithm.md §3.3), from the critic before
    its pass, and that critic's GAE (the advantages of advantage_critic="old")."""
    before = critic_gae(critic, config, params, batch, hp.gamma, hp.gae_lambda)
    if config.value_targets == "returns":  # rewards-to-go: the lambda = 1 return (values enter only at cuts)
        return critic_gae(critic, config, params, batch, hp.gamma, jnp.ones_like(hp.gae_lambda)).targets, before
    if config.value_targets == "mc":  # the original's targets: no bootstrap at any episode end (§3.3, D2)
        episode_end = batch.terminated | batch.truncated
        return monte_carlo_returns(batch.reward, episode_end, before.next_values[-1], hp.gamma), before
    return before.targets, before  # lambda-returns A + V (algorithm.md §3.3)


def critic_pass(critic: MLP | CustomNetwork, config: Config, params: MLPParams, opt_state: optax.OptState, batch: CriticBatch,
                first_iteration: jax.Array, key: jax.Array, hp: HParams,
                replay_rows: jax.Array | None = None) -> CriticResult:
    """Train the critic, then compute advantages with it (algorithm.md §3.1 steps 3-4).

    Targets come from the critic as it was before this iteration; the advantages from the freshly trained one,
    as the original does (or the old one with advantage_critic="old"). `first_iteration` (bool scalar): the
    data-dependent bias init runs on this batch. `replay_rows` [n_updates, M] replaces the minibatch draws."""
    # Data-dependent bias init on the first iteration's inputs (the original does it on its first batch, §10 D4).
    params = jax.lax.cond(first_iteration,
                          lambda p: critic.bias_init(p, batch.inputs.reshape(-1, batch.inputs.shape[-1])),
                          lambda p: p, params)
    targets, before = critic_targets(critic, config, params, batch, hp)
    flat_inputs = batch.inputs.reshape(-1, batch.inputs.shape[-1])
    flat_targets = jax.lax.stop_gradient(targets.reshape(-1))
    n = flat_targets.shape[0]

    def loss_fn(p, rows):
        return losses.critic_loss(p, critic, flat_inputs[rows], flat_targets[rows], config.critic_loss)  # §4

    draws = jax.random.split(key, config.n_updates) if replay_rows is None else replay_rows
    rows = (lambda k: minibatch_rows(config, k, n)) if replay_rows is None else None
    trained = adam_steps(loss_fn, params, opt_state, draws, hp.critic_learning_rate, config, rows)
    if config.advantage_critic == "old":
        advantages, values = before.advantages, before.values
    else:  # algorithm.md §3.1 step 4: GAE with the critic just trained
        after = critic_gae(critic, config, trained.params, batch, hp.gamma, hp.gae_lambda)
        advantages, values = after.advantages, after.values
    return CriticResult(trained, advantages, jnp.mean(values))


# ---------------------------------------------------------------- advantages
def preprocess_advantages(config: Config, advantages: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[n] raw advantages -> (the mode's advantages [n], std before normalising) (algorithm.md §3.1 step 4).

    PPO-CMA and PG-pos ReLU them first; then divide by the std (or centre too: adv_norm=meanstd, PPO only)."""
    if config.relu_advantages:
        advantages = jnp.maximum(advantages, 0.0)
    adv_std = jnp.std(advantages)
    if config.advantage_norm == "meanstd":
        return (advantages - jnp.mean(advantages)) / (adv_std + ADV_EPS), adv_std
    return advantages / (adv_std + ADV_EPS), adv_std


# ---------------------------------------------------------------- PPO-CMA: variance pass, then mean pass
def history_minibatches(policy: Policy, config: Config, params: PolicyParams, history: History,
                        scaler: ScalerState, key: jax.Array, replay_slot: jax.Array | None = None,
                        replay_sample: jax.Array | None = None) -> HistoryMinibatches:
    """The variance pass's n_updates minibatches of B samples, drawn uniformly over the filled history slots
    (algorithm.md §3.4, §3.8), or the replayed (slot, sample) rows, each [n_updates, B].

    The mean net does not change during the variance pass, so its output for every minibatch is one forward."""
    batch = config.minibatch_size
    if replay_slot is None:
        obs, actions, advantages = history_sample(history, key, config.n_updates * batch)
    else:
        slot, sample = replay_slot.reshape(-1), replay_sample.reshape(-1)
        obs, actions, advantages = (history.obs[slot, sample], history.actions[slot, sample],
                                    history.advantages[slot, sample])
    obs = scaler_apply(scaler, obs)  # the history keeps raw states: rescale with the newest scaler (§3.8)
    mean = jax.lax.stop_gradient(policy.mean(params, obs))  # sg(mu(s_i)) of L_var (algorithm.md §3.4)
    split = lambda x: x.reshape((config.n_updates, batch) + x.shape[1:])
    return HistoryMinibatches(split(obs), split(actions), split(advantages), split(mean))


def variance_pass(policy: Policy, config: Config, params: PolicyParams, opt_state: optax.OptState,
                  minibatches: HistoryMinibatches, hp: HParams) -> PassResult:
    """Train the log-variance net on the history (algorithm.md §3.4): one Adam step of L_var per minibatch.

    Returns the log-variance net's parameters (`params["logvar"]` trained, the mean net untouched)."""

    def loss_fn(logvar_params, mb: HistoryMinibatches):
        # L_var = -(1/B) sum max(A_i, 0) log N(a_i; sg(mu(s_i)), sigma^2(s_i)) (algorithm.md §3.4)
        return losses.variance_loss(dict(params, logvar=logvar_params), mb.obs, mb.actions, mb.advantages, policy,
                                    hp, mb.mean)

    return adam_steps(loss_fn, params["logvar"], opt_state, minibatches, hp.learning_rate, config)


def mean_pass(policy: Policy, config: Config, params: PolicyParams, opt_state: optax.OptState, batch: PolicyBatch,
              mean_old: jax.Array, key: jax.Array, hp: HParams, replay_rows: jax.Array | None = None) -> PassResult:
    """Train the mean net on the current iteration with the (already updated) variance frozen (algorithm.md §3.4).

    `mean_old` [n, d]: the mean at `batch.obs` before both passes, the centre PPO-CMA-m mirrors bad actions
    through (algorithm.md §3.4, §10 D3). The targets, weights and log-variances do not change during the pass, so
    they are computed once for the whole iteration. `replay_rows` [n_updates, M] replaces the draws."""
    n = batch.advantages.shape[0]
    # t_i, w_i (mirrored for A_i < 0 in PPO-CMA-m) and sg(log sigma^2(s_i)) of L_mean (algorithm.md §3.4)
    targets, weights, logvar = losses.mean_loss_targets(params, batch.obs, batch.actions, batch.advantages,
                                                        mean_old, policy, hp, config.mirroring)

    def loss_fn(mean_params, rows):
        # L_mean = -(1/M) sum w_i log N(t_i; mu(s_i), sg(sigma^2(s_i))) (algorithm.md §3.4)
        return losses.mean_nll(dict(params, mean=mean_params), batch.obs[rows], targets[rows], weights[rows],
                               logvar[rows], policy)

    draws = jax.random.split(key, config.n_updates) if replay_rows is None else replay_rows
    rows = (lambda k: minibatch_rows(config, k, n)) if replay_rows is None else None
    return adam_steps(loss_fn, params["mean"], opt_state, draws, hp.learning_rate, config, rows)


# ---------------------------------------------------------------- PPO / PG: joint pass
def joint_pass(policy: Policy, config: Config, params: PolicyParams, opt_state: optax.OptState, batch: PolicyBatch,
               log_prob_old: jax.Array, key: jax.Array, hp: HParams) -> PassResult:
    """PPO (clipped surrogate, algorithm.md §3.6) or PG / PG-pos (algorithm.md §3.5) on the single policy network.

    Returns that network's parameters (`params["joint"]`, or `params["logits"]` for discrete actions). With
    target_kl > 0 (PPO only, as the Keras example), the pass ends after the first step whose approximate KL
    mean(log pi_old - log pi_new) over all the iteration's samples exceeds 1.5 x target_kl; that step is kept. The
    remaining steps of the fixed-length scan are skipped (lax.cond), not computed and masked. `log_prob_old` [n]."""
    name = "logits" if policy.discrete else "joint"
    n = batch.advantages.shape[0]
    log_prob_old = jax.lax.stop_gradient(log_prob_old)
    obs, actions, adv = batch.obs, batch.actions, batch.advantages

    def loss_fn(net, rows):
        if config.mode == "PPO":  # -(1/M) sum min(r A, clip(r, 1 - eps, 1 + eps) A) - c_ent H (algorithm.md §3.6)
            return losses.ppo_loss({name: net}, obs[rows], actions[rows], adv[rows], log_prob_old[rows], policy,
                                   hp)[0]
        return losses.pg_loss({name: net}, obs[rows], actions[rows], adv[rows], policy, hp)  # §3.5

    def kl_exceeded(net):  # the full-batch KL costs a forward pass over all samples: only when asked for
        if config.mode != "PPO":
            return jnp.array(False)
        return jax.lax.cond(
            hp.target_kl > 0,
            lambda: jnp.mean(log_prob_old - policy.log_prob({name: net}, obs, actions, hp)) > 1.5 * hp.target_kl,
            lambda: jnp.array(False))

    def update(net, opt, k):
        rows = minibatch_rows(config, k, n)
        loss, grads = jax.value_and_grad(loss_fn)(net, rows)
        net, opt = optimizer(config).step(net, grads, opt, hp.learning_rate)
        return net, opt, loss, kl_exceeded(net)

    def step(carry, k):
        net, opt, stopped = carry
        net, opt, loss, stop = jax.lax.cond(
            stopped, lambda: (net, opt, jnp.array(jnp.nan, jnp.float32), jnp.array(True)),
            lambda: update(net, opt, k))
        return (net, opt, stopped | stop), loss

    (net, opt_state, _), step_losses = jax.lax.scan(step, (params[name], opt_state, jnp.array(False)),
                                                    jax.random.split(key, config.n_updates))
    return PassResult(net, opt_state, jnp.nanmean(step_losses))


# ---------------------------------------------------------------- a mode's policy update
@struct.dataclass
class ReplayIndices:
    """Minibatch rows to use instead of drawing them, each [n_updates, M] int32: for replaying a reference update
    (tests/test_golden.py replays the original code's recorded draws). `var_slot` is the history slot (0 = oldest
    pushed, while fewer than H pushes), `var_sample` the sample within it."""

    critic: jax.Array
    var_slot: jax.Array
    var_sample: jax.Array
    mean: jax.Array


@struct.dataclass
class PolicyUpdate:
    """A mode's policy update: every policy network's parameters and optimiser state after it, and its losses."""

    params: PolicyParams
    opt_states: dict  # the policy networks' optimiser states, by network name
    policy_loss: jax.Array  # scalar: the mean pass's (PPO-CMA modes) or the joint pass's loss
    variance_loss: jax.Array  # scalar: the variance pass's loss; NaN outside the PPO-CMA modes


def cma_update(policy: Policy, config: Config, params: PolicyParams, opt_states: dict, history: History,
               scaler: ScalerState, batch: PolicyBatch, mean_old: jax.Array, key: jax.Array, hp: HParams,
               replay: ReplayIndices | None = None) -> PolicyUpdate:
    """PPO-CMA's two passes (algorithm.md §3.4): the variance over the history (this iteration already pushed)
    first, then the mean over the current data with the updated variance. `mean_old` [n, d]: the mean at
    `batch.obs` before both passes."""
    key_var, key_mean = jax.random.split(key)
    minibatches = history_minibatches(policy, config, params, history, scaler, key_var,
                                      *((None, None) if replay is None else (replay.var_slot, replay.var_sample)))
    variance = variance_pass(policy, config, params, opt_states["logvar"], minibatches, hp)
    params = dict(params, logvar=variance.params)  # the mean pass sees the new variance (algorithm.md §3.1 step 5)
    mean = mean_pass(policy, config, params, opt_states["mean"], batch, mean_old, key_mean, hp,
                     None if replay is None else replay.mean)
    return PolicyUpdate(params=dict(params, mean=mean.params),
                        opt_states=dict(opt_states, logvar=variance.opt_state, mean=mean.opt_state),
                        policy_loss=mean.loss, variance_loss=variance.loss)


def joint_update(policy: Policy, config: Config, params: PolicyParams, opt_states: dict, batch: PolicyBatch,
                 log_prob_old: jax.Array, key: jax.Array, hp: HParams) -> PolicyUpdate:
    """PPO, PG and PG-pos: the joint pass alone (algorithm.md §3.5-§3.6); no variance loss."""
    name = "logits" if policy.discrete else "joint"
    joint = joint_pass(policy, config, params, opt_states[name], batch, log_prob_old, key, hp)
    return PolicyUpdate(params={name: joint.params}, opt_states=dict(opt_states, **{name: joint.opt_state}),
                        policy_loss=joint.loss, variance_loss=jnp.array(jnp.nan, jnp.float32))
