"""The host-side Agent and the gymnasium/<id> CLI suite.

Compile time dominates on a 2-core CPU, so every test uses one small configuration (AGENT_KW): the compiled
init / act / update programs are shared in memory (their static argument, the Trainer, compares equal) and the
CLI run finds them in the persistent XLA cache of conftest.py.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tiny import Tiny

from ppocma_jax import Agent, ConfigError, Networks
from ppocma_jax.agent import AgentError
from ppocma_jax.cli import main
from ppocma_jax.envs.gymnasium_env import make_vector_env
from ppocma_jax.host_train import collect
from ppocma_jax.rollout import Transition

pytest.importorskip("gymnasium")

# Pendulum-v1: obs 3, one action in [-2, 2]; 8 envs x 250 decisions per iteration, small networks.
AGENT_KW = dict(n_envs=8, iter_steps=2000, hidden_units=32, policy_init="analytic")
PENDULUM = (3, 1, -2.0, 2.0)


def new_agent(seed: int = 0) -> Agent:
    return Agent(*PENDULUM, seed=seed, **AGENT_KW)


@pytest.fixture(scope="module")
def trained():
    """An agent trained for 20 iterations (40k steps) on gymnasium Pendulum-v1 from a plain Python loop, and the
    returns that update_with_memorized reported."""
    agent = new_agent()
    vec = make_vector_env("Pendulum-v1", agent.n_envs)
    obs, _ = vec.reset(seed=0)
    returns = []
    for _ in range(20):
        obs = collect(agent, vec, obs, agent.config.rollout_len)
        returns.append(agent.update_with_memorized())
    vec.close()
    return agent, np.asarray(returns)


def test_agent_improves_on_gymnasium_pendulum(trained):
    agent, returns = trained
    assert not np.any(np.isnan(returns))  # 8 envs x 250 decisions: every iteration finishes episodes
    assert np.mean(returns[:3]) < -1000  # the initial Gaussian scores about -1250
    # measured: about -1250 -> -1000 over these 20 iterations (-930 after 25)
    assert np.mean(returns[-3:]) > np.mean(returns[:3]) + 150, returns
    assert int(agent.state.iteration) == 20 and int(agent.state.env_steps) == 40_000


def _random_batch(agent: Agent, seed: int) -> Transition:
    rng = np.random.default_rng(seed)
    T, n = agent.config.rollout_len, agent.n_envs
    terminated = rng.random((T, n)) < 0.01
    truncated = (rng.random((T, n)) < 0.01) & ~terminated
    return Transition(
        obs=jnp.asarray(rng.normal(size=(T, n, 3)), jnp.float32),
        action=jnp.asarray(rng.uniform(-2, 2, size=(T, n, 1)), jnp.float32),
        reward=jnp.asarray(rng.normal(size=(T, n)), jnp.float32),
        terminated=jnp.asarray(terminated), truncated=jnp.asarray(truncated),
        next_obs=jnp.asarray(rng.normal(size=(T, n, 3)), jnp.float32),
        time=jnp.asarray(rng.integers(0, 200, size=(T, n)), jnp.int32))


def test_agent_update_is_trainer_learn_on_the_same_data_and_key(trained):
    """The Agent's update = make_train's Trainer.learn (its trainer has the gymnax env), with the keys
    Trainer.iteration derives, on the same data. Both compile the same program: the reference is loaded from the
    persistent XLA cache (conftest.py)."""
    from ppocma_jax import make_train

    agent, _ = trained
    trainer = make_train(agent.config.replace(env="gymnax/Pendulum-v1")).trainer
    state = jax.tree.map(jnp.copy, agent.state)
    traj = _random_batch(agent, 1)
    metrics = agent.learn(traj)
    key, _, key_critic, key_policy = jax.random.split(state.key, 4)  # as Trainer.iteration splits
    expected, expected_metrics = jax.jit(trainer.learn)(state, traj, key_critic, key_policy, agent._hp)
    for got, want in zip(jax.tree.leaves((agent.state.policy_params, agent.state.critic_params, agent.state.opt_states,
                                          agent.state.scaler, agent.state.history)),
                         jax.tree.leaves((expected.policy_params, expected.critic_params, expected.opt_states,
                                          expected.scaler, expected.history))):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    assert metrics["critic_loss"] == pytest.approx(float(expected_metrics["critic_loss"]), rel=1e-5)
    np.testing.assert_array_equal(np.asarray(agent.state.key), np.asarray(key))
    assert int(agent.state.iteration) == int(state.iteration) + 1
    assert int(agent.state.env_steps) == int(state.env_steps) + agent.config.iter_steps


def test_batch_and_single_act_agree(trained):
    agent, _ = trained
    obs = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    batch = agent.act(obs, deterministic=True)
    assert batch.shape == (8, 1)
    single = np.stack([agent.act(o, deterministic=True) for o in obs])
    np.testing.assert_allclose(single, batch, rtol=1e-5, atol=1e-6)
    stochastic = agent.act(obs)
    assert stochastic.shape == (8, 1) and np.all(np.abs(stochastic) <= 2.0)
    assert agent.act(obs[0]).shape == (1,)


def test_acts_from_the_initial_gaussian_before_the_first_update():
    agent = new_agent()
    key = agent._act_key
    obs = np.ones((8, 3), np.float32)
    action = agent.act(obs)
    expected, _ = agent.trainer.policy.sample_initial(jax.random.split(key)[1], (8,))
    np.testing.assert_allclose(action, np.asarray(expected), rtol=1e-6)  # the rule of rollout.py
    np.testing.assert_allclose(agent.act(obs, deterministic=True), 0.0, atol=1e-6)  # the initial mean


def test_error_cases():
    with pytest.raises(AgentError, match="state_dim must be a positive integer"):
        Agent(0, 1, -1.0, 1.0)
    with pytest.raises(AgentError, match="action_min"):
        Agent(3, 2, [-1.0, -1.0, -1.0], 1.0)
    with pytest.raises(AgentError, match="below action_max"):
        Agent(3, 1, 1.0, -1.0)
    with pytest.raises(ConfigError, match="unknown Agent hyperparameter 'lerning_rate'"):
        Agent(*PENDULUM, lerning_rate=1e-3)
    with pytest.raises(ConfigError, match="iter_steps"):
        Agent(*PENDULUM, n_envs=3, iter_steps=1000)
    agent = new_agent()
    with pytest.raises(AgentError, match="nothing to learn from"):
        agent.update_with_memorized()
    with pytest.raises(AgentError, match=r"obs has shape \(4,\)"):
        agent.act(np.zeros(4))
    z, zb = np.zeros((8, 3)), np.zeros(8, bool)
    with pytest.raises(AgentError, match=r"obs has shape \(3,\).*n_envs=8"):
        agent.memorize(np.zeros(3), np.zeros(1), 0.0, np.zeros(3), False)
    with pytest.raises(AgentError, match="action has shape"):
        agent.memorize(z, np.zeros((8, 2)), np.zeros(8), z, zb)
    with pytest.raises(AgentError, match="reward contains NaN"):
        agent.memorize(z, np.zeros((8, 1)), np.full(8, np.nan), z, zb)
    agent.memorize(z, np.zeros((8, 1)), np.zeros(8), z, zb)
    with pytest.raises(AgentError, match="needs iter_steps=2000 transitions .* 8 are memorised"):
        agent.update_with_memorized()
    with pytest.raises(AgentError, match="learn needs a batch of shape"):
        agent.learn(jax.tree.map(lambda x: x[:10], _random_batch(agent, 0)))


def test_unfinished_episodes_and_surplus_are_kept():
    agent = new_agent()
    T = agent.config.rollout_len
    z = np.zeros((8, 3), np.float32)
    for t in range(T + 5):
        done = np.full(8, t == 99)  # one episode of 100 steps ends; the next is unfinished at the update
        agent.memorize(z, np.zeros((8, 1)), np.ones(8), z, done, np.zeros(8, bool))
    assert agent.ready and agent.memorized_steps == T + 5
    assert agent.update_with_memorized() == pytest.approx(100.0)  # the finished episodes only
    assert agent.memorized_steps == 5  # the surplus waits for the next update
    assert agent._rows[0][6][0] == T - 100  # the unfinished episode keeps its time index


def test_save_load_round_trip(trained, tmp_path):
    agent, _ = trained
    rng = np.random.default_rng(0)
    for _ in range(agent.config.rollout_len + 3):  # a full batch and a surplus stay memorised
        obs = rng.normal(size=(8, 3)).astype(np.float32)
        agent.memorize(obs, agent.act(obs), rng.normal(size=8), obs, np.zeros(8, bool))
    agent.save(tmp_path / "agent")
    loaded = Agent.load(tmp_path / "agent")
    assert loaded.config == agent.config and loaded.memorized_steps == agent.memorized_steps
    for a, b in zip(jax.tree.leaves(agent.state), jax.tree.leaves(loaded.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    obs = rng.normal(size=(8, 3)).astype(np.float32)
    np.testing.assert_array_equal(agent.act(obs), loaded.act(obs))  # same acting key too
    agent.update_with_memorized()
    loaded.update_with_memorized()
    for a, b in zip(jax.tree.leaves(agent.state), jax.tree.leaves(loaded.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(AgentError, match="no saved agent"):
        Agent.load(tmp_path / "missing")


def test_an_agent_trains_its_own_networks_and_loads_only_with_them(trained, tmp_path):
    networks = Networks(mean=Tiny(1), logvar=Tiny(1), critic=Tiny(1))
    kw = dict(AGENT_KW, policy_init="pretrain", pretrain_steps=20)  # "analytic" sets the built-in MLP's layers
    agent = Agent(*PENDULUM, networks=networks, **kw)
    assert agent.state.policy_params["mean"]["params"]["hidden"]["kernel"].shape == (3, 8)
    assert agent.state.critic_params["params"]["hidden"]["kernel"].shape == (4, 8)  # obs + time feature
    before = jax.tree.map(np.asarray, agent.state.policy_params)
    agent.learn(_random_batch(agent, 0))
    assert not np.array_equal(before["mean"]["params"]["out"]["kernel"],
                              np.asarray(agent.state.policy_params["mean"]["params"]["out"]["kernel"]))
    agent.save(tmp_path / "custom")
    with pytest.raises(AgentError) as err:
        Agent.load(tmp_path / "custom")
    assert str(err.value) == (f"{str(tmp_path / 'custom')!r} was saved with custom networks (critic, logvar, mean): "
                              "pass the same ones, Agent.load(path, networks=Networks(critic=..., logvar=..., "
                              "mean=...))")
    with pytest.raises(AgentError, match="custom networks"):
        Agent.load(tmp_path / "custom", networks=Networks(mean=Tiny(1), logvar=Tiny(1)))
    with pytest.raises(AgentError, match=r"^networks.critic maps a \[1, 4\] input to shape \[1, 2\]"):
        Agent.load(tmp_path / "custom", networks=Networks(mean=Tiny(1), logvar=Tiny(1), critic=Tiny(2)))
    loaded = Agent.load(tmp_path / "custom", networks=networks)
    batch = _random_batch(agent, 1)
    agent.learn(batch)
    loaded.learn(batch)  # continues exactly
    for a, b in zip(jax.tree.leaves(agent.state), jax.tree.leaves(loaded.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    builtin, _ = trained
    builtin.save(tmp_path / "builtin")
    with pytest.raises(AgentError, match="saved with the built-in networks; load it without networks="):
        Agent.load(tmp_path / "builtin", networks=networks)


def test_cli_gymnasium_smoke_run(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--env", "gymnasium/Pendulum-v1", "--max-steps", "4000", "--iter-steps", "2000", "--n-envs", "8",
            "--hidden-units", "32", "--policy-init", "analytic", "--eval-every", "2", "--eval-episodes", "2",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert "result: final mean return" in capsys.readouterr().out
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,env_steps,wall_s,mean_return") and len(rows) == 3
    assert rows[2].split(",")[-1] != ""  # eval_return at the last iteration
    result = json.loads((out / "result.json").read_text())
    assert result["env_steps"] == 4000 and not math.isnan(result["final_return"])
    assert (out / "checkpoints" / "2").is_dir()
    assert int(Agent.load(out).state.iteration) == 2  # a gymnasium run directory loads as an Agent
    from ppocma_jax.evaluate import main as evaluate_main

    capsys.readouterr()
    assert evaluate_main([str(out), "--episodes", "2"]) == 0  # evaluated on the host, as it was trained
    assert "deterministic return" in capsys.readouterr().out
    assert json.loads((out / "eval_deterministic.json").read_text())["iteration"] == 2
    assert main(["--env", "gymnasium/Pendulum-v1", "--render", "--out", str(tmp_path / "render")]) == 2
    assert "--render and --wandb are not available for gymnasium" in capsys.readouterr().err
    assert not (tmp_path / "render").exists()  # refused before the run directory is made
    assert main(["--env", "gymnasium/NoSuchEnv-v0", "--out", str(tmp_path / "bad")]) == 2
    assert "cannot make gymnasium/NoSuchEnv-v0" in capsys.readouterr().err
