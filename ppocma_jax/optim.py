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
golden reference in tests/data/golden). optax's placement is the default; `Config.adam_epsilon="tf1"` (the
`original` preset) gives TF1's.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

_B1, _B2, _EPS = 0.9, 0.999, 1e-8
_ADAM = optax.scale_by_adam(b1=_B1, b2=_B2, eps=_EPS)


def adam_init(params: Any) -> optax.OptState:
    return _ADAM.init(params)


def adam_step(params: Any, grads: Any, opt_state: optax.OptState, learning_rate: jax.Array,
              epsilon: str = "optax") -> tuple[Any, optax.OptState]:
    """One Adam step: params - learning_rate * adam_direction(grads).

    epsilon="tf1" gives TF1's ApplyAdam (see the module docstring): the same moments and counter, with the step
    lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)."""
    direction, opt_state = _ADAM.update(grads, opt_state, params)
    if epsilon == "tf1":
        t = opt_state.count.astype(jnp.float32)  # the step just taken: 1, 2, ...
        alpha = jnp.sqrt(1.0 - _B2 ** t) / (1.0 - _B1 ** t)
        direction = jax.tree.map(lambda m, v: alpha * m / (jnp.sqrt(v) + _EPS), opt_state.mu, opt_state.nu)
    params = jax.tree.map(lambda p, u: p - learning_rate * u, params, direction)
    return params, opt_state
