"""Adapter for Brax 0.14 environments (`brax.envs.get_environment(name, backend=...)`).

We wrap the RAW Brax env, not `brax.envs.create(...)`: Brax's `EpisodeWrapper` + `AutoResetWrapper` overwrite the
observation of the step that ended an episode with the reset observation, so a time-limit cut could not bootstrap
from the true last observation. The time limit (counted in simulator steps, i.e. `env.step` calls) and the
auto-reset live here instead:

- `terminated` is Brax's own `done` (e.g. hopper falling, the pendulum tipping over): a true end, no bootstrap;
- `truncated` is reaching `episode_length` without terminating: bootstrap from `final_obs`.

Every Brax env takes actions in [-1, 1]: most have actuator `ctrlrange` [-1, 1] (and the pipeline clips to it);
inverted_pendulum, humanoid, humanoidstandup and pusher rescale [-1, 1] to their actuator range inside `step`
(brax/envs/*.py, brax 0.14.2).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from .base import EnvSpec, StepResult

BACKENDS: tuple[str, ...] = ("spring", "positional", "generalized", "mjx")

# Default backend per env: the fastest one that is physically sound on CPU. Measured by peers on this machine kind
# (2 CPU cores), random-action steps/s with jit + vmap + lax.scan, /work/shared/baselines.md: spring is fastest for
# inverted_pendulum (126 k steps/s at 64 envs), inverted_double_pendulum (74 k; mjx 55 k, positional 33 k), reacher
# (60 k), hopper (56 k; positional 18 k, generalized / mjx 4-7 k), halfcheetah (5.7 k; all backends 1-6 k), ant
# (11 k; mjx similar) and humanoid (7.9 k; mjx 4.2 k). walker2d: spring, like its sibling hopper (not in that table).
# Unmeasured envs keep Brax's own default, generalized; swimmer only supports generalized.
DEFAULT_BACKEND: dict[str, str] = {
    "inverted_pendulum": "spring",
    "inverted_double_pendulum": "spring",
    "reacher": "spring",
    "hopper": "spring",
    "halfcheetah": "spring",
    "ant": "spring",
    "humanoid": "spring",
    "walker2d": "spring",
    "humanoidstandup": "generalized",
    "pusher": "generalized",
}
FALLBACK_BACKEND = "generalized"  # Brax's own default in every env constructor

# Registry entries we do not offer, with the reason (shown when asked for by name).
EXCLUDED: dict[str, str] = {
    "fast": "Brax's internal test fixture, not a benchmark",
    "swimmer": "brax 0.14.2's fluid model calls jnp.clip(a_min=...), which jax 0.10 removed",
}

# (obs_dim, action_dim) with each env's default backend, checked with jax.eval_shape(env.reset) on brax 0.14.2,
# so `list_envs()` need not build every env (a Brax env takes ~1 s to load and its step ~1-2 s to trace).
# tests/test_brax.py checks the inverted_pendulum row against a constructed env.
SIZES: dict[str, tuple[int, int]] = {
    "ant": (27, 8),
    "halfcheetah": (17, 6),
    "hopper": (11, 3),
    "humanoid": (244, 17),
    "humanoidstandup": (244, 17),
    "inverted_double_pendulum": (8, 1),
    "inverted_pendulum": (4, 1),
    "pusher": (23, 7),
    "reacher": (11, 2),
    "walker2d": (17, 6),
}

DEFAULT_EPISODE_LENGTH = 1000


def brax_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("brax") is not None


@contextlib.contextmanager
def quiet_brax():
    """Silence Brax's import-time noise: mujoco prints 'Failed to import warp' on CPU-only machines (harmless),
    jaxopt (a Brax dependency) warns it is unmaintained, and brax.io.mjcf warns on every model load that Brax is
    no longer maintained (DESIGN.md: brax.envs is frozen upstream)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", message="Brax System, piplines and environments are not actively")
        warnings.filterwarnings("ignore", message="JAXopt is no longer maintained")  # imported by brax
        yield


def _brax_envs():
    with quiet_brax():
        import brax.envs

    return brax.envs


def brax_env_names() -> list[str]:
    """Names we can build: Brax's registry (`brax.envs._envs`, filled by `register_environment`) minus EXCLUDED."""
    return sorted(name for name in _brax_envs()._envs if name not in EXCLUDED)


def default_backend(name: str) -> str:
    return DEFAULT_BACKEND.get(name, FALLBACK_BACKEND)


def static_specs() -> list[EnvSpec]:
    """Specs of the envs in SIZES, with default backend and episode length, without importing Brax."""
    return [EnvSpec(f"brax/{name}", obs_dim, False, act_dim, (-1.0,) * act_dim, (1.0,) * act_dim,
                    DEFAULT_EPISODE_LENGTH) for name, (obs_dim, act_dim) in sorted(SIZES.items())]


def _strong(tree: Any) -> Any:
    """Every array leaf as a strongly typed array of its own dtype. Brax mixes Python floats / weak-typed scalars
    (e.g. inverted_pendulum's reward = 1.0) with float32 arrays; a fixed leaf type keeps a lax.scan carry stable."""
    return jax.tree.map(lambda x: jax.lax.convert_element_type(jnp.asarray(x), jnp.asarray(x).dtype), tree)


@struct.dataclass
class BraxEnvState:
    brax_state: Any  # brax.envs.State of the raw env (pipeline_state, obs, reward, done, metrics, info)
    t: jax.Array  # int32: simulator steps taken in the current episode


class BraxEnv:
    """One raw Brax env with our own time limit and an auto-reset that keeps the final observation."""

    def __init__(self, name: str, backend: str | None = None, episode_length: int = DEFAULT_EPISODE_LENGTH,
                 env: Any = None):
        """Registered Brax env `name`, or (when `env` is given) that Brax `Env` object -- e.g. one built with
        changed parameters or the user's own `PipelineEnv` -- shown as `name`; its own backend is kept."""
        if int(episode_length) < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        if env is None:
            if backend is None:
                backend = default_backend(name)
            if backend not in BACKENDS:
                raise ValueError(f"unknown brax backend {backend!r}; valid: {', '.join(BACKENDS)}")
            with quiet_brax():
                self._env = _brax_envs().get_environment(name, backend=backend)
            label = f"brax/{name}"
        else:
            self._env = env
            backend = str(getattr(env, "backend", backend or "custom"))
            label = name
        with quiet_brax():
            # Shapes only: tracing reset is far cheaper than running it (`env.observation_size` runs it eagerly).
            reset_shape = jax.eval_shape(self._env.reset, jax.random.PRNGKey(0))
        if not isinstance(reset_shape.obs, jax.ShapeDtypeStruct):
            raise ValueError(f"{label} has dict observations; only flat array observations are supported")
        self.name, self.backend, self.episode_length = name, backend, int(episode_length)
        obs_dim = int(reset_shape.obs.size)
        action_dim = int(self._env.action_size)
        self.spec = EnvSpec(label, obs_dim, False, action_dim, (-1.0,) * action_dim, (1.0,) * action_dim,
                            self.episode_length)

    @property
    def sys(self) -> Any:
        """The Brax `System` (model and geometry) that `brax.io.html.render` draws the pipeline states with."""
        return self._env.sys

    @staticmethod
    def pipeline_state(state: BraxEnvState) -> Any:
        """The physics state of `state` (Brax's `pipeline_state`): what `brax.io.html.render` animates."""
        return state.brax_state.pipeline_state

    def reset(self, key: jax.Array) -> tuple[BraxEnvState, jax.Array]:
        brax_state = _strong(self._env.reset(key))
        state = BraxEnvState(brax_state, jnp.zeros((), jnp.int32))
        return state, jnp.ravel(brax_state.obs).astype(jnp.float32)

    def step(self, key: jax.Array, state: BraxEnvState, action: jax.Array) -> tuple[BraxEnvState, StepResult]:
        action = jnp.reshape(action, (self.spec.action_dim,)).astype(jnp.float32)
        stepped = _strong(self._env.step(state.brax_state, action))
        t = state.t + 1
        terminated = jnp.reshape(stepped.done, ()) > 0.5
        truncated = (t >= self.episode_length) & ~terminated  # termination wins on the last allowed step
        done = terminated | truncated
        final_obs = jnp.ravel(stepped.obs).astype(jnp.float32)
        # The reset is computed every step and selected where the episode ended (fixed shapes; under vmap a
        # lax.cond would be a select anyway). The step's key only seeds this reset (Brax's step is deterministic).
        fresh, fresh_obs = self.reset(key)
        stepped_state = BraxEnvState(stepped, t)
        new_state = jax.tree.map(lambda r, s: jnp.where(done, r, s).astype(r.dtype), fresh, stepped_state)
        return new_state, StepResult(
            obs=jnp.where(done, fresh_obs, final_obs),
            reward=jnp.reshape(stepped.reward, ()).astype(jnp.float32),
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
        )
