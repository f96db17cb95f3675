"""Tests for ``ppocma_jax.gae.compute_gae``.

The reference below is a deliberately plain python/numpy loop (float64,
scalar arithmetic per environment and time step) so that it shares no
vectorised structure with the implementation under test.

Conventions (time-major, ``[T, ...]``):
    values[t]      = V(s_t)
    next_values[t] = V(true successor of s_t)  (final obs if the episode ended)
    delta_t = r_t + gamma * (1 - terminated_t) * next_values[t] - values[t]
    A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1},
              done_t = terminated_t or truncated_t,  A_T = 0
    targets = advantages + values
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppocma_jax.gae import compute_gae

RTOL = 1e-5
ATOL = 1e-5


# --------------------------------------------------------------------------
# independent reference
# --------------------------------------------------------------------------
def _gae_ref_1d(rewards, values, next_values, terminated, truncated, gamma, lam):
    """Scalar python loop for a single environment. Returns python-float lists."""
    T = len(rewards)
    adv = [0.0] * T
    running = 0.0  # A_{t+1}; zero beyond the last step
    for t in range(T - 1, -1, -1):
        r = float(rewards[t])
        v = float(values[t])
        nv = float(next_values[t])
        term = bool(terminated[t])
        trunc = bool(truncated[t])
        if term:
            delta = r - v  # no bootstrap through a true termination
        else:
            delta = r + gamma * nv - v  # truncation / rollout cut still bootstrap
        if term or trunc:
            running = delta  # lambda chain is cut
        else:
            running = delta + gamma * lam * running
        adv[t] = running
    targets = [adv[t] + float(values[t]) for t in range(T)]
    return adv, targets


def gae_reference(rewards, values, next_values, terminated, truncated, gamma, lam):
    """Reference for [T] or [T, n_envs] inputs, computed env by env in float64."""
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    next_values = np.asarray(next_values, dtype=np.float64)
    terminated = np.asarray(terminated)
    truncated = np.asarray(truncated)
    gamma = float(gamma)
    lam = float(lam)
    if rewards.ndim == 1:
        a, tg = _gae_ref_1d(rewards, values, next_values, terminated, truncated, gamma, lam)
        return np.array(a), np.array(tg)
    T, n = rewards.shape
    adv = np.zeros((T, n))
    tgt = np.zeros((T, n))
    for e in range(n):
        a, tg = _gae_ref_1d(
            [rewards[t, e] for t in range(T)],
            [values[t, e] for t in range(T)],
            [next_values[t, e] for t in range(T)],
            [terminated[t, e] for t in range(T)],
            [truncated[t, e] for t in range(T)],
            gamma,
            lam,
        )
        for t in range(T):
            adv[t, e] = a[t]
            tgt[t, e] = tg[t]
    return adv, tgt


def _random_rollout(seed, shape, p_term=0.1, p_trunc=0.1):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=shape).astype(np.float32)
    values = rng.normal(size=shape).astype(np.float32)
    # next_values deliberately NOT equal to values shifted by one: the
    # function must use next_values[t] itself, never values[t + 1].
    next_values = rng.normal(size=shape).astype(np.float32)
    terminated = rng.random(size=shape) < p_term
    truncated = rng.random(size=shape) < p_trunc
    # Make sure every kind of step is present in the (first) env.
    idx = (slice(None),) + (0,) * (len(shape) - 1)
    col_term = terminated[idx]
    col_trunc = truncated[idx]
    col_term[3], col_trunc[3] = True, False    # pure termination
    col_term[7], col_trunc[7] = False, True    # pure truncation
    col_term[11], col_trunc[11] = True, True   # both flags at once
    col_term[-1], col_trunc[-1] = False, False  # rollout cut at the end
    terminated[idx] = col_term
    truncated[idx] = col_trunc
    return rewards, values, next_values, terminated, truncated


def _np(x):
    return np.asarray(x)


# --------------------------------------------------------------------------
# hand-computed tiny cases (T = 3, gamma = 0.5, lam = 0.5, gamma*lam = 0.25)
# --------------------------------------------------------------------------
R3 = np.array([1.0, 3.0, 3.0], dtype=np.float32)
V3 = np.array([1.0, 2.0, 4.0], dtype=np.float32)
# next_values[1] = 8 is the value of the final observation of the episode that
# ends at t=1; it differs from values[2] = 4 (the value of the reset state).
NV3 = np.array([2.0, 8.0, 6.0], dtype=np.float32)
NO = np.array([False, False, False])


def test_hand_truncation_in_middle():
    # truncated at t=1 (not terminated):
    # delta0 = 1 + 0.5*2 - 1 = 1
    # delta1 = 3 + 0.5*8 - 2 = 5     (truncation still bootstraps from next_values[1])
    # delta2 = 3 + 0.5*6 - 4 = 2     (last step bootstraps from next_values[-1])
    # A2 = 2                         (A_3 = 0)
    # A1 = 5 + 0.25*(1-1)*2 = 5      (truncation cuts the lambda chain)
    # A0 = 1 + 0.25*5 = 2.25
    # targets = A + V = [3.25, 7, 6]
    trunc = np.array([False, True, False])
    adv, tgt = compute_gae(R3, V3, NV3, NO, trunc, 0.5, 0.5)
    np.testing.assert_allclose(_np(adv), [2.25, 5.0, 2.0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_np(tgt), [3.25, 7.0, 6.0], rtol=RTOL, atol=ATOL)


def test_hand_termination_in_middle():
    # terminated at t=1:
    # delta0 = 1 + 0.5*2 - 1 = 1
    # delta1 = 3 + 0.5*0*8 - 2 = 1   (no bootstrap through a termination)
    # delta2 = 3 + 0.5*6 - 4 = 2
    # A2 = 2
    # A1 = 1 + 0.25*0*2 = 1          (termination cuts the chain too)
    # A0 = 1 + 0.25*1 = 1.25
    # targets = [2.25, 3, 6]
    term = np.array([False, True, False])
    adv, tgt = compute_gae(jnp.asarray(R3), jnp.asarray(V3), jnp.asarray(NV3),
                           jnp.asarray(term), jnp.asarray(NO), 0.5, 0.5)
    np.testing.assert_allclose(_np(adv), [1.25, 1.0, 2.0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_np(tgt), [2.25, 3.0, 6.0], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_successor_of_a_terminated_step_does_not_leak(bad):
    # The same numbers as test_hand_termination_in_middle, with the terminated step's successor value blown up:
    # it is never used, so every advantage stays what it was (a multiplication by 0 would give NaN everywhere).
    term = np.array([False, True, False])
    next_values = np.array(NV3, dtype=np.float32)
    next_values[1] = bad
    adv, tgt = compute_gae(jnp.asarray(R3), jnp.asarray(V3), jnp.asarray(next_values),
                           jnp.asarray(term), jnp.asarray(NO), 0.5, 0.5)
    np.testing.assert_allclose(_np(adv), [1.25, 1.0, 2.0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_np(tgt), [2.25, 3.0, 6.0], rtol=RTOL, atol=ATOL)


def test_hand_no_dones():
    # no dones at all:
    # delta = [1, 5, 2]              (same deltas as the truncation case)
    # A2 = 2
    # A1 = 5 + 0.25*2 = 5.5
    # A0 = 1 + 0.25*5.5 = 2.375
    # targets = [3.375, 7.5, 6]
    adv, tgt = compute_gae(R3, V3, NV3, NO, NO, 0.5, 0.5)
    np.testing.assert_allclose(_np(adv), [2.375, 5.5, 2.0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_np(tgt), [3.375, 7.5, 6.0], rtol=RTOL, atol=ATOL)


def test_hand_last_step_terminated():
    # terminated at the last step t=2:
    # delta2 = 3 - 4 = -1            (no bootstrap from next_values[-1] = 6)
    # A2 = -1
    # A1 = 5 + 0.25*(-1) = 4.75
    # A0 = 1 + 0.25*4.75 = 2.1875
    term = np.array([False, False, True])
    adv, tgt = compute_gae(R3, V3, NV3, term, NO, 0.5, 0.5)
    np.testing.assert_allclose(_np(adv), [2.1875, 4.75, -1.0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_np(tgt), [3.1875, 6.75, 3.0], rtol=RTOL, atol=ATOL)


def test_hand_lam_zero_is_delta():
    # lam = 0 -> A = delta = [1, 5, 2] (truncation at t=1 as above)
    trunc = np.array([False, True, False])
    adv, tgt = compute_gae(R3, V3, NV3, NO, trunc, 0.5, 0.0)
    np.testing.assert_allclose(_np(adv), [1.0, 5.0, 2.0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_np(tgt), [2.0, 7.0, 6.0], rtol=RTOL, atol=ATOL)


def test_hand_lam_one_gamma_one():
    # gamma = lam = 1, no dones, next_values consistent with values
    # (next_values[t] = values[t+1]) -> A_t = sum_{k>=t} r_k + next_values[-1] - values[t]
    # r = [1, 3, 3], V = [1, 2, 4], next_values = [2, 4, 6]
    # A0 = 7 + 6 - 1 = 12 ; A1 = 6 + 6 - 2 = 10 ; A2 = 3 + 6 - 4 = 5
    nv = np.array([2.0, 4.0, 6.0], dtype=np.float32)
    adv, tgt = compute_gae(R3, V3, nv, NO, NO, 1.0, 1.0)
    np.testing.assert_allclose(_np(adv), [12.0, 10.0, 5.0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_np(tgt), [13.0, 12.0, 9.0], rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------
# random data vs the loop reference
# --------------------------------------------------------------------------
@pytest.mark.parametrize("shape,gamma,lam", [
    ((40,), 0.99, 0.95),
    ((40, 5), 0.99, 0.95),
    ((40, 5), 0.9, 0.5),
    ((40,), 0.97, 1.0),
])
def test_random_matches_reference_numpy_inputs(shape, gamma, lam):
    r, v, nv, term, trunc = _random_rollout(0, shape)
    adv, tgt = compute_gae(r, v, nv, term, trunc, gamma, lam)
    ref_adv, ref_tgt = gae_reference(r, v, nv, term, trunc, gamma, lam)
    assert adv.shape == shape and tgt.shape == shape
    np.testing.assert_allclose(_np(adv), ref_adv, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_np(tgt), ref_tgt, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shape", [(40,), (40, 5)])
def test_random_matches_reference_jax_inputs(shape):
    r, v, nv, term, trunc = _random_rollout(1, shape, p_term=0.15, p_trunc=0.15)
    gamma, lam = 0.95, 0.9
    adv, tgt = compute_gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(nv),
                           jnp.asarray(term), jnp.asarray(trunc),
                           jnp.asarray(gamma, jnp.float32), jnp.asarray(lam, jnp.float32))
    ref_adv, ref_tgt = gae_reference(r, v, nv, term, trunc, gamma, lam)
    assert adv.shape == shape and tgt.shape == shape
    np.testing.assert_allclose(_np(adv), ref_adv, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_np(tgt), ref_tgt, rtol=RTOL, atol=ATOL)


def test_random_lam_zero_equals_delta():
    r, v, nv, term, trunc = _random_rollout(2, (40, 5))
    gamma = 0.9
    adv, tgt = compute_gae(r, v, nv, term, trunc, gamma, 0.0)
    delta = np.zeros((40, 5))
    for t in range(40):
        for e in range(5):
            boot = 0.0 if term[t, e] else gamma * float(nv[t, e])
            delta[t, e] = float(r[t, e]) + boot - float(v[t, e])
    np.testing.assert_allclose(_np(adv), delta, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_np(tgt), delta + v.astype(np.float64), rtol=RTOL, atol=ATOL)


def test_random_lam_one_gamma_one_no_dones_is_monte_carlo_plus_bootstrap():
    T, n = 40, 5
    rng = np.random.default_rng(3)
    r = rng.normal(size=(T, n)).astype(np.float32)
    v = rng.normal(size=(T, n)).astype(np.float32)
    last = rng.normal(size=(n,)).astype(np.float32)
    nv = np.concatenate([v[1:], last[None]], axis=0)  # consistent successor values
    no = np.zeros((T, n), dtype=bool)
    adv, tgt = compute_gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(nv),
                           jnp.asarray(no), jnp.asarray(no), 1.0, 1.0)
    expected = np.zeros((T, n))
    for e in range(n):
        for t in range(T):
            total = 0.0
            for k in range(t, T):
                total += float(r[k, e])
            expected[t, e] = total + float(nv[T - 1, e]) - float(v[t, e])
    np.testing.assert_allclose(_np(adv), expected, rtol=RTOL, atol=1e-4)
    np.testing.assert_allclose(_np(tgt), expected + v.astype(np.float64), rtol=RTOL, atol=1e-4)


# --------------------------------------------------------------------------
# dtype, jit, vmap
# --------------------------------------------------------------------------
def test_float32_output_dtype():
    r, v, nv, term, trunc = _random_rollout(4, (40, 5))
    adv, tgt = compute_gae(r, v, nv, term, trunc, 0.99, 0.95)
    assert adv.dtype == np.float32
    assert tgt.dtype == np.float32
    adv, tgt = compute_gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(nv),
                           jnp.asarray(term), jnp.asarray(trunc),
                           jnp.asarray(0.99, jnp.float32), jnp.asarray(0.95, jnp.float32))
    assert adv.dtype == jnp.float32
    assert tgt.dtype == jnp.float32


@pytest.mark.parametrize("shape", [(40,), (40, 5)])
def test_jit_matches_eager(shape):
    r, v, nv, term, trunc = _random_rollout(5, shape)
    eager_adv, eager_tgt = compute_gae(r, v, nv, term, trunc, 0.97, 0.9)
    jitted = jax.jit(compute_gae)
    jit_adv, jit_tgt = jitted(jnp.asarray(r), jnp.asarray(v), jnp.asarray(nv),
                              jnp.asarray(term), jnp.asarray(trunc),
                              jnp.asarray(0.97, jnp.float32), jnp.asarray(0.9, jnp.float32))
    np.testing.assert_allclose(_np(jit_adv), _np(eager_adv), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_np(jit_tgt), _np(eager_tgt), rtol=RTOL, atol=ATOL)
    ref_adv, ref_tgt = gae_reference(r, v, nv, term, trunc, 0.97, 0.9)
    np.testing.assert_allclose(_np(jit_adv), ref_adv, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_np(jit_tgt), ref_tgt, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shape", [(40,), (40, 5)])
def test_vmap_over_gamma_matches_eager(shape):
    r, v, nv, term, trunc = _random_rollout(6, shape)
    gammas = [0.0, 0.5, 0.9, 0.99, 1.0]
    lam = 0.8
    batched = jax.jit(jax.vmap(compute_gae, in_axes=(None, None, None, None, None, 0, None)))
    b_adv, b_tgt = batched(jnp.asarray(r), jnp.asarray(v), jnp.asarray(nv),
                           jnp.asarray(term), jnp.asarray(trunc),
                           jnp.asarray(gammas, jnp.float32), lam)
    assert b_adv.shape == (len(gammas),) + shape
    assert b_tgt.shape == (len(gammas),) + shape
    for i, g in enumerate(gammas):
        if g in (0.5, 0.99):  # eager comparison for a couple of gammas (keeps the test fast)
            e_adv, e_tgt = compute_gae(r, v, nv, term, trunc, g, lam)
            np.testing.assert_allclose(_np(b_adv[i]), _np(e_adv), rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(_np(b_tgt[i]), _np(e_tgt), rtol=RTOL, atol=ATOL)
        ref_adv, ref_tgt = gae_reference(r, v, nv, term, trunc, g, lam)
        np.testing.assert_allclose(_np(b_adv[i]), ref_adv, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(_np(b_tgt[i]), ref_tgt, rtol=RTOL, atol=ATOL)
    # different gammas must actually give different answers
    assert not np.allclose(_np(b_adv[1]), _np(b_adv[3]))


def test_reference_self_check():
    # Guard against a broken reference: gamma = 0 -> A_t = r_t - V_t whatever the flags.
    r, v, nv, term, trunc = _random_rollout(7, (40, 5))
    ref_adv, _ = gae_reference(r, v, nv, term, trunc, 0.0, 0.7)
    assert math.isclose(ref_adv[5, 1], float(r[5, 1]) - float(v[5, 1]), abs_tol=1e-12)
    np.testing.assert_allclose(ref_adv, r.astype(np.float64) - v.astype(np.float64), atol=1e-12)


def test_monte_carlo_returns_cut_at_every_episode_end():
    # rewards 1, 2, 3, 4; episode ends after t=1 (either kind); the rollout cut after t=3 bootstraps from 10.
    from ppocma_jax.gae import monte_carlo_returns

    rewards = jnp.asarray([1.0, 2.0, 3.0, 4.0])
    ends = jnp.asarray([False, True, False, False])
    g = monte_carlo_returns(rewards, ends, jnp.asarray(10.0), 0.5)
    # G3 = 4 + 0.5*10 = 9; G2 = 3 + 0.5*9 = 7.5; G1 = 2 (no bootstrap); G0 = 1 + 0.5*2 = 2
    np.testing.assert_allclose(_np(g), [2.0, 2.0, 7.5, 9.0], rtol=RTOL, atol=ATOL)
