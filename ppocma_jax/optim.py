"""Adam with the learning rate as a dynamic input, so it can live in the HParams pytree and be vmapped.

The original uses one Adam instance (own moments and step counter) per network and loss, persisting across
iterations, with TF1 defaults b1=0.9, b2=0.999, eps=1e-8 (algorithm.md §3.7).
"""

from __future__ import annotations

from typing import Any

import jax
import optax

_ADAM = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)


def adam_init(params: Any) -> optax.OptState:
    return _ADAM.init(params)


def adam_step(params: Any, grads: Any, opt_state: optax.OptState, learning_rate: jax.Array
              ) -> tuple[Any, optax.OptState]:
    """One Adam step: params - learning_rate * adam_direction(grads)."""
    direction, opt_state = _ADAM.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p - learning_rate * u, params, direction)
    return params, opt_state
