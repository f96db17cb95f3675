"""Environment registry: `make_env("suite/name")` -> an `Env`; `list_envs()` for the CLI.

Besides registered names, `make_env` takes a factory spec `module.path:factory` or `path/to/file.py:factory`
(envs/factory.py): a zero-argument callable returning an env object that `wrap_env` accepts.
"""

from __future__ import annotations

from typing import Any

from .base import Env, EnvSpec, StepResult
from .wrappers import ActionRepeat

SUITES: tuple[str, ...] = ("gymnax", "brax", "didactic")


class UnknownEnvError(ValueError):
    """The env string names no suite or no env of that suite."""


def _split(name: str) -> tuple[str, str]:
    if "/" not in name:
        # The original's Run.py took bare gym ids; accept them when gymnax has the same id.
        from .gymnax_env import gymnax_env_names

        if name in gymnax_env_names():
            return "gymnax", name
        raise UnknownEnvError(f"unknown env {name!r}: expected SUITE/NAME with SUITE one of {', '.join(SUITES)} "
                              "(e.g. gymnax/Pendulum-v1); `python -m ppocma_jax --list-envs` lists them")
    suite, env_name = name.split("/", 1)
    if suite == "gymnasium":  # host simulators are not JAX envs: they cannot run inside the compiled loop
        raise UnknownEnvError(f"{name} is stepped on the host, not inside a compiled program: train it with "
                              f"`python -m ppocma_jax --env {name}` or `ppocma_jax.Agent` (see host_train.py)")
    if suite not in SUITES:
        raise UnknownEnvError(f"unknown env suite {suite!r} in {name!r}; valid suites: {', '.join(SUITES)}")
    return suite, env_name


def canonical_env_name(name: str) -> str:
    """`suite/name` for a registered env (bare gymnax ids get their suite); a factory spec is imported and built
    once here, so a bad factory is one line before anything is written, and comes back with a file path made
    absolute."""
    from .factory import canonical_factory_spec, is_factory_spec, make_factory_env

    if is_factory_spec(name):
        spec = canonical_factory_spec(name)
        make_factory_env(spec)
        return spec
    suite, env_name = _split(name)
    return f"{suite}/{env_name}"


def make_env(name: str, action_repeat: int = 1, backend: str | None = None,
             episode_length: int | None = None) -> Env:
    """Build the env named `suite/name` (one instance; the trainer vmaps it).

    `backend` and `episode_length` (simulator steps) apply to Brax envs only; None means the env's default
    (`brax_env.DEFAULT_BACKEND`, 1000 steps). A factory spec (`module:factory`, see envs/factory.py) builds
    the env its factory returns.
    """
    from .factory import is_factory_spec, make_factory_env

    if is_factory_spec(name):
        if backend is not None:
            raise UnknownEnvError(f"--backend does not apply to the env factory {name!r}: build the Brax env with "
                                  "the backend you want inside the factory")
        return make_factory_env(name, action_repeat, episode_length)
    suite, env_name = _split(name)
    if suite != "brax" and (backend is not None or episode_length is not None):
        raise UnknownEnvError(f"backend / episode_length apply to brax envs only, not to {suite}/{env_name}")
    if suite == "gymnax":
        from .gymnax_env import GymnaxEnv, gymnax_env_names

        valid = gymnax_env_names()
        if env_name not in valid:
            raise UnknownEnvError(f"unknown gymnax env {env_name!r}; valid: {', '.join(valid)}")
        try:
            env: Env = GymnaxEnv(env_name)
        except Exception as err:  # e.g. an env that downloads data at construction, offline
            raise UnknownEnvError(f"cannot build gymnax/{env_name}: {type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''}") from None
    elif suite == "brax":
        env = _make_brax(env_name, backend, episode_length)
    elif suite == "didactic":
        from .didactic import DIDACTIC_ENVS, make_didactic_env

        if env_name not in DIDACTIC_ENVS:
            raise UnknownEnvError(f"unknown didactic env {env_name!r}; valid: {', '.join(DIDACTIC_ENVS)}")
        env = make_didactic_env(env_name)
    else:  # pragma: no cover - guarded by _split
        raise UnknownEnvError(f"unknown suite {suite!r}")
    return ActionRepeat(env, action_repeat) if action_repeat > 1 else env


def _make_brax(env_name: str, backend: str | None, episode_length: int | None) -> Env:
    from . import brax_env

    if not brax_env.brax_installed():
        raise UnknownEnvError(f"brax/{env_name} needs Brax, which is not installed: pip install -e \".[brax]\"")
    if backend is not None and backend not in brax_env.BACKENDS:
        raise UnknownEnvError(f"unknown brax backend {backend!r}; valid: {', '.join(brax_env.BACKENDS)}")
    if env_name in brax_env.EXCLUDED:
        raise UnknownEnvError(f"brax/{env_name} is not supported ({brax_env.EXCLUDED[env_name]}); valid: "
                              f"{', '.join(brax_env.brax_env_names())}")
    valid = brax_env.brax_env_names()
    if env_name not in valid:
        raise UnknownEnvError(f"unknown brax env {env_name!r}; valid: {', '.join(valid)}")
    if episode_length is None:
        episode_length = brax_env.DEFAULT_EPISODE_LENGTH
    if episode_length < 1:
        raise UnknownEnvError(f"brax episode_length must be >= 1, got {episode_length}")
    try:
        return brax_env.BraxEnv(env_name, backend, episode_length)
    except Exception as err:  # e.g. a backend this env does not support
        raise UnknownEnvError(f"cannot build brax/{env_name} with backend "
                              f"{backend or brax_env.default_backend(env_name)}: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from None


class EnvError(ValueError):
    """An env object fits none of the accepted kinds (see `wrap_env`)."""


def wrap_env(obj: Any, name: str | None = None, action_repeat: int = 1, episode_length: int | None = None) -> Env:
    """Turn a user's environment object into our `Env`, detected by duck typing:

    - our `Env` protocol (`spec`, `reset(key)`, `step(key, state, action)`): used as is (`name` renames its spec);
    - a gymnax 1.x `Environment` (`reset_env`/`step_env`/`action_space`/`observation_space`), or a pair
      `(environment, env_params)`: `default_params` when no params are given; Box observations are flattened;
    - a Brax `Env` (`reset(rng)`, `step(state, action)`, `action_size`), e.g. `brax.envs.get_environment(
      "hopper", backend="spring")` with changed parameters or your own `PipelineEnv`: wrapped with our time limit
      (`episode_length` simulator steps, default 1000) and final-observation auto-reset (brax_env.BraxEnv).

    `name` becomes `EnvSpec.name` (default: the class name). Raises EnvError (one line) for anything else.
    """
    params = None
    if isinstance(obj, tuple) and len(obj) == 2:
        obj, params = obj
    if episode_length is not None and not (hasattr(obj, "action_size") and not hasattr(obj, "spec")):
        raise EnvError("episode_length applies to Brax env objects only; a gymnax env's time limit is in its params")
    if isinstance(obj, str):
        raise EnvError(f"wrap_env takes an env object; use make_env({obj!r}) for a registered name")
    if all(hasattr(obj, a) for a in ("spec", "reset", "step")) and isinstance(getattr(obj, "spec"), EnvSpec):
        env: Env = obj
        if name is not None:
            import dataclasses

            spec = dataclasses.replace(obj.spec, name=name)
            env = _Renamed(obj, spec)
    elif all(hasattr(obj, a) for a in ("reset_env", "step_env", "action_space", "observation_space")):
        from .gymnax_env import GymnaxEnv

        if params is None and not hasattr(obj, "default_params"):
            raise EnvError(f"gymnax env {type(obj).__name__} has no default_params: pass (env, env_params)")
        try:
            env = GymnaxEnv("", env=obj, params=params, display_name=name)
        except EnvError:
            raise
        except Exception as err:
            raise EnvError(f"cannot wrap gymnax env {type(obj).__name__}: {type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''}") from None
    elif all(hasattr(obj, a) for a in ("reset", "step", "action_size")) and not hasattr(obj, "spec"):
        from . import brax_env

        length = brax_env.DEFAULT_EPISODE_LENGTH if episode_length is None else int(episode_length)
        if length < 1:
            raise EnvError(f"brax episode_length must be >= 1, got {length}")
        try:
            env = brax_env.BraxEnv(name or type(obj).__name__, episode_length=length, env=obj)
        except Exception as err:
            raise EnvError(f"cannot wrap brax env {type(obj).__name__}: {type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''}") from None
    else:
        missing = [a for a in ("spec", "reset", "step") if not hasattr(obj, a)]
        raise EnvError(f"{type(obj).__name__} is not an environment: it is neither our Env protocol (missing "
                       f"{', '.join(missing) or 'an EnvSpec spec'}) nor a gymnax Environment (reset_env, step_env, "
                       "action_space, observation_space) nor a Brax Env (reset, step, action_size)")
    return ActionRepeat(env, action_repeat) if action_repeat > 1 else env


class _Renamed:
    """An `Env` with another spec name (delegates reset/step)."""

    def __init__(self, env: Env, spec: EnvSpec):
        self._env, self.spec = env, spec

    def reset(self, key):
        return self._env.reset(key)

    def step(self, key, state, action):
        return self._env.step(key, state, action)


def list_envs(include_brax: bool = True) -> list[EnvSpec]:
    """Specs of every env we can build (those whose spaces we support).

    Brax envs (when Brax is installed) come from a static table of sizes (`brax_env.SIZES`, default backend and
    episode length) instead of being built: building and tracing each Brax env takes seconds.
    """
    from .gymnax_env import GymnaxEnv, gymnax_env_names

    specs = []
    for env_name in gymnax_env_names():
        try:
            specs.append(GymnaxEnv(env_name).spec)
        except Exception:  # envs with unsupported spaces or extra requirements are not listed
            continue
    from .didactic import DIDACTIC_ENVS, make_didactic_env

    specs.extend(make_didactic_env(name).spec for name in DIDACTIC_ENVS)  # the paper's toy (algorithm.md §8)
    if include_brax:
        from . import brax_env

        if brax_env.brax_installed():
            specs.extend(brax_env.static_specs())
    return specs


__all__ = ["Env", "EnvSpec", "StepResult", "ActionRepeat", "make_env", "list_envs", "canonical_env_name",
           "UnknownEnvError", "SUITES", "EnvError", "wrap_env"]
