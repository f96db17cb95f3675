"""Policy networks and their distributions (algorithm.md §2).

Three kinds, chosen by mode and action space:
- "separate" (PPO-CMA, PPO-CMA-m): two independent MLPs, one for the raw mean, one for the raw log-variance;
- "joint" (PPO, PG, PG-pos on continuous actions): one MLP with 2d outputs (raw mean, raw log-variance);
- "categorical" (PPO, PG, PG-pos on discrete actions): one MLP with one logit per action.

Gaussian outputs are squashed into their bounds with a sigmoid "soft clip" (algorithm.md §2.2): the mean strictly inside
the action box, the log-variance between log(sigma_min^2) and log((sigma_max_scale * range)^2).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from .config import Config, ConfigError, HParams
from .envs.base import EnvSpec
from .networks import MLP, CustomNetwork, Networks, custom_network
from .optim import adam_init, adam_step

PolicyParams = dict  # {"mean": mlp, "logvar": mlp} | {"joint": mlp} | {"logits": mlp}


def softclip(x: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """lo + (hi - lo) * sigmoid(x): smooth, never saturating hard (the original found tanh/hard clips worse)."""
    return lo + (hi - lo) * jax.nn.sigmoid(x)


def gaussian_log_prob(x: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(x; mean, diag exp(logvar)) summed over the last axis, without the constant -d/2 log(2 pi).

    The constant is dropped as in the original (algorithm.md §3.4); it cancels in PPO ratios and does not change gradients.
    """
    return -jnp.sum(0.5 * jnp.square(x - mean) * jnp.exp(-logvar) + 0.5 * logvar, axis=-1)


@dataclass(frozen=True)
class Policy:
    """Static description of the policy; every method is a pure function of (params, inputs, hparams)."""

    kind: str
    obs_dim: int
    action_dim: int
    action_low: tuple[float, ...] | None
    action_high: tuple[float, ...] | None
    initial_mean: tuple[float, ...] | None
    initial_std: tuple[float, ...] | None
    hidden_layers: int = 2
    hidden_units: int = 128
    activation: str = "lrelu"
    dense_skips: bool = True
    init_scheme: str = "unit_norm"
    custom: tuple[tuple[str, CustomNetwork], ...] = ()  # (params key, network) replacing the built-in MLP there

    @staticmethod
    def from_config(config: Config, spec: EnvSpec, networks: Networks | None = None) -> Policy:
        """`networks`: custom policy networks (see networks.Networks); None, or a field left None, keeps the MLP."""
        kind = "categorical" if spec.discrete else ("separate" if config.is_cma else "joint")
        mean0 = std0 = None
        if not spec.discrete:
            low, high = spec.low_high()
            mean0 = tuple(map(float, (low + high) / 2)) if config.initial_mean is None else config.initial_mean
            std0 = tuple(map(float, (high - low) / 2)) if config.initial_std is None else config.initial_std
        custom = _custom_policy_networks(networks, kind, spec, config) if networks is not None else ()
        return Policy(kind, spec.obs_dim, spec.action_dim, spec.action_low, spec.action_high, mean0, std0,
                      config.hidden_layers, config.hidden_units, config.activation, config.dense_skips, config.init,
                      custom)

    # ---- structure ----
    def _mlp(self, out_dim: int) -> MLP:
        return MLP(self.obs_dim, out_dim, self.hidden_layers, self.hidden_units, self.activation, self.dense_skips,
                   self.init_scheme)

    def networks(self) -> dict[str, MLP | CustomNetwork]:
        d = self.action_dim
        if self.kind == "separate":
            nets = {"mean": self._mlp(d), "logvar": self._mlp(d)}
        elif self.kind == "joint":
            nets = {"joint": self._mlp(2 * d)}
        else:
            nets = {"logits": self._mlp(d)}
        nets.update(self.custom)
        return nets

    @property
    def discrete(self) -> bool:
        return self.kind == "categorical"

    def _bounds(self) -> tuple[jax.Array, jax.Array]:
        return jnp.asarray(self.action_low, jnp.float32), jnp.asarray(self.action_high, jnp.float32)

    def logvar_bounds(self, hp: HParams) -> tuple[jax.Array, jax.Array]:
        low, high = self._bounds()
        lo = 2.0 * jnp.log(hp.sigma_min) * jnp.ones_like(low)
        hi = 2.0 * jnp.log(hp.sigma_max_scale * (high - low))
        return lo, hi

    # ---- outputs ----
    def mean(self, params: PolicyParams, x: jax.Array) -> jax.Array:
        """Action mean [..., d] from scaled observations x [..., D]; reads only the mean net when separate."""
        low, high = self._bounds()
        if self.kind == "separate":
            raw = self.networks()["mean"].apply(params["mean"], x)
        else:
            raw = self.networks()["joint"].apply(params["joint"], x)[..., : self.action_dim]
        return softclip(raw, low, high)

    def logvar(self, params: PolicyParams, x: jax.Array, hp: HParams) -> jax.Array:
        """Log-variance [..., d]; reads only the variance net when separate."""
        lo, hi = self.logvar_bounds(hp)
        if self.kind == "separate":
            raw = self.networks()["logvar"].apply(params["logvar"], x)
        else:
            raw = self.networks()["joint"].apply(params["joint"], x)[..., self.action_dim:]
        return softclip(raw, lo, hi)

    def gaussian(self, params: PolicyParams, x: jax.Array, hp: HParams) -> tuple[jax.Array, jax.Array]:
        """(mean, logvar), one forward pass per network."""
        if self.kind == "joint":
            low, high = self._bounds()
            lo, hi = self.logvar_bounds(hp)
            raw = self.networks()["joint"].apply(params["joint"], x)
            return (softclip(raw[..., : self.action_dim], low, high),
                    softclip(raw[..., self.action_dim:], lo, hi))
        return self.mean(params, x), self.logvar(params, x, hp)

    def logits(self, params: PolicyParams, x: jax.Array) -> jax.Array:
        return self.networks()["logits"].apply(params["logits"], x)

    def log_prob(self, params: PolicyParams, x: jax.Array, action: jax.Array, hp: HParams) -> jax.Array:
        """log pi(action | x): [...]; continuous without the Gaussian constant (see gaussian_log_prob)."""
        if self.discrete:
            logp = jax.nn.log_softmax(self.logits(params, x))
            return jnp.take_along_axis(logp, action[..., None].astype(jnp.int32), axis=-1)[..., 0]
        mean, logvar = self.gaussian(params, x, hp)
        return gaussian_log_prob(action, mean, logvar)

    def entropy(self, params: PolicyParams, x: jax.Array, hp: HParams) -> jax.Array:
        """Entropy [...] (Gaussian: up to the constant d/2 (1 + log 2 pi), i.e. 1/2 sum log sigma^2)."""
        if self.discrete:
            logp = jax.nn.log_softmax(self.logits(params, x))
            return -jnp.sum(jnp.exp(logp) * logp, axis=-1)
        return 0.5 * jnp.sum(self.logvar(params, x, hp), axis=-1)

    # ---- acting ----
    def sample(self, key: jax.Array, params: PolicyParams, x: jax.Array, hp: HParams
               ) -> tuple[jax.Array, jax.Array]:
        """Stochastic action and the std used ([..., d]; zeros for discrete). Continuous actions are clipped to the
        box (algorithm.md §2.3); the clipped action is what gets stored and trained on."""
        if self.discrete:
            action = jax.random.categorical(key, self.logits(params, x)).astype(jnp.int32)
            return action, jnp.zeros(action.shape + (1,), jnp.float32)
        mean, logvar = self.gaussian(params, x, hp)
        std = jnp.exp(0.5 * logvar)
        return self.clip(mean + std * jax.random.normal(key, mean.shape)), std

    def sample_initial(self, key: jax.Array, batch_shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
        """Sample the initial Gaussian N(mean0, std0^2), clipped: the original acts from it until the first update
        (algorithm.md §2.4)."""
        mean0 = jnp.asarray(self.initial_mean, jnp.float32)
        std0 = jnp.asarray(self.initial_std, jnp.float32)
        noise = jax.random.normal(key, batch_shape + (self.action_dim,))
        return self.clip(mean0 + std0 * noise), jnp.broadcast_to(std0, batch_shape + (self.action_dim,))

    def deterministic(self, params: PolicyParams, x: jax.Array) -> jax.Array:
        """Greedy action: the mean (already inside the box), or the arg-max logit."""
        if self.discrete:
            return jnp.argmax(self.logits(params, x), axis=-1).astype(jnp.int32)
        return self.clip(self.mean(params, x))

    def clip(self, action: jax.Array) -> jax.Array:
        low, high = self._bounds()
        return jnp.clip(action, low, high)

    # ---- initialisation ----
    def init(self, key: jax.Array, hp: HParams, policy_init: str = "pretrain", pretrain_steps: int = 2000,
             pretrain_batch: int = 256) -> PolicyParams:
        """Initial params: random weights, data-dependent biases, then (continuous) make every state map to about
        N(mean0, std0^2): by the original's pre-training (algorithm.md §2.4) or analytically (spec P14)."""
        key_w, key_x, key_pre = jax.random.split(key, 3)
        nets = self.networks()
        keys = jax.random.split(key_w, len(nets))
        params = {name: net.init(k) for (name, net), k in zip(sorted(nets.items()), keys)}
        # Batch 0 of fake N(0, I) states only sets the biases (the original's first pre-training batch).
        x0 = jax.random.normal(key_x, (pretrain_batch, self.obs_dim))
        params = {name: nets[name].bias_init(p, x0) for name, p in params.items()}
        if self.discrete:
            return params
        if policy_init == "analytic":  # Trainer.build refuses it for custom networks (it sets the MLP's last layer)
            return self._analytic_init(params, hp)
        return self._pretrain(key_pre, params, hp, pretrain_steps - 1, pretrain_batch)

    def _output_bias_targets(self, hp: HParams) -> tuple[jax.Array, jax.Array]:
        """Raw outputs that the soft clips map to mean0 and log(std0^2)."""
        low, high = self._bounds()
        lo, hi = self.logvar_bounds(hp)
        eps = 1e-6
        u_mean = jnp.clip((jnp.asarray(self.initial_mean) - low) / (high - low), eps, 1 - eps)
        u_var = jnp.clip((2 * jnp.log(jnp.asarray(self.initial_std)) - lo) / (hi - lo), eps, 1 - eps)
        return jax.scipy.special.logit(u_mean), jax.scipy.special.logit(u_var)

    def _analytic_init(self, params: PolicyParams, hp: HParams) -> PolicyParams:
        raw_mean, raw_var = self._output_bias_targets(hp)

        def set_output(mlp_params, bias):
            last = {"w": jnp.zeros_like(mlp_params[-1]["w"]), "b": bias.astype(jnp.float32)}
            return mlp_params[:-1] + [last]

        if self.kind == "separate":
            return {"mean": set_output(params["mean"], raw_mean), "logvar": set_output(params["logvar"], raw_var)}
        return {"joint": set_output(params["joint"], jnp.concatenate([raw_mean, raw_var]))}

    def _pretrain(self, key: jax.Array, params: PolicyParams, hp: HParams, steps: int, batch: int) -> PolicyParams:
        """Adam steps (own optimizer, policy learning rate) on mean (mu - mu0)^2 + mean (sigma - sigma0)^2 over
        fake N(0, I) states (algorithm.md §2.4; note it matches sigma, not log sigma)."""
        mean0 = jnp.asarray(self.initial_mean, jnp.float32)
        std0 = jnp.asarray(self.initial_std, jnp.float32)

        def loss_fn(p, x):
            mean, logvar = self.gaussian(p, x, hp)
            return jnp.mean(jnp.square(mean - mean0)) + jnp.mean(jnp.square(jnp.exp(0.5 * logvar) - std0))

        def step(carry, k):
            p, opt = carry
            grads = jax.grad(loss_fn)(p, jax.random.normal(k, (batch, self.obs_dim)))
            p, opt = adam_step(p, grads, opt, hp.learning_rate)
            return (p, opt), None

        (params, _), _ = jax.lax.scan(step, (params, adam_init(params)), jax.random.split(key, max(steps, 0)))
        return params



def _custom_policy_networks(networks: Networks, kind: str, spec: EnvSpec, config: Config
                            ) -> tuple[tuple[str, CustomNetwork], ...]:
    """Check the user's policy networks against the policy kind and the env's sizes (ConfigError, one line)."""
    d, obs_dim = spec.action_dim, spec.obs_dim
    if kind == "separate":
        if networks.policy is not None:
            raise ConfigError(f"networks.policy is the single network of PPO / PG / PG-pos; mode {config.mode} "
                              "trains two: give networks.mean and networks.logvar")
        wanted = {"mean": ("mean", f"{d} raw action means, one per action dimension of {spec.name}"),
                  "logvar": ("logvar", f"{d} raw log-variances, one per action dimension of {spec.name}")}
    else:
        given = [n for n in ("mean", "logvar") if getattr(networks, n) is not None]
        if given:
            raise ConfigError(f"networks.{given[0]} is one of PPO-CMA's two policy networks; mode {config.mode} "
                              "trains one: give networks.policy")
        if kind == "joint":
            wanted = {"policy": ("joint", f"{d} raw means then {d} raw log-variances for {spec.name}")}
        else:
            wanted = {"policy": ("logits", f"one logit per discrete action of {spec.name}")}
    custom = []
    for field_name, (key, expected) in wanted.items():
        obj = getattr(networks, field_name)
        if obj is None:
            continue
        out_dim = 2 * d if key == "joint" else d
        custom.append((key, custom_network(obj, field_name, obs_dim, out_dim, expected)))
    if custom and not spec.discrete and config.policy_init == "analytic":
        raise ConfigError("policy_init='analytic' sets the built-in MLP's output layer; custom policy networks "
                          "start from the original's pre-training: use policy_init='pretrain'")
    return tuple(custom)
