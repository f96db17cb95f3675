"""Multilayer perceptrons as pure functions on a params pytree, as the original PPO-CMA built them (algorithm.md §2.1).

Why not flax.linen: the original's two init steps (unit-norm weight rows, then a data-dependent bias init that
walks the layers on a batch) and its dense skips are each a few lines on an explicit list of layers, and the
params stay a plain pytree that vmaps, checkpoints and is easy to inspect.

Params: a list of layers, each {"w": [fan_in, units], "b": [units]}; the last layer is linear.
With dense skips each hidden layer outputs concat(input, activation(input @ w + b)), so layer widths grow.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

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
