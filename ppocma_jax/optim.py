"""Adam with the learning rate as a dynamic input, so it can live in the HParams pytree and be vmapped.

The original uses one Adam instance (own moments and step counter) per network and loss, persisting across
iterations, with TF1 defaults b1=0.9, b2=0.999, eps=1e-8 (algorithm.md §3.7).

Where this differs from the original's TF1 Adam: epsilon's placement. optax (here) computes
  param -= lr * m_hat / (sqrt(v_hat) + eps),   m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t);
TF1's ApplyAdam computes
  param -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps),
i.e. epsilon is added to the square root of the UNcorrected second moment, which equals optax with
eps_t = eps / sqrt(1 - b2^t). The moments m, v and the step count are the same in both. The difference only shows
where sqrt(v_hat) is comparable to eps (near-zero gradients, the first steps); after one PPO-CMA update of the
original's own networks it moves the parameters by about 1e-5 to 2e-4 (measured against the authors' code on the
golden reference of the team's shared data). We keep optax's placement.
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
