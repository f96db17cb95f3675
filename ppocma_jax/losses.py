"""Loss functions of every mode, pure and separately testable (algorithm.md §3.4-§3.6, §4).

Each loss takes the full params it may read and returns a scalar. Stop-gradients are inside the losses, so a
gradient with respect to all params reaches only the network the loss trains (tests check this):
- `variance_loss` trains only the variance net (the mean is frozen);
- `mean_loss` trains only the mean net (the variance is frozen, mirroring inputs are constants);
- `ppo_loss` and `pg_loss` train the joint network; `critic_loss` the critic.

Shapes: B = minibatch, D = observation dim, d = action dim.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .config import HParams
from .networks import MLP, MLPParams
from .policy import Policy, PolicyParams, gaussian_log_prob


def mirror_targets(actions: jax.Array, mean_old: jax.Array, std: jax.Array, advantages: jax.Array,
                   kernel_scale: jax.Array | float = 1.0) -> tuple[jax.Array, jax.Array]:
    """PPO-CMA-m's negative-advantage mirroring (algorithm.md §3.4, D3).

    Args:
      actions: [B, d] taken (clipped) actions a.
      mean_old: [B, d] policy mean before this iteration's update, at the same states.
      std: [B, d] current (post-variance-update) action std at those states.
      advantages: [B] normalised advantages.
      kernel_scale: kappa, the kernel width in units of std.

    Returns (target_actions [B, d], weights [B]):
      A >= 0: the action itself, weight A.
      A < 0: the mirror 2 mean_old - a (not clipped), weight |A| k with
        k = mean_j exp(-(a_j - mean_old_j)^2 / (2 kappa^2 std_j^2)): an average of per-dimension bumps that
        discounts bad actions far from the mean, where mirroring's local-linearity assumption is weak.
    """
    negative = advantages < 0
    mirrored = 2.0 * mean_old - actions
    kernel = jnp.mean(jnp.exp(-jnp.square(actions - mean_old) / (2.0 * jnp.square(kernel_scale * std))), axis=-1)
    targets = jnp.where(negative[:, None], mirrored, actions)
    weights = jnp.where(negative, -advantages * kernel, advantages)
    return targets, weights


def variance_loss(params: PolicyParams, obs: jax.Array, actions: jax.Array, advantages: jax.Array,
                  policy: Policy, hp: HParams, mean: jax.Array | None = None) -> jax.Array:
    """-1/B sum A+_i log N(a_i; sg(mu(s_i)), sigma^2(s_i)) over a history minibatch (algorithm.md §3.4).

    For one state its minimiser is the A+-weighted second moment of past good actions around the CURRENT mean:
    the variance stretches along the direction the mean keeps moving (the paper's evolution-path analogue).
    obs: [B, D] scaled; actions: [B, d]; advantages: [B] (signed; only the positive part counts).
    mean: [B, d] the frozen current mean at obs, if the caller computed it already (the trainer does, for all
    minibatches of the pass in one forward); otherwise it is computed here, under stop_gradient.
    """
    if mean is None:
        mean = policy.mean(params, obs)
    mean = jax.lax.stop_gradient(mean)
    logvar = policy.logvar(params, obs, hp)
    weights = jnp.maximum(advantages, 0.0)
    return -jnp.mean(weights * gaussian_log_prob(actions, mean, logvar))


def mean_loss_targets(params: PolicyParams, obs: jax.Array, actions: jax.Array, advantages: jax.Array,
                      mean_old: jax.Array, policy: Policy, hp: HParams, mirror: bool
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The constants of the mean pass (algorithm.md §3.4) -> (targets [B, d], weights [B], logvar [B, d]).

    They depend only on the frozen variance net, mean_old and the data, so the trainer computes them once for the
    whole iteration instead of once per minibatch. PPO-CMA-m (mirror=True): positive samples target a, negative
    ones 2 mean_old - a with the kernel weight of `mirror_targets`; PPO-CMA: advantages arrive ReLU'd, so only
    positive samples count.
    """
    logvar = policy.logvar(params, obs, hp)
    if mirror:
        targets, weights = mirror_targets(actions, mean_old, jnp.exp(0.5 * logvar), advantages, hp.kernel_scale)
    else:
        targets, weights = actions, jnp.maximum(advantages, 0.0)
    return jax.lax.stop_gradient((targets, weights, logvar))


def mean_nll(params: PolicyParams, obs: jax.Array, targets: jax.Array, weights: jax.Array, logvar: jax.Array,
             policy: Policy) -> jax.Array:
    """-1/B sum w_i log N(target_i; mu(s_i), exp(logvar_i)): the mean pass's loss given its constants."""
    mean = policy.mean(params, obs)
    return -jnp.mean(weights * gaussian_log_prob(targets, mean, jax.lax.stop_gradient(logvar)))


def mean_loss(params: PolicyParams, obs: jax.Array, actions: jax.Array, advantages: jax.Array,
              mean_old: jax.Array, policy: Policy, hp: HParams, mirror: bool) -> jax.Array:
    """Advantage-weighted Gaussian NLL of the mean with the variance frozen (algorithm.md §3.4): `mean_nll` on the
    constants of `mean_loss_targets`. obs: [B, D] scaled; actions, mean_old: [B, d]; advantages: [B]."""
    targets, weights, logvar = mean_loss_targets(params, obs, actions, advantages, mean_old, policy, hp, mirror)
    return mean_nll(params, obs, targets, weights, logvar, policy)


def ppo_loss(params: PolicyParams, obs: jax.Array, actions: jax.Array, advantages: jax.Array,
             log_prob_old: jax.Array, policy: Policy, hp: HParams) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped surrogate (algorithm.md §3.6): -1/B sum min(r A, clip(r, 1-eps, 1+eps) A) - c_ent * entropy.

    obs: [B, D] scaled; actions: [B, d] (or [B] int for discrete); advantages, log_prob_old: [B].
    Returns (loss, {"approx_kl", "clip_fraction", "entropy"}).
    """
    log_prob = policy.log_prob(params, obs, actions, hp)
    log_ratio = log_prob - log_prob_old
    ratio = jnp.exp(log_ratio)
    eps = hp.ppo_epsilon
    surrogate = jnp.minimum(ratio * advantages, jnp.clip(ratio, 1.0 - eps, 1.0 + eps) * advantages)
    entropy = jnp.mean(policy.entropy(params, obs, hp))
    loss = -jnp.mean(surrogate) - hp.entropy_weight * entropy
    aux = {
        "approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
        "clip_fraction": jnp.mean((jnp.abs(ratio - 1.0) > eps).astype(jnp.float32)),
        "entropy": entropy,
    }
    return loss, aux


def pg_loss(params: PolicyParams, obs: jax.Array, actions: jax.Array, advantages: jax.Array, policy: Policy,
            hp: HParams) -> jax.Array:
    """Vanilla policy gradient -1/B sum A log pi(a|s) (algorithm.md §3.5); PG-pos gets ReLU'd advantages."""
    return -jnp.mean(advantages * policy.log_prob(params, obs, actions, hp))


def critic_loss(critic_params: MLPParams, critic: MLP, inputs: jax.Array, targets: jax.Array,
                kind: str = "l1") -> jax.Array:
    """L1 regression (algorithm.md §4): mean |V(x) - target|, or "mse": mean (V(x) - target)^2 (Keras PPO example).
    inputs: [B, D + 1] (scaled obs, time feature)."""
    values = critic.apply(critic_params, inputs)[..., 0]
    if kind == "mse":
        return jnp.mean(jnp.square(values - targets))
    return jnp.mean(jnp.abs(values - targets))
