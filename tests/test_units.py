"""Unit tests of the algorithm pieces against independent references (numpy, hand-computed values)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppocma_jax import HParams
from ppocma_jax.history import history_init, history_push, history_sample
from ppocma_jax.losses import critic_loss, mean_loss, pg_loss, ppo_loss, variance_loss
from ppocma_jax.networks import MLP
from ppocma_jax.normalize import scaler_apply, scaler_init, scaler_update
from ppocma_jax.policy import Policy, gaussian_log_prob, softclip

HP = HParams().as_arrays()


def make_policy(kind, d=2, obs_dim=3, low=(-1.0, -2.0), high=(1.0, 0.0)):
    low, high = low[:d], high[:d]
    mean0 = tuple((lo + hi) / 2 for lo, hi in zip(low, high))
    std0 = tuple((hi - lo) / 2 for lo, hi in zip(low, high))
    return Policy(kind, obs_dim, d, low, high, mean0, std0, hidden_layers=2, hidden_units=16)


# ----------------------------------------------------------------------------- networks
def test_unit_norm_init_and_dense_skips_shapes():
    mlp = MLP(3, 2, hidden_layers=2, hidden_units=8, dense_skips=True)
    params = mlp.init(jax.random.PRNGKey(0))
    assert [p["w"].shape for p in params] == [(3, 8), (11, 8), (19, 2)]
    for layer in params:  # every output unit's incoming weights have unit norm; biases start at 0
        np.testing.assert_allclose(np.linalg.norm(np.asarray(layer["w"]), axis=0), 1.0, rtol=1e-5)
        assert np.all(np.asarray(layer["b"]) == 0)
    plain = MLP(3, 2, hidden_layers=2, hidden_units=8, dense_skips=False)
    assert [p["w"].shape for p in plain.init(jax.random.PRNGKey(0))] == [(3, 8), (8, 8), (8, 2)]


def test_dense_skip_forward_matches_numpy():
    mlp = MLP(3, 2, hidden_layers=2, hidden_units=4, dense_skips=True)
    params = mlp.init(jax.random.PRNGKey(1))
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    lrelu = lambda z: np.where(z > 0, z, 0.1 * z)
    h = x
    for layer in params[:-1]:
        h = np.concatenate([h, lrelu(h @ np.asarray(layer["w"]) + np.asarray(layer["b"]))], axis=1)
    expected = h @ np.asarray(params[-1]["w"]) + np.asarray(params[-1]["b"])
    np.testing.assert_allclose(np.asarray(mlp.apply(params, x)), expected, rtol=1e-4, atol=1e-5)


def test_data_dependent_bias_init_centres_every_layer():
    mlp = MLP(3, 2, hidden_layers=2, hidden_units=16, dense_skips=True)
    x = jax.random.normal(jax.random.PRNGKey(2), (256, 3)) * 3.0 + 5.0
    params = mlp.bias_init(mlp.init(jax.random.PRNGKey(3)), x)
    inputs, out = mlp.layer_inputs(params, x)
    for layer_in, layer in zip(inputs, params):  # batch-mean input maps to zero pre-activation
        np.testing.assert_allclose(np.asarray(jnp.mean(layer_in, 0) @ layer["w"] + layer["b"]), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.asarray(jnp.mean(out, 0)), 0.0, atol=1e-3)


# ----------------------------------------------------------------------------- policy
def test_softclip_bounds_for_extreme_inputs():
    x = jnp.array([-1e4, -10.0, 0.0, 10.0, 1e4])
    y = np.asarray(softclip(x, -2.0, 3.0))
    assert np.all(y >= -2.0) and np.all(y <= 3.0)
    assert y[2] == pytest.approx(0.5)
    assert np.all(np.diff(y) >= 0)


@pytest.mark.parametrize("kind", ["separate", "joint"])
def test_policy_outputs_stay_in_bounds(kind):
    policy = make_policy(kind)
    params = policy.init(jax.random.PRNGKey(0), HP, "analytic")
    x = jax.random.normal(jax.random.PRNGKey(1), (1000, 3)) * 1e3  # far outside anything seen
    mean, logvar = policy.gaussian(params, x, HP)
    # perturb the weights wildly: the soft clip must still bound everything
    wild = jax.tree.map(lambda p: p + 50.0 * jax.random.normal(jax.random.PRNGKey(4), p.shape), params)
    mean_w, logvar_w = policy.gaussian(wild, x, HP)
    low, high = np.array(policy.action_low), np.array(policy.action_high)
    for m, lv in ((mean, logvar), (mean_w, logvar_w)):
        m, lv = np.asarray(m), np.asarray(lv)
        assert np.all(m >= low - 1e-6) and np.all(m <= high + 1e-6)
        std = np.exp(0.5 * lv)
        assert np.all(std >= 0.01 * (1 - 1e-4)) and np.all(std <= (high - low) * (1 + 1e-4))
    actions, _ = policy.sample(jax.random.PRNGKey(5), wild, x, HP)
    assert np.all(np.asarray(actions) >= low) and np.all(np.asarray(actions) <= high)


@pytest.mark.parametrize("kind,policy_init", [("separate", "pretrain"), ("separate", "analytic"),
                                              ("joint", "pretrain")])
def test_initial_policy_is_centre_and_half_range(kind, policy_init):
    policy = make_policy(kind)
    params = policy.init(jax.random.PRNGKey(0), HP, policy_init, pretrain_steps=2000)
    x = jax.random.normal(jax.random.PRNGKey(9), (2000, 3))  # states like the pre-training's N(0, I)
    mean, logvar = policy.gaussian(params, x, HP)
    np.testing.assert_allclose(np.asarray(mean).mean(0), [0.0, -1.0], atol=0.03)
    np.testing.assert_allclose(np.exp(0.5 * np.asarray(logvar)).mean(0), [1.0, 1.0], rtol=0.05)
    assert np.asarray(mean).std(0).max() < 0.1  # about the same for every state


def test_gaussian_log_prob_matches_numpy():
    rng = np.random.default_rng(0)
    x, m, lv = (rng.normal(size=(4, 3)).astype(np.float32) for _ in range(3))
    expected = -np.sum((x - m) ** 2 / (2 * np.exp(lv)) + 0.5 * lv, axis=1)
    np.testing.assert_allclose(np.asarray(gaussian_log_prob(x, m, lv)), expected, rtol=1e-5)


# ----------------------------------------------------------------------------- losses: gradients reach only their net
def _grad_norms(loss_fn, params):
    grads = jax.grad(loss_fn)(params)
    return {name: float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(tree))) for name, tree in grads.items()}


def _batch(policy, key=0, b=32):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(key), 3)
    obs = jax.random.normal(k1, (b, policy.obs_dim))
    actions = policy.clip(jax.random.normal(k2, (b, policy.action_dim)))
    adv = jax.random.normal(k3, (b,))
    return obs, actions, adv


def test_variance_loss_trains_only_the_variance_net():
    policy = make_policy("separate")
    params = policy.init(jax.random.PRNGKey(0), HP, "analytic")
    params = jax.tree.map(lambda p: p + 0.1, params)  # non-degenerate output layers
    obs, actions, adv = _batch(policy)
    norms = _grad_norms(lambda p: variance_loss(p, obs, actions, adv, policy, HP), params)
    assert norms["mean"] == 0.0 and norms["logvar"] > 0.0


@pytest.mark.parametrize("mirror", [True, False])
def test_mean_loss_trains_only_the_mean_net(mirror):
    policy = make_policy("separate")
    params = jax.tree.map(lambda p: p + 0.1, policy.init(jax.random.PRNGKey(0), HP, "analytic"))
    obs, actions, adv = _batch(policy)
    mean_old = policy.mean(params, obs)
    norms = _grad_norms(lambda p: mean_loss(p, obs, actions, adv, mean_old, policy, HP, mirror), params)
    assert norms["logvar"] == 0.0 and norms["mean"] > 0.0


def test_precomputed_frozen_inputs_give_the_same_losses():
    """The trainer computes each pass's frozen quantities once per iteration: the losses must not change."""
    from ppocma_jax.losses import mean_loss_targets, mean_nll

    policy = make_policy("separate")
    params = policy.init(jax.random.PRNGKey(0), HP, "analytic")
    params = {k: jax.tree.map(lambda w: w + 0.1, v) for k, v in params.items()}  # non-trivial outputs
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    obs = jax.random.normal(keys[0], (32, 3))
    actions = jax.random.uniform(keys[1], (32, 2), minval=-1.0, maxval=0.0)
    adv = jax.random.normal(keys[2], (32,))
    mean_old = policy.mean(params, obs) + 0.05
    given = variance_loss(params, obs, actions, adv, policy, HP, policy.mean(params, obs))
    np.testing.assert_allclose(float(given), float(variance_loss(params, obs, actions, adv, policy, HP)), rtol=1e-6)
    targets, weights, logvar = mean_loss_targets(params, obs, actions, adv, mean_old, policy, HP, True)
    idx = jnp.arange(0, 32, 3)  # a minibatch of the precomputed constants = the loss on that minibatch
    np.testing.assert_allclose(
        float(mean_nll(params, obs[idx], targets[idx], weights[idx], logvar[idx], policy)),
        float(mean_loss(params, obs[idx], actions[idx], adv[idx], mean_old[idx], policy, HP, True)), rtol=1e-6)


def test_mean_loss_mirroring_uses_negative_samples_only_when_on():
    policy = make_policy("separate")
    params = jax.tree.map(lambda p: p + 0.1, policy.init(jax.random.PRNGKey(0), HP, "analytic"))
    obs, actions, _ = _batch(policy)
    adv = -jnp.ones((obs.shape[0],))  # all bad
    mean_old = policy.mean(params, obs)
    on = _grad_norms(lambda p: mean_loss(p, obs, actions, adv, mean_old, policy, HP, True), params)
    off = _grad_norms(lambda p: mean_loss(p, obs, actions, adv, mean_old, policy, HP, False), params)
    assert on["mean"] > 0.0 and off["mean"] == 0.0


def test_ppo_and_pg_losses_train_the_joint_net_and_ppo_clips():
    policy = make_policy("joint")
    params = jax.tree.map(lambda p: p + 0.1, policy.init(jax.random.PRNGKey(0), HP, "analytic"))
    obs, actions, adv = _batch(policy)
    logp_old = policy.log_prob(params, obs, actions, HP)
    loss, aux = ppo_loss(params, obs, actions, adv, logp_old, policy, HP)
    # at the old policy the ratio is 1: surrogate = -mean(A), KL = 0
    assert float(loss) == pytest.approx(-float(jnp.mean(adv)), abs=1e-5)
    assert float(aux["approx_kl"]) == pytest.approx(0.0, abs=1e-6)
    assert _grad_norms(lambda p: ppo_loss(p, obs, actions, adv, logp_old, policy, HP)[0], params)["joint"] > 0
    assert _grad_norms(lambda p: pg_loss(p, obs, actions, adv, policy, HP), params)["joint"] > 0
    # far from the old policy with A > 0 and ratio > 1 + eps, the clipped term has zero gradient
    pos = jnp.abs(adv)
    shifted = logp_old - 5.0  # ratio = e^5 >> 1.2
    g = jax.grad(lambda p: ppo_loss(p, obs, actions, pos, shifted, policy, HP)[0])(params)
    assert float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(g))) == 0.0


def test_critic_loss_is_l1():
    mlp = MLP(2, 1, hidden_layers=1, hidden_units=4)
    params = mlp.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (10, 2))
    targets = jnp.arange(10.0)
    v = np.asarray(mlp.apply(params, x))[:, 0]
    assert float(critic_loss(params, mlp, x, targets)) == pytest.approx(np.mean(np.abs(v - np.arange(10.0))),
                                                                        rel=1e-5)


# ----------------------------------------------------------------------------- scaler
def test_scaler_matches_original_formula():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=1.0, scale=s, size=(50, 2)).astype(np.float32) for s in (0.1, 3.0, 1.0)]
    state = scaler_init(2)
    m2, scale = np.zeros(2), np.ones(2)
    for n, x in enumerate(batches, start=1):
        state = scaler_update(state, jnp.asarray(x))
        w = 1.0 / n  # every call weighs the same, whatever its size
        m2 = (1 - w) * m2 + w * np.mean(x ** 2, axis=0)
        scale = np.minimum(scale, 1.0 / (2 * np.sqrt(m2) + 1e-3))  # never grows, never above 1
        np.testing.assert_allclose(np.asarray(state.scale), scale, rtol=1e-5)
    assert int(state.count) == 3
    np.testing.assert_allclose(np.asarray(scaler_apply(state, jnp.ones(2))), scale, rtol=1e-5)
    # first batch is small-valued: scale stays 1 rather than amplifying (min with 1)
    tiny = scaler_update(scaler_init(1), jnp.full((4, 1), 0.01))
    assert float(tiny.scale[0]) == 1.0


def test_welford_matches_numpy_over_all_samples():
    rng = np.random.default_rng(1)
    # far from zero and of very different sizes: the case where a naive float32 sum of squares loses precision
    batches = [rng.normal(loc=1000.0, scale=s, size=(n, 2)).astype(np.float32)
               for s, n in ((0.5, 64), (2.0, 10), (1.0, 300))]
    state = scaler_init(2)
    for i, x in enumerate(batches, start=1):
        state = scaler_update(state, jnp.asarray(x), "welford")
        seen = np.concatenate(batches[:i]).astype(np.float64)
        np.testing.assert_allclose(np.asarray(state.offset), seen.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(state.scale), 1 / np.sqrt(seen.var(axis=0) + 1e-8), rtol=1e-3)
    assert int(state.count) == 3 and float(state.samples) == 374
    x = batches[-1][:5]
    np.testing.assert_allclose(np.asarray(scaler_apply(state, jnp.asarray(x))),
                               (x - np.asarray(state.offset)) * np.asarray(state.scale), rtol=1e-5)
    with pytest.raises(ValueError, match="welford"):
        scaler_update(state, jnp.asarray(x), "zscore")


# ----------------------------------------------------------------------------- history
def test_history_ring_buffer_keeps_last_h_and_samples_only_filled():
    h = history_init(size=3, n=4, obs_dim=1, action_dim=1)
    for it in range(5):
        h = history_push(h, jnp.full((4, 1), float(it)), jnp.full((4, 1), float(it)), jnp.full((4,), float(it)))
        obs, _, adv = history_sample(h, jax.random.PRNGKey(it), 2000)
        seen = set(np.unique(np.asarray(adv)).tolist())
        assert seen == set(float(i) for i in range(max(0, it - 2), it + 1))  # exactly the last min(it+1, 3)
        np.testing.assert_array_equal(np.asarray(obs)[:, 0], np.asarray(adv))
    assert int(h.filled) == 3



def test_deterministic_evaluation_is_repeatable_and_uses_the_mean_action():
    from ppocma_jax.envs import make_env
    from ppocma_jax.evaluation import evaluate_policy

    env = make_env("gymnax/Pendulum-v1")
    policy = Policy("joint", 3, 1, (-2.0,), (2.0,), (0.0,), (2.0,), hidden_layers=1, hidden_units=8)
    params = policy.init(jax.random.PRNGKey(0), HP, "analytic")
    run = jax.jit(evaluate_policy, static_argnums=(0, 1, 5, 6, 8))
    a = run(env, policy, params, scaler_init(3), jax.random.PRNGKey(1), 4, 200, HP, True)
    b = run(env, policy, params, scaler_init(3), jax.random.PRNGKey(1), 4, 200, HP, True)
    c = run(env, policy, params, scaler_init(3), jax.random.PRNGKey(1), 4, 200, HP, False)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))  # std 2 sampling changes the returns
    assert a.shape == (4,) and np.all(np.asarray(a) < 0)
