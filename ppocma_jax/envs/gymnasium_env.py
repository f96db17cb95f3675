"""gymnasium environments stepped on the host (`--env gymnasium/<id>`, the Agent's tutorial and benchmarks).

These are not JAX `Env`s: they run in Python through a gymnasium `SyncVectorEnv`, and their transitions reach the
same compiled update through `ppocma_jax.Agent` (see host_train.py). The vector env uses gymnasium's same-step
autoreset: when an episode ends, `step` returns the reset observation and puts the true last observation in
`infos["final_obs"]` (masked by `infos["_final_obs"]`), which is what a time-limit truncation bootstraps from.
The default next-step mode would instead return the final observation and spend the NEXT step on the reset, whose
(action, reward) pair belongs to no episode.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import UnknownEnvError
from .base import EnvSpec

SUITE = "gymnasium"

# Listed by --list-envs (obs size, action size, action bound, time limit in simulator steps), read off gymnasium
# 1.3 once, so that listing builds no MuJoCo model; any registered id with Box observations and actions works.
LISTED_ENVS: dict[str, tuple[int, int, float, int]] = {
    "Pendulum-v1": (3, 1, 2.0, 200),
    "MountainCarContinuous-v0": (2, 1, 1.0, 999),
    "InvertedPendulum-v5": (4, 1, 3.0, 1000),
    "InvertedDoublePendulum-v5": (9, 1, 1.0, 1000),
    "Reacher-v5": (10, 2, 1.0, 50),
    "Swimmer-v5": (8, 2, 1.0, 1000),
    "Hopper-v5": (11, 3, 1.0, 1000),
    "HalfCheetah-v5": (17, 6, 1.0, 1000),
    "Walker2d-v5": (17, 6, 1.0, 1000),
    "Ant-v5": (105, 8, 1.0, 1000),
    "Humanoid-v5": (348, 17, 0.4, 1000),
}


def gymnasium_installed() -> bool:
    try:
        import gymnasium  # noqa: F401
    except ImportError:
        return False
    return True


def _require_gymnasium() -> None:
    if not gymnasium_installed():
        raise UnknownEnvError("gymnasium envs need gymnasium, which is not installed: pip install -e \".[host]\"")


def _action_repeat_wrapper(env: Any, repeat: int) -> Any:
    """Hold each action for `repeat` simulator steps, rewards summed, stopping early when the episode ends
    (the original Run.py's action repeat, algorithm.md §6.2)."""
    import gymnasium as gym

    class ActionRepeat(gym.Wrapper):
        def step(self, action):
            total = 0.0
            for _ in range(repeat):
                obs, reward, terminated, truncated, info = self.env.step(action)
                total += float(reward)
                if terminated or truncated:
                    break
            return obs, total, terminated, truncated, info

    return ActionRepeat(env)


def make_single(env_id: str, action_repeat: int = 1) -> Any:
    """One gymnasium env (with its time limit), checked to have 1-D Box observations and Box actions."""
    _require_gymnasium()
    import gymnasium as gym

    try:
        env = gym.make(env_id)
    except Exception as err:  # unknown ids, missing extras (e.g. box2d), bad versions: one line
        first = str(err).splitlines()[0] if str(err) else ""
        raise UnknownEnvError(f"cannot make gymnasium/{env_id}: {type(err).__name__}: {first}; e.g. "
                              f"{', '.join(list(LISTED_ENVS)[:4])}") from None
    obs_space, action_space = env.observation_space, env.action_space
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        env.close()
        raise UnknownEnvError(f"gymnasium/{env_id} has observations {obs_space}; only 1-D Box observations are "
                              "supported")
    if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
        env.close()
        raise UnknownEnvError(f"gymnasium/{env_id} has actions {action_space}; the gymnasium suite needs a 1-D "
                              "Box (continuous) action space")
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        env.close()
        raise UnknownEnvError(f"gymnasium/{env_id} has unbounded actions; PPO-CMA needs a finite action box")
    return _action_repeat_wrapper(env, action_repeat) if action_repeat > 1 else env


def spec_of(env: Any, env_id: str, action_repeat: int = 1) -> EnvSpec:
    limit = env.spec.max_episode_steps if env.spec is not None else None
    return EnvSpec(
        name=f"{SUITE}/{env_id}",
        obs_dim=int(env.observation_space.shape[0]),
        discrete=False,
        action_dim=int(env.action_space.shape[0]),
        action_low=tuple(float(v) for v in env.action_space.low),
        action_high=tuple(float(v) for v in env.action_space.high),
        max_episode_steps=None if limit is None else math.ceil(limit / action_repeat),  # in decisions
    )


def gymnasium_spec(env_id: str, action_repeat: int = 1) -> EnvSpec:
    """The EnvSpec of gymnasium/<env_id> (UnknownEnvError, one line, if it cannot be used)."""
    env = make_single(env_id, action_repeat)
    try:
        return spec_of(env, env_id, action_repeat)
    finally:
        env.close()


def make_vector_env(env_id: str, n_envs: int, action_repeat: int = 1) -> Any:
    """n_envs copies in a SyncVectorEnv with same-step autoreset (see the module docstring)."""
    import gymnasium as gym

    make_single(env_id, action_repeat).close()  # fail early with one line, before building n copies
    return gym.vector.SyncVectorEnv([lambda: make_single(env_id, action_repeat)] * n_envs,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def successor_obs(next_obs: np.ndarray, infos: dict[str, Any]) -> np.ndarray:
    """The true successor of each acted-on state: `next_obs`, except the final observation where an episode
    ended (same-step autoreset already replaced it by the reset observation)."""
    mask = infos.get("_final_obs")
    if mask is None or not np.any(mask):
        return next_obs
    out = np.array(next_obs, copy=True)
    for i in np.flatnonzero(mask):
        out[i] = infos["final_obs"][i]
    return out


def static_specs() -> list[EnvSpec]:
    """Specs of the listed ids from the table above (empty without gymnasium)."""
    if not gymnasium_installed():
        return []
    return [EnvSpec(f"{SUITE}/{env_id}", obs, False, act, (-bound,) * act, (bound,) * act, limit)
            for env_id, (obs, act, bound, limit) in LISTED_ENVS.items()]
