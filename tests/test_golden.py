"""One PPO-CMA-m update against the authors' TensorFlow-1 code, number for number.

tests/data/golden/ holds a reference computed by the original code (its README: the team's shared golden/README.md,
summarised in docs/algorithm.md §10): the learner state before the second update of a run (three networks, Adam
moments and counters, scaler, history), the iteration's batch of whole episodes, every minibatch index the original
drew, its intermediates and the state after the update, for a symmetric and an asymmetric 2-D action box. The test
loads the before-state into a TrainState, feeds the batch as a [T=45, n=1] rollout and the recorded indices through
`Trainer.learn` (the update `make_train` runs) in the original's semantics (`--preset original`'s value
estimation: Monte-Carlo critic targets, every episode end bootstrapped from time feature 0, TF1's Adam epsilon),
and compares with the recorded after-state within the reference's tolerances (max |diff|, float32).

Not replayed: the companion first update (`*_iter1.npz`). The original's first critic update spends its first
minibatch on the bias init and then takes U-1 steps; ours initialises on the whole first batch and takes U steps
(docs/algorithm.md §10 D4), so our critic's Adam counter is one ahead of the original's from then on. The second
update is replayed from the original's own counters, so it does not depend on that difference.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppocma_jax import Config, HParams
from ppocma_jax.agent import HostEnv, host_spec
from ppocma_jax.history import History
from ppocma_jax.rollout import Transition
from ppocma_jax.train import ReplayIndices, Trainer

DATA = Path(__file__).parent / "data" / "golden"
BOXES = {"symmetric": "ppocma_update.npz", "asymmetric": "ppocma_update_asym.npz"}
NETS = ("mean", "logvar", "critic")
# The reference's tolerances (its README §7: a 4x margin over float32 and float64 rebuilds of the update).
TOL_PARAMS, TOL_ADAM, TOL_SCALER, TOL_LOGVAR_MID = 1e-5, 1e-6, 1e-6, 2e-5


def _golden_setup(data: dict[str, np.ndarray]) -> tuple[Trainer, HParams]:
    low, high = (tuple(float(v) for v in data[k]) for k in ("low", "high"))
    n = data["batch/obs"].shape[0]
    m = data["indices/critic"].shape[1]
    u = data["indices/critic"].shape[0]
    config = Config(env="agent/host", mode="PPO-CMA-m", n_envs=1, iter_steps=n, max_steps=10 * n, batch_size=m,
                    n_updates=u, history_buffer_size=9, value_targets="mc", episode_ends="original",
                    adam_epsilon="tf1", pretrain_steps=1, eval_every=0)
    trainer = Trainer.build(config, env=HostEnv(host_spec(3, 2, low, high)))
    return trainer, HParams(learning_rate=5e-4, critic_learning_rate=5e-4).as_arrays()


def _load(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / name) as f:
        data = {k: f[k] for k in f.files}
    # the reference's action boxes (its json): [-1, 1]^2, and low = [-1, -2], high = [1, 3] for the asymmetric one
    asym = "asym" in name
    data["low"] = np.array([-1.0, -2.0] if asym else [-1.0, -1.0])
    data["high"] = np.array([1.0, 3.0] if asym else [1.0, 1.0])
    return data


def _mlp(data, prefix: str) -> list[dict[str, jax.Array]]:
    return [{"w": jnp.asarray(data[f"{prefix}/layer{i}/w"], jnp.float32),
             "b": jnp.asarray(data[f"{prefix}/layer{i}/b"], jnp.float32)} for i in range(3)]


def _adam(data, stage: str, net: str, like):
    """The reference's Adam state of `net` in optax's layout (same moments; optax's count = the TF1 step)."""
    moment = lambda k: [{p: jnp.asarray(data[f"adam/{stage}/{net}/layer{i}/{p}/{k}"], jnp.float32) for p in ("w", "b")}
                        for i in range(3)]
    return like._replace(count=jnp.asarray(data[f"adam/{stage}/{net}/step"], like.count.dtype), mu=moment("m"),
                         nu=moment("v"))


def _before_state(trainer: Trainer, hp: HParams, data):
    state = trainer.init_state(jax.random.PRNGKey(0), hp)
    h = trainer.config.history_buffer_size
    n = data["batch/obs"].shape[0]
    filled = int(data["before/history/len"])
    obs, act, adv = np.zeros((h, n, 3), np.float32), np.zeros((h, n, 2), np.float32), np.zeros((h, n), np.float32)
    for k in range(filled):  # entry k (0 = oldest) -> slot k, true until H pushes
        obs[k], act[k], adv[k] = (data[f"before/history/{k}/{x}"] for x in ("obs", "action", "adv"))
    history = History(obs=jnp.asarray(obs), actions=jnp.asarray(act), advantages=jnp.asarray(adv),
                      filled=jnp.asarray(filled, jnp.int32), next_slot=jnp.asarray(filled % h, jnp.int32))
    scaler = state.scaler.replace(count=jnp.asarray(data["before/scaler/count"], jnp.int32),
                                  mean_sq=jnp.asarray(data["before/scaler/mean_sq"], jnp.float32),
                                  mean=jnp.asarray(data["before/scaler/mean"], jnp.float32),
                                  scale=jnp.asarray(data["before/scaler/scale"], jnp.float32))
    opt = {net: _adam(data, "before", net, state.opt_states[net]) for net in NETS}
    return state.replace(policy_params={"mean": _mlp(data, "before/mean"), "logvar": _mlp(data, "before/logvar")},
                         critic_params=_mlp(data, "before/critic"), opt_states=opt, scaler=scaler,
                         history=history, iteration=jnp.asarray(1, jnp.int32))


def _batch(data) -> Transition:
    col = lambda x, dtype: jnp.asarray(np.asarray(x)[:, None], dtype)  # [T] -> [T, n=1]
    return Transition(obs=col(data["batch/obs"], jnp.float32), action=col(data["batch/action"], jnp.float32),
                      reward=col(data["batch/reward"], jnp.float32),
                      terminated=col(data["batch/terminated"], bool), truncated=col(data["batch/truncated"], bool),
                      next_obs=col(data["batch/next_obs"], jnp.float32), time=col(data["batch/time"], jnp.int32))


def _replay(data) -> ReplayIndices:
    i32 = lambda k: jnp.asarray(data[k], jnp.int32)
    return ReplayIndices(critic=i32("indices/critic"), var_slot=i32("indices/var_hist"),
                         var_sample=i32("indices/var"), mean=i32("indices/mean"))


def replay_update(name: str):
    """(reference data, state after our update of the reference's batch, our trainer, hparams)."""
    data = _load(name)
    trainer, hp = _golden_setup(data)
    state = _before_state(trainer, hp, data)
    key = jax.random.PRNGKey(1)  # unused: every draw is replayed
    after, _ = jax.jit(trainer.learn)(state, _batch(data), key, key, hp, _replay(data))
    return data, after, trainer, hp


@pytest.fixture(scope="module", params=list(BOXES))
def replayed(request):
    return replay_update(BOXES[request.param])


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def test_networks_after_the_update_match_the_original(replayed):
    data, after, _, _ = replayed
    ours = {"mean": after.policy_params["mean"], "logvar": after.policy_params["logvar"],
            "critic": after.critic_params}
    for net in NETS:
        for i in range(3):
            for p in ("w", "b"):
                diff = _max_diff(ours[net][i][p], data[f"after/{net}/layer{i}/{p}"])
                assert diff <= TOL_PARAMS, f"{net} layer{i}/{p}: max |diff| {diff:.2e} > {TOL_PARAMS}"


def test_adam_states_after_the_update_match_the_original(replayed):
    data, after, _, _ = replayed
    for net in NETS:
        opt = after.opt_states[net]
        assert int(opt.count) == int(data[f"adam/after/{net}/step"]), net
        for i in range(3):
            for p in ("w", "b"):
                for ours, k in ((opt.mu[i][p], "m"), (opt.nu[i][p], "v")):
                    diff = _max_diff(ours, data[f"adam/after/{net}/layer{i}/{p}/{k}"])
                    assert diff <= TOL_ADAM, f"{net} layer{i}/{p} Adam {k}: max |diff| {diff:.2e} > {TOL_ADAM}"


def test_scaler_and_history_after_the_update_match_the_original(replayed):
    data, after, _, _ = replayed
    assert int(after.scaler.count) == int(data["after/scaler/count"])
    for field in ("mean_sq", "scale"):
        diff = _max_diff(getattr(after.scaler, field), data[f"after/scaler/{field}"])
        assert diff <= TOL_SCALER, f"scaler {field}: {diff:.2e}"
    filled = int(data["after/history/len"])
    assert int(after.history.filled) == filled
    newest = filled - 1
    assert _max_diff(after.history.obs[newest], data[f"after/history/{newest}/obs"]) <= 1e-6
    assert _max_diff(after.history.actions[newest], data[f"after/history/{newest}/action"]) <= 1e-6
    # the pushed advantages are the normalised GAE advantages (reference tolerance for adv: 2e-6)
    assert _max_diff(after.history.advantages[newest], data["inter/adv"]) <= 2e-6


def test_variance_pass_result_matches_the_original(replayed):
    # The log-variance after the variance pass (before the mean pass), at this iteration's states: the variance
    # net is not touched by the mean pass, so the after-state's net gives it.
    data, after, trainer, hp = replayed
    scaled = jnp.asarray(data["inter/scaled_obs"], jnp.float32)
    logvar = trainer.policy.logvar(after.policy_params, scaled, hp)
    diff = _max_diff(logvar, data["inter/logvar_mid"])
    assert diff <= TOL_LOGVAR_MID, f"log-variance after the variance pass: {diff:.2e}"
