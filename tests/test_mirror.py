"""Tests for ``ppocma_jax.losses.mirror_targets`` (PPO-CMA negative-advantage mirroring).

Spec:
    A_i >= 0: target_i = a_i,               weight_i = A_i
    A_i <  0: target_i = 2 * mean_old_i - a_i  (no clipping to action bounds),
              weight_i = |A_i| * mean_j exp(-(a_ij - m_ij)^2 / (2 * k^2 * s_ij^2))
    (kernel = AVERAGE over action dims of per-dim Gaussian bumps, not a product)

The reference is a plain python loop over samples and dimensions using math.exp.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppocma_jax.losses import mirror_targets

RTOL = 1e-5
ATOL = 1e-6


# --------------------------------------------------------------------------
# independent reference
# --------------------------------------------------------------------------
def mirror_reference(actions, mean_old, std, advantages, kernel_scale=1.0):
    actions = np.asarray(actions, dtype=np.float64)
    mean_old = np.asarray(mean_old, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    advantages = np.asarray(advantages, dtype=np.float64)
    B, d = actions.shape
    targets = np.zeros((B, d))
    weights = np.zeros(B)
    for i in range(B):
        adv = float(advantages[i])
        if adv >= 0.0:
            for j in range(d):
                targets[i, j] = actions[i, j]
            weights[i] = adv
        else:
            bump_sum = 0.0
            for j in range(d):
                a = float(actions[i, j])
                m = float(mean_old[i, j])
                s = float(std[i, j])
                targets[i, j] = m + (m - a)  # reflect through the old mean
                bump_sum += math.exp(-((a - m) ** 2) / (2.0 * kernel_scale**2 * s**2))
            weights[i] = -adv * (bump_sum / d)
    return targets, weights


def _random_batch(seed, B=64, d=3, mean_scale=1.0):
    rng = np.random.default_rng(seed)
    mean_old = (mean_scale * rng.normal(size=(B, d))).astype(np.float32)
    std = rng.uniform(0.2, 1.5, size=(B, d)).astype(np.float32)
    actions = (mean_old + std * rng.normal(size=(B, d)) * 1.5).astype(np.float32)
    advantages = rng.normal(size=(B,)).astype(np.float32)
    advantages[0] = 0.0  # zero advantage: kept, weight 0
    advantages[1] = -2.0
    advantages[2] = 1.5
    return actions, mean_old, std, advantages


# --------------------------------------------------------------------------
# hand-computed example: B = 3, d = 2
# --------------------------------------------------------------------------
MEAN = np.array([[0.0, 1.0]] * 3, dtype=np.float32)
STD = np.array([[1.0, 2.0]] * 3, dtype=np.float32)
ACT = np.array([[1.0, 1.0],    # A = +2  -> kept
                [1.0, 5.0],    # A = -3  -> mirrored
                [2.0, -1.0]],  # A =  0  -> kept (A >= 0), weight 0
               dtype=np.float32)
ADV = np.array([2.0, -3.0, 0.0], dtype=np.float32)


def test_hand_example_kernel_scale_1():
    # sample 0: A = 2 >= 0 -> target (1, 1), weight 2
    # sample 1: A = -3 < 0 -> target 2*(0, 1) - (1, 5) = (-1, -3)   (outside [-1, 1]: not clipped)
    #   dim 0: (1 - 0)^2 / (2 * 1 * 1^2) = 1/2  -> exp(-0.5)
    #   dim 1: (5 - 1)^2 / (2 * 1 * 2^2) = 16/8 = 2 -> exp(-2)
    #   kernel = (exp(-0.5) + exp(-2)) / 2   (average, NOT exp(-2.5))
    #   weight = 3 * (exp(-0.5) + exp(-2)) / 2 ~= 1.1128
    # sample 2: A = 0 -> target (2, -1), weight 0
    tgt, w = mirror_targets(ACT, MEAN, STD, ADV)
    expected_tgt = [[1.0, 1.0], [-1.0, -3.0], [2.0, -1.0]]
    expected_w = [2.0, 3.0 * (math.exp(-0.5) + math.exp(-2.0)) / 2.0, 0.0]
    np.testing.assert_allclose(np.asarray(tgt), expected_tgt, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(np.asarray(w), expected_w, rtol=RTOL, atol=ATOL)
    assert tgt.shape == (3, 2) and w.shape == (3,)


def test_hand_example_kernel_scale_2_jax_inputs():
    # kernel_scale = 2 -> denominators get an extra factor 2^2 = 4
    #   dim 0: 1 / (2 * 4 * 1)  = 1/8  -> exp(-0.125)
    #   dim 1: 16 / (2 * 4 * 4) = 1/2  -> exp(-0.5)
    #   weight = 3 * (exp(-0.125) + exp(-0.5)) / 2 ~= 2.2335
    # targets and the non-negative samples are unchanged.
    tgt, w = mirror_targets(jnp.asarray(ACT), jnp.asarray(MEAN), jnp.asarray(STD),
                            jnp.asarray(ADV), kernel_scale=2.0)
    expected_tgt = [[1.0, 1.0], [-1.0, -3.0], [2.0, -1.0]]
    expected_w = [2.0, 3.0 * (math.exp(-0.125) + math.exp(-0.5)) / 2.0, 0.0]
    np.testing.assert_allclose(np.asarray(tgt), expected_tgt, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(np.asarray(w), expected_w, rtol=RTOL, atol=ATOL)


def test_no_clipping_of_mirrored_actions():
    # mean 0.9, action -5 -> mirrored 2*0.9 + 5 = 6.8, far outside any [-1, 1] box
    # mean -0.9, action 3 -> mirrored -1.8 - 3 = -4.8
    mean = np.array([[0.9, -0.9]] * 3, dtype=np.float32)
    std = np.array([[0.5, 0.5]] * 3, dtype=np.float32)
    act = np.array([[-5.0, 3.0], [10.0, -10.0], [0.0, 0.0]], dtype=np.float32)
    adv = np.array([-1.0, -0.5, -2.0], dtype=np.float32)
    tgt, w = mirror_targets(act, mean, std, adv)
    np.testing.assert_allclose(np.asarray(tgt), [[6.8, -4.8], [-8.2, 8.2], [1.8, -1.8]],
                               rtol=RTOL, atol=1e-5)
    assert np.all(np.isfinite(np.asarray(w)))


# --------------------------------------------------------------------------
# random data vs the loop reference
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kernel_scale", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("d", [1, 3])
def test_random_matches_reference_numpy_inputs(kernel_scale, d):
    act, mean, std, adv = _random_batch(10 + d, B=64, d=d)
    tgt, w = mirror_targets(act, mean, std, adv, kernel_scale=kernel_scale)
    ref_tgt, ref_w = mirror_reference(act, mean, std, adv, kernel_scale)
    assert tgt.shape == act.shape and w.shape == adv.shape
    np.testing.assert_allclose(np.asarray(tgt), ref_tgt, rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(np.asarray(w), ref_w, rtol=RTOL, atol=ATOL)


def test_random_matches_reference_jax_inputs():
    act, mean, std, adv = _random_batch(20, B=64, d=3, mean_scale=2.0)
    tgt, w = mirror_targets(jnp.asarray(act), jnp.asarray(mean), jnp.asarray(std),
                            jnp.asarray(adv))
    ref_tgt, ref_w = mirror_reference(act, mean, std, adv)
    np.testing.assert_allclose(np.asarray(tgt), ref_tgt, rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(np.asarray(w), ref_w, rtol=RTOL, atol=ATOL)
    assert tgt.dtype == jnp.float32 and w.dtype == jnp.float32


# --------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------
def test_kernel_scale_only_affects_negative_weights():
    act, mean, std, adv = _random_batch(30, B=64, d=3)
    neg = adv < 0
    pos = ~neg
    assert neg.sum() > 5 and pos.sum() > 5
    scales = [0.25, 0.5, 1.0, 2.0, 8.0]
    outs = [mirror_targets(act, mean, std, adv, kernel_scale=k) for k in scales]
    tgt0 = np.asarray(outs[0][0])
    w_prev = None
    for (tgt, w) in outs:
        tgt = np.asarray(tgt)
        w = np.asarray(w)
        # targets never depend on kernel_scale
        np.testing.assert_array_equal(tgt, tgt0)
        # non-negative samples: weight is exactly A
        np.testing.assert_allclose(w[pos], adv[pos], rtol=RTOL, atol=ATOL)
        if w_prev is not None:
            # larger kernel_scale -> wider bumps -> larger (closer to |A|) weights
            assert np.all(w[neg] >= w_prev[neg] - 1e-6)
            assert np.all(w[neg] > w_prev[neg])  # actions are a.s. != mean
        w_prev = w
    # very wide kernel -> weight ~ |A|
    _, w_wide = mirror_targets(act, mean, std, adv, kernel_scale=1e3)
    np.testing.assert_allclose(np.asarray(w_wide)[neg], np.abs(adv[neg]), rtol=1e-4, atol=1e-5)
    # very narrow kernel -> weight ~ 0 for actions not at the mean
    _, w_narrow = mirror_targets(act, mean, std, adv, kernel_scale=1e-3)
    np.testing.assert_allclose(np.asarray(w_narrow)[neg], 0.0, atol=1e-5)


def test_weight_bounds():
    act, mean, std, adv = _random_batch(40, B=64, d=3, mean_scale=3.0)
    adv = 5.0 * adv
    _, w = mirror_targets(jnp.asarray(act), jnp.asarray(mean), jnp.asarray(std),
                          jnp.asarray(adv))
    w = np.asarray(w)
    neg = adv < 0
    assert np.all(w >= 0.0)
    assert np.all(w[neg] <= np.abs(adv[neg]) * (1 + 1e-6))
    assert neg.sum() > 10 and np.all(w[neg] > 0.0)


def test_action_at_mean_gives_full_weight():
    # a == mean_old -> every bump is exp(0) = 1 -> weight = |A|, and the mirror is a itself
    mean = np.array([[0.3, -0.7], [1.1, 0.0], [-2.0, 5.0]], dtype=np.float32)
    std = np.array([[0.5, 1.0], [2.0, 0.1], [1.0, 1.0]], dtype=np.float32)
    adv = np.array([-4.0, -0.25, -1.0], np.float32)
    tgt, w = mirror_targets(mean.copy(), mean, std, adv)
    np.testing.assert_allclose(np.asarray(w), [4.0, 0.25, 1.0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(np.asarray(tgt), mean, rtol=RTOL, atol=1e-6)


def test_d1_kernel_is_single_gaussian_bump():
    rng = np.random.default_rng(50)
    B = 64
    m = rng.normal(size=(B, 1)).astype(np.float32)
    s = rng.uniform(0.3, 2.0, size=(B, 1)).astype(np.float32)
    a = (m + 2.0 * s * rng.normal(size=(B, 1))).astype(np.float32)
    adv = -np.abs(rng.normal(size=(B,))).astype(np.float32) - 0.1  # all negative
    for k in (0.7, 1.0, 1.8):
        _, w = mirror_targets(a, m, s, adv, kernel_scale=k)
        kernel = np.asarray(w) / np.abs(adv)
        for i in range(B):
            ai, mi, si = float(a[i, 0]), float(m[i, 0]), float(s[i, 0])
            expected = math.exp(-((ai - mi) ** 2) / (2.0 * k * k * si * si))
            assert math.isclose(float(kernel[i]), expected, rel_tol=1e-4, abs_tol=1e-6), (k, i)


def test_kernel_is_average_not_product():
    # d = 2, mean 0, std 1, A = -1:
    # sample 0: both dims at 1 std: average = exp(-0.5), product would be exp(-1)
    # sample 1: one dim at the mean, one at 10 std: average = (1 + exp(-50)) / 2 ~ 0.5,
    #           product would be ~ 0
    # sample 2: dims at 0 and 2 std: average = (1 + exp(-2)) / 2
    mean = np.zeros((3, 2), np.float32)
    std = np.ones((3, 2), np.float32)
    act = np.array([[1.0, -1.0], [0.0, 10.0], [0.0, 2.0]], np.float32)
    adv = np.array([-1.0, -1.0, -1.0], np.float32)
    _, w = mirror_targets(act, mean, std, adv)
    np.testing.assert_allclose(np.asarray(w),
                               [math.exp(-0.5), (1.0 + math.exp(-50.0)) / 2.0,
                                (1.0 + math.exp(-2.0)) / 2.0],
                               rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------
# jit
# --------------------------------------------------------------------------
def test_jit_matches_eager_and_reference():
    act, mean, std, adv = _random_batch(60, B=64, d=3)
    eager = mirror_targets(act, mean, std, adv)
    jitted = jax.jit(mirror_targets)(jnp.asarray(act), jnp.asarray(mean),
                                     jnp.asarray(std), jnp.asarray(adv))
    ref_tgt, ref_w = mirror_reference(act, mean, std, adv)
    for got, e, ref in zip(jitted, eager, (ref_tgt, ref_w)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(e), rtol=RTOL, atol=1e-6)
        np.testing.assert_allclose(np.asarray(got), ref, rtol=RTOL, atol=1e-5)

    f = jax.jit(functools.partial(mirror_targets, kernel_scale=1.7))
    tgt_k, w_k = f(jnp.asarray(act), jnp.asarray(mean), jnp.asarray(std), jnp.asarray(adv))
    ref_tgt_k, ref_w_k = mirror_reference(act, mean, std, adv, 1.7)
    np.testing.assert_allclose(np.asarray(tgt_k), ref_tgt_k, rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(np.asarray(w_k), ref_w_k, rtol=RTOL, atol=ATOL)


def test_reference_self_check():
    # Guard against a broken reference: hand example reproduced by the loop reference.
    ref_tgt, ref_w = mirror_reference(ACT, MEAN, STD, ADV)
    assert ref_tgt[1].tolist() == [-1.0, -3.0]
    assert math.isclose(ref_w[1], 1.5 * (math.exp(-0.5) + math.exp(-2.0)), rel_tol=1e-12)
    assert ref_w[0] == 2.0 and ref_w[2] == 0.0
