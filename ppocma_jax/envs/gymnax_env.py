"""Adapter for gymnax 1.x environments (every id in `gymnax.registered_envs` with a flat observation)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .base import EnvSpec, StepResult


class _DeferredModule(ModuleType):
    """A stand-in in sys.modules for a module not imported yet: the first attribute it lacks imports the real
    module (which then replaces it in sys.modules) and is served from it, as is every later one. An `import`
    statement of the name binds the stand-in without importing anything (its __spec__ is None, so the import system
    asks nothing of it)."""

    def __getattr__(self, attribute: str) -> Any:
        real = self.__dict__.get("_real_module")
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
            self.__dict__["_real_module"] = real
        return getattr(real, attribute)


def import_gymnax() -> ModuleType:
    """`import gymnax`, with its import of seaborn deferred to seaborn's first use.

    gymnax's package import builds every env module, and one of them (misc/pong.py) imports seaborn, and with it
    scipy.stats, for a colour palette it uses only when drawing a Pong frame: 1.1-1.2 s of gymnax's 1.9-2.0 s
    import (`python -X importtime -c "import jax; import gymnax"`), paid by every gymnax run. So before gymnax is
    first imported, an installed seaborn that nobody imported yet is put in sys.modules as a _DeferredModule."""
    if "gymnax" not in sys.modules and "seaborn" not in sys.modules and importlib.util.find_spec("seaborn"):
        sys.modules["seaborn"] = _DeferredModule("seaborn")
    import gymnax

    return gymnax


def gymnax_env_names() -> list[str]:
    return list(import_gymnax().registered_envs)


class GymnaxEnv:
    """Wraps `gymnax.make(name)`: its step returns (obs, state, reward, terminated, truncated, info) and already
    auto-resets, putting the pre-reset observation in `info["final_observation"]`."""

    def __init__(self, name: str, env: Any = None, params: Any = None, display_name: str | None = None):
        """Registered id `name`, or (when `env` is given) any gymnax `Environment` instance with its `params`
        (None: `env.default_params`), shown as `display_name` (default: the class name)."""
        gymnax = import_gymnax()
        from gymnax.environments import spaces

        if env is None:
            self._env, self._params = gymnax.make(name)
            label = f"gymnax/{name}"
        else:
            self._env = env
            self._params = env.default_params if params is None else params
            label = display_name or type(env).__name__
        name = label[len("gymnax/"):] if label.startswith("gymnax/") else label
        obs_shape = self._env.observation_space(self._params).shape
        space = self._env.action_space(self._params)
        max_steps = getattr(self._params, "max_steps_in_episode", None)
        max_steps = None if max_steps is None else int(max_steps)
        obs_dim = int(np.prod(obs_shape))
        if isinstance(space, spaces.Discrete):
            self.spec = EnvSpec(label, obs_dim, True, int(space.n), None, None, max_steps)
        elif isinstance(space, spaces.Box):
            shape = tuple(space.shape) if space.shape else (1,)
            d = int(np.prod(shape))
            low = np.broadcast_to(np.asarray(space.low, np.float32), (d,))
            high = np.broadcast_to(np.asarray(space.high, np.float32), (d,))
            self.spec = EnvSpec(label, obs_dim, False, d, tuple(map(float, low)),
                                tuple(map(float, high)), max_steps)
            self._action_shape = tuple(space.shape)
        else:
            raise ValueError(f"{label} has a {type(space).__name__} action space; only Box and Discrete "
                             "are supported")

    def _action(self, action: jax.Array) -> jax.Array:
        if self.spec.discrete:
            return action.astype(jnp.int32)
        return action.reshape(self._action_shape) if self._action_shape else action.reshape(())

    def reset(self, key: jax.Array) -> tuple[Any, jax.Array]:
        obs, state = self._env.reset(key, self._params)
        return state, jnp.ravel(obs).astype(jnp.float32)

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, StepResult]:
        obs, state, reward, terminated, truncated, info = self._env.step(key, state, self._action(action),
                                                                         self._params)
        # A step can be both terminated and truncated (end condition on the last allowed step): termination wins.
        terminated = jnp.asarray(terminated, bool).reshape(())
        truncated = jnp.logical_and(jnp.asarray(truncated, bool).reshape(()), ~terminated)
        return state, StepResult(
            obs=jnp.ravel(obs).astype(jnp.float32),
            reward=jnp.asarray(reward, jnp.float32).reshape(()),
            terminated=terminated,
            truncated=truncated,
            final_obs=jnp.ravel(info["final_observation"]).astype(jnp.float32),
        )
