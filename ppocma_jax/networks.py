"""Multilayer perceptrons as pure functions on a params pytree, as the original PPO-CMA built them (algorithm.md §2.1).

Why not flax.linen: the original's two init steps (unit-norm weight rows, then a data-dependent bias init that
walks the layers on a batch) and its dense skips are each a few lines on an explicit list of layers, and the
params stay a plain pytree that vmaps, checkpoints and is easy to inspect.

Params: a list of layers, each {"w": [fan_in, units], "b": [units]}; the last layer is linear.
With dense skips each hidden layer outputs concat(input, activation(input @ w + b)), so layer widths grow.

`Networks` / `CustomNetwork`: any flax.linen Module (or init / apply pair) in place of an MLP, behind the same
interface, so the rest of the trainer does not know which it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp

from .config import ConfigError

MLPParams = list[dict[str, jax.Array]]

# Full float32 matmuls: TPUs default to bf16 passes, and PPO ratios with the paper's tiny epsilon (0.0025) would
# drown in that rounding. On CPU this changes nothing.
_PRECISION = jax.lax.Precision.HIGHEST


def _dense(h: jax.Array, layer: dict[str, jax.Array]) -> jax.Array:
    return jnp.matmul(h, layer["w"], precision=_PRECISION) + layer["b"]


def activation_fn(name: str):
    """The original's activations; its lrelu has negative slope 0.1."""
    return {
        "lrelu": lambda x: jax.nn.leaky_relu(x, negative_slope=0.1),
        "relu": jax.nn.relu,
        "tanh": jnp.tanh,
        "selu": jax.nn.selu,
        "swish": jax.nn.swish,
    }[name]


@dataclass(frozen=True)
class MLP:
    """Static description of an MLP; `init`, `apply` and `bias_init` are pure functions of its params."""

    in_dim: int
    out_dim: int
    hidden_layers: int = 2
    hidden_units: int = 128
    activation: str = "lrelu"
    dense_skips: bool = True
    init_scheme: str = "unit_norm"

    def layer_dims(self) -> list[tuple[int, int]]:
        dims, width = [], self.in_dim
        for _ in range(self.hidden_layers):
            dims.append((width, self.hidden_units))
            width = width + self.hidden_units if self.dense_skips else self.hidden_units
        dims.append((width, self.out_dim))
        return dims

    def init(self, key: jax.Array) -> MLPParams:
        """Weights by `init_scheme`, biases zero (algorithm.md §2.1).

        unit_norm: each output unit's incoming weight vector is N(0, I) scaled to unit L2 norm (the original).
        glorot: Glorot-uniform (Keras' default; for the Keras CartPole baseline).
        """
        params = []
        for key_l, (fan_in, units) in zip(jax.random.split(key, len(self.layer_dims())), self.layer_dims()):
            if self.init_scheme == "unit_norm":
                w = jax.random.normal(key_l, (fan_in, units), jnp.float32)
                w = w / jnp.linalg.norm(w, axis=0, keepdims=True)
            else:
                limit = jnp.sqrt(6.0 / (fan_in + units))
                w = jax.random.uniform(key_l, (fan_in, units), jnp.float32, -limit, limit)
            params.append({"w": w, "b": jnp.zeros((units,), jnp.float32)})
        return params

    def layer_inputs(self, params: MLPParams, x: jax.Array) -> tuple[list[jax.Array], jax.Array]:
        """Inputs of every layer, and the output. x: [..., in_dim]."""
        act = activation_fn(self.activation)
        inputs, h = [], x
        for layer in params[:-1]:
            inputs.append(h)
            z = act(_dense(h, layer))
            h = jnp.concatenate([h, z], axis=-1) if self.dense_skips else z
        inputs.append(h)
        return inputs, _dense(h, params[-1])

    def apply(self, params: MLPParams, x: jax.Array) -> jax.Array:
        """Forward pass. x: [..., in_dim] -> [..., out_dim]."""
        return self.layer_inputs(params, x)[1]

    def bias_init(self, params: MLPParams, x: jax.Array) -> MLPParams:
        """Data-dependent bias init (algorithm.md §2.1): layer by layer, set b = -mean_batch(input) @ w, so the batch-mean
        input maps to zero pre-activation; the output layer included. x: [B, in_dim]."""
        new_params = []
        h = x
        act = activation_fn(self.activation)
        for i, layer in enumerate(params):
            b = -jnp.matmul(jnp.mean(h, axis=0), layer["w"], precision=_PRECISION)
            new_params.append({"w": layer["w"], "b": b})
            if i < len(params) - 1:
                z = act(_dense(h, {"w": layer["w"], "b": b}))
                h = jnp.concatenate([h, z], axis=-1) if self.dense_skips else z
        return new_params


# ---------------------------------------------------------------- your own networks
@dataclass(frozen=True, eq=False)  # eq=False: hashed by identity (a user's module need not be hashable)
class CustomNetwork:
    """A user's network behind the MLP interface (`init`, `apply`, `bias_init`), so the policy's soft clips and
    pre-training, the critic's regression and the separate Adam states apply to it unchanged.

    `init_fn(key, x [1, in_dim]) -> params` and `apply_fn(params, x [..., in_dim]) -> [..., out_dim]`: a
    flax.linen Module's own `init` / `apply`, or a pair of functions with those signatures. The data-dependent
    bias init of the built-in MLP (algorithm.md §2.1) is the MLP's own: a custom network keeps its init."""

    name: str
    in_dim: int
    out_dim: int
    init_fn: Callable[[jax.Array, jax.Array], Any]
    apply_fn: Callable[[Any, jax.Array], jax.Array]
    source: Any = None  # the object the user gave (for error messages and exports)

    def init(self, key: jax.Array) -> Any:
        return self.init_fn(key, jnp.zeros((1, self.in_dim), jnp.float32))

    def apply(self, params: Any, x: jax.Array) -> jax.Array:
        return self.apply_fn(params, x)

    def bias_init(self, params: Any, x: jax.Array) -> Any:
        return params


@dataclass(frozen=True, eq=False)
class Networks:
    """Networks to train instead of the built-in MLPs; None keeps the built-in MLP (the original's).

    Each is a flax.linen Module (any object with `init(key, x)` and `apply(params, x)`) or an `(init, apply)` pair
    of functions with those signatures. Inputs are the scaled observations [..., obs_dim] (the critic's get one
    more feature, the time index: [..., obs_dim + 1]); outputs are raw, before our soft clips:

    - mean, logvar: PPO-CMA(-m)'s two policy networks, [..., action_dim] each;
    - policy: the one policy network of PPO / PG / PG-pos: [..., 2 x action_dim] (raw mean, then raw
      log-variance) for continuous actions, [..., n_actions] logits for discrete ones;
    - critic: the value network, [..., 1].
    """

    mean: Any = None
    logvar: Any = None
    policy: Any = None
    critic: Any = None

    def given(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ("mean", "logvar", "policy", "critic")
                if getattr(self, name) is not None}


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def custom_network(obj: Any, name: str, in_dim: int, out_dim: int, expected: str) -> CustomNetwork:
    """Wrap and check a user's network: it must initialise on a [1, in_dim] input and map it to [1, out_dim].

    `expected` says what the output holds (for the error). Raises ValueError (the caller's ConfigError) in one line."""
    if isinstance(obj, tuple) and len(obj) == 2 and all(callable(f) for f in obj):
        init_fn, apply_fn = obj
    elif callable(getattr(obj, "init", None)) and callable(getattr(obj, "apply", None)):
        init_fn, apply_fn = obj.init, obj.apply
    else:
        raise ConfigError(f"networks.{name} must be a flax.linen Module or an (init, apply) pair of functions, "
                          f"got {type(obj).__name__}")
    x = jax.ShapeDtypeStruct((1, in_dim), jnp.float32)
    try:
        params = jax.eval_shape(init_fn, jax.random.PRNGKey(0), x)
        out = jax.eval_shape(apply_fn, params, x)
    except Exception as err:  # noqa: BLE001 - the user's code: any failure becomes one line
        raise ConfigError(f"networks.{name} fails on a [1, {in_dim}] input: {_first_line(err)}") from None
    shape = getattr(out, "shape", None)
    if shape != (1, out_dim):
        got = f"shape {list(shape)}" if shape is not None else type(out).__name__
        raise ConfigError(f"networks.{name} maps a [1, {in_dim}] input to {got}; expected [1, {out_dim}] "
                          f"({expected})")
    if not all(jnp.issubdtype(leaf.dtype, jnp.floating) for leaf in jax.tree.leaves(params)):
        raise ConfigError(f"networks.{name} has non-float parameters; every parameter must be a float array")
    return CustomNetwork(name, in_dim, out_dim, init_fn, apply_fn, obj)
