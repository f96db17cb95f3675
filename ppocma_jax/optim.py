"""The update's optimiser (algorithm.md §3.7): an optax chain of optional global-norm gradient clipping, Adam, and the
learning rate, which is an argument of every step (a traced HParams value, so a sweep over it is a vmap).

The original uses one Adam instance (own moments and step counter) per network and loss, persisting across
iterations, with TF1 defaults b1=0.9, b2=0.999, eps=1e-8, and no clipping or schedule (the defaults here).

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

A network's persistent optimiser state is Adam's (`optax.ScaleByAdamState`) alone: the chain's other links hold no
state, so the layout of checkpoints and of the golden reference's Adam moments does not depend on the knobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

_B1, _B2, _EPS = 0.9, 0.999, 1e-8
_ADAM = optax.scale_by_adam(b1=_B1, b2=_B2, eps=_EPS)


def scale_by_adam(epsilon: str = "optax") -> optax.GradientTransformation:
    """Adam's direction m_hat / (sqrt(v_hat) + eps) (optax's epsilon placement) or, with epsilon="tf1", TF1's
    sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps) from the same moments and counter (see the module docstring)."""

    def update(grads: Any, state: optax.ScaleByAdamState, params: Any = None) -> tuple[Any, optax.ScaleByAdamState]:
        direction, state = _ADAM.update(grads, state, params)
        if epsilon == "tf1":
            t = state.count.astype(jnp.float32)  # the step just taken: 1, 2, ...
            alpha = jnp.sqrt(1.0 - _B2 ** t) / (1.0 - _B1 ** t)
            direction = jax.tree.map(lambda m, v: alpha * m / (jnp.sqrt(v) + _EPS), state.mu, state.nu)
        return direction, state

    return optax.GradientTransformation(_ADAM.init, update)


def scale_by_learning_rate() -> optax.GradientTransformationExtraArgs:
    """updates -> -learning_rate x updates, with `learning_rate` given to every `update` call (a scalar array:
    traced, so one compiled program serves every rate and a vmap over rates)."""

    def update(updates: Any, state: optax.EmptyState, params: Any = None, *, learning_rate: jax.Array,
               **extra_args: Any) -> tuple[Any, optax.EmptyState]:
        return jax.tree.map(lambda u: -learning_rate * u, updates), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


@dataclass(frozen=True)
class Optimizer:
    """clip_by_global_norm(max_grad_norm) (0: no clipping) -> Adam -> -learning_rate, one step at a time.

    `init` and `step` take and return the network's Adam state only (see the module docstring)."""

    adam_epsilon: str = "optax"
    max_grad_norm: float = 0.0

    @property
    def chain(self) -> optax.GradientTransformationExtraArgs:
        clip = [optax.clip_by_global_norm(self.max_grad_norm)] if self.max_grad_norm > 0 else []
        return optax.chain(*clip, scale_by_adam(self.adam_epsilon), scale_by_learning_rate())

    def init(self, params: Any) -> optax.ScaleByAdamState:
        return _ADAM.init(params)

    def step(self, params: Any, grads: Any, state: optax.ScaleByAdamState, learning_rate: jax.Array
             ) -> tuple[Any, optax.ScaleByAdamState]:
        """One step: params + chain(grads) with the given learning rate; returns (params, Adam state)."""
        adam_at = 1 if self.max_grad_norm > 0 else 0
        links = adam_at + 2
        chain_state = tuple(state if k == adam_at else optax.EmptyState() for k in range(links))
        updates, chain_state = self.chain.update(grads, chain_state, params, learning_rate=learning_rate)
        return optax.apply_updates(params, updates), chain_state[adam_at]


def learning_rate_scale(schedule: str, iteration: jax.Array, n_iterations: int) -> jax.Array:
    """The schedule's factor on both learning rates in iteration `iteration` (0-based, int32 scalar, traced):
    constant 1, or linear annealing 1 - iteration / n_iterations (1 in the first iteration, 1 / n_iterations in the
    last, 0 once the run's iterations are done)."""
    if schedule == "constant":
        return jnp.ones((), jnp.float32)
    return jnp.maximum(1.0 - iteration.astype(jnp.float32) / n_iterations, 0.0)


def adam_init(params: Any) -> optax.ScaleByAdamState:
    return Optimizer().init(params)


def adam_step(params: Any, grads: Any, opt_state: optax.ScaleByAdamState, learning_rate: jax.Array,
              epsilon: str = "optax") -> tuple[Any, optax.ScaleByAdamState]:
    """One plain Adam step (no clipping): params - learning_rate * adam_direction(grads). The policy's
    pre-training (policy.py) uses it."""
    return Optimizer(adam_epsilon=epsilon).step(params, grads, opt_state, learning_rate)
