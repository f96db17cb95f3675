"""The update's optimiser: clipping, Adam (both epsilon placements), learning-rate schedule, the rate as a vmapped
hyperparameter, and the knobs' validation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ppocma_jax import Config, ConfigError, HParams
from ppocma_jax.optim import Optimizer, learning_rate_scale

PARAMS = {"w": jnp.array([[0.5, -1.0], [2.0, 0.25]], jnp.float32), "b": jnp.array([0.1, -0.2], jnp.float32)}
GRADS = {"w": jnp.array([[3.0, -4.0], [1.0, 2.0]], jnp.float32), "b": jnp.array([-2.0, 0.5], jnp.float32)}  # norm 5.85


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_default_step_is_plain_adam_bit_for_bit():
    """No clipping, no schedule: params - lr * Adam direction, as the original (and this code before the chain)."""
    lr = jnp.float32(5e-4)
    state = Optimizer().init(PARAMS)
    for _ in range(3):
        want_dir, want_state = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8).update(GRADS, state)
        want = jax.tree.map(lambda p, u: p - lr * u, PARAMS, want_dir)
        got, state = jax.jit(Optimizer().step)(PARAMS, GRADS, state, lr)
        for a, b in zip(_leaves(got), _leaves(want)):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(_leaves(state), _leaves(want_state)):
            np.testing.assert_array_equal(a, b)


def test_tf1_epsilon_step():
    """TF1's ApplyAdam: lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps) from the same moments."""
    lr = 1e-3
    got, state = Optimizer(adam_epsilon="tf1").step(PARAMS, GRADS, Optimizer().init(PARAMS), jnp.float32(lr))
    alpha = np.sqrt(1 - 0.999) / (1 - 0.9)
    for p, g, new in zip(_leaves(PARAMS), _leaves(GRADS), _leaves(got)):
        m, v = 0.1 * g, 0.001 * g * g
        np.testing.assert_allclose(new, p - lr * alpha * m / (np.sqrt(v) + 1e-8), rtol=1e-6)


def test_clipping_clips_to_the_global_norm_before_adam():
    norm = float(optax.tree.norm(GRADS))
    assert norm > 1.0
    clipped, _ = optax.clip_by_global_norm(1.0).update(GRADS, optax.EmptyState())
    lr = jnp.float32(1e-3)
    got, state = Optimizer(max_grad_norm=1.0).step(PARAMS, GRADS, Optimizer().init(PARAMS), lr)
    want, want_state = Optimizer().step(PARAMS, clipped, Optimizer().init(PARAMS), lr)
    for a, b in zip(_leaves((got, state)), _leaves((want, want_state))):
        np.testing.assert_array_equal(a, b)
    # Adam's first moment holds (1 - b1) x the gradient it saw: the clipped one, of global norm 1
    np.testing.assert_allclose(float(optax.tree.norm(state.mu)) / 0.1, 1.0, rtol=1e-6)
    # a gradient inside the norm is left alone
    small = jax.tree.map(lambda g: g / (2 * norm), GRADS)
    for a, b in zip(_leaves(Optimizer(max_grad_norm=1.0).step(PARAMS, small, Optimizer().init(PARAMS), lr)),
                    _leaves(Optimizer().step(PARAMS, small, Optimizer().init(PARAMS), lr))):
        np.testing.assert_array_equal(a, b)


def test_linear_schedule_anneals_to_zero_at_the_end_of_the_run():
    n = 50
    scale = [float(learning_rate_scale("linear", jnp.int32(i), n)) for i in range(n + 2)]
    assert scale[0] == 1.0 and scale[n - 1] == pytest.approx(1 / n) and scale[n] == 0.0 and scale[n + 1] == 0.0
    assert all(a > b for a, b in zip(scale[:n], scale[1:n + 1]))
    assert float(learning_rate_scale("constant", jnp.int32(n - 1), n)) == 1.0


def test_learning_rate_is_vmapped_and_the_schedule_reaches_the_update():
    """One compiled iteration of three runs: equal settings give equal runs, another rate another run; at the
    schedule's end (factor 0) the same program leaves every network as it was."""
    from ppocma_jax.train import Trainer

    config = Config(env="gymnax/Pendulum-v1", mode="PPO", max_steps=1024, iter_steps=512, n_envs=8, n_updates=4,
                    batch_size=64, hidden_units=16, pretrain_steps=5, eval_every=0, lr_schedule="linear",
                    max_grad_norm=0.5)
    trainer = Trainer.build(config)
    hps = HParams.stack([HParams(learning_rate=1e-3), HParams(learning_rate=1e-3),
                         HParams(learning_rate=3e-3)]).as_arrays()
    states = jax.vmap(trainer.init_state)(jnp.stack([jax.random.PRNGKey(0)] * 3), hps)
    one_iteration = jax.jit(lambda st, h: trainer.run_batched(st, h, 1))
    nets = lambda s, r: _leaves(jax.tree.map(lambda x: x[r], (s.policy_params, s.critic_params)))

    after, metrics = one_iteration(states, hps)
    assert np.all(np.asarray(metrics["finite"]) == 1)
    for a, b in zip(nets(after, 0), nets(after, 1)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(nets(after, 0), nets(after, 2)))
    assert any(not np.array_equal(a, b) for a, b in zip(nets(after, 0), nets(states, 0)))

    at_end = states.replace(iteration=jnp.full((3,), config.n_iterations, jnp.int32))
    ended, metrics = one_iteration(at_end, hps)
    assert np.all(np.asarray(metrics["finite"]) == 1)
    for r in range(3):
        for a, b in zip(nets(ended, r), nets(at_end, r)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("changes,message", [
    (dict(max_grad_norm=-1.0), "max_grad_norm must be a finite number >= 0"),
    (dict(max_grad_norm=float("inf")), "max_grad_norm must be a finite number >= 0"),
    (dict(max_grad_norm="x"), "max_grad_norm must be a number >= 0"),
    (dict(lr_schedule="cosine"), "unknown lr_schedule 'cosine'; valid: constant, linear"),
])
def test_bad_optimiser_settings_are_one_line_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        Config(**changes).validate()
    assert Config(max_grad_norm="0.5").max_grad_norm == 0.5  # the CLI's text becomes the number
