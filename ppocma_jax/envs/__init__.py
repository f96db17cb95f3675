"""Environment registry: `make_env("suite/name")` -> an `Env`; `list_envs()` for the CLI."""

from __future__ import annotations

from .base import Env, EnvSpec, StepResult
from .wrappers import ActionRepeat

SUITES: tuple[str, ...] = ("gymnax",)


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
    if suite not in SUITES:
        raise UnknownEnvError(f"unknown env suite {suite!r} in {name!r}; valid suites: {', '.join(SUITES)}")
    return suite, env_name


def canonical_env_name(name: str) -> str:
    suite, env_name = _split(name)
    return f"{suite}/{env_name}"


def make_env(name: str, action_repeat: int = 1) -> Env:
    """Build the env named `suite/name` (one instance; the trainer vmaps it)."""
    suite, env_name = _split(name)
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
    else:  # pragma: no cover - guarded by _split
        raise UnknownEnvError(f"unknown suite {suite!r}")
    return ActionRepeat(env, action_repeat) if action_repeat > 1 else env


def list_envs() -> list[EnvSpec]:
    """Specs of every env we can build (those whose spaces we support)."""
    from .gymnax_env import GymnaxEnv, gymnax_env_names

    specs = []
    for env_name in gymnax_env_names():
        try:
            specs.append(GymnaxEnv(env_name).spec)
        except Exception:  # envs with unsupported spaces or extra requirements are not listed
            continue
    return specs


__all__ = ["Env", "EnvSpec", "StepResult", "ActionRepeat", "make_env", "list_envs", "canonical_env_name",
           "UnknownEnvError", "SUITES"]
