"""Environments named by a factory: `--env module.path:factory` or `--env path/to/file.py:factory`.

The factory is a zero-argument callable returning anything `wrap_env` accepts (our Env protocol, a gymnax
Environment or an `(environment, env_params)` pair, a Brax Env). The spec string is what config.json records, so
`--resume` and `evaluate` rebuild the same env by importing the same factory; a file path is made absolute so the
run directory can be resumed from any working directory.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

from . import EnvError, UnknownEnvError

_SUITE_PREFIXES = ("gymnax/", "brax/", "didactic/", "gymnasium/")


def is_factory_spec(name: str) -> bool:
    """True for `module:callable` / `file.py:callable` (a registry name never holds a colon)."""
    return ":" in name and not name.startswith(_SUITE_PREFIXES)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _split_spec(spec: str) -> tuple[str, str]:
    where, _, attr = spec.rpartition(":")
    if not where or not attr or not all(part.isidentifier() for part in attr.split(".")):
        raise UnknownEnvError(f"env factory {spec!r} must be 'module.path:callable' or 'path/to/file.py:callable'")
    return where, attr


def canonical_factory_spec(spec: str) -> str:
    """The spec with a file path made absolute (module paths are kept as given)."""
    where, attr = _split_spec(spec)
    if where.endswith(".py"):
        where = str(Path(where).expanduser().resolve())
    return f"{where}:{attr}"


def _import(where: str, spec: str) -> Any:
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise UnknownEnvError(f"env factory {spec!r}: no file {path}")
        module_name = f"_ppocma_env_factory_{abs(hash(str(path.resolve())))}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise UnknownEnvError(f"env factory {spec!r}: {path} is not an importable Python file")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[module_name]
            raise UnknownEnvError(f"env factory {spec!r}: importing {path} failed: {_first_line(err)}") from None
        return module
    if "" not in sys.path and str(Path.cwd()) not in sys.path:  # `python -m` has the cwd; a console script not
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(where)
    except Exception as err:
        raise UnknownEnvError(f"env factory {spec!r}: cannot import module {where!r}: {_first_line(err)}") from None


def resolve_factory(spec: str) -> Callable[[], Any]:
    """Import the factory of `spec` (UnknownEnvError, one line, when it cannot be found or is not callable)."""
    where, attr = _split_spec(spec)
    obj: Any = _import(where, spec)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UnknownEnvError(f"env factory {spec!r}: {where} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UnknownEnvError(f"env factory {spec!r}: {attr} is a {type(obj).__name__}, not a callable")
    return obj


def make_factory_env(spec: str, action_repeat: int = 1, episode_length: int | None = None) -> Any:
    """Call the factory of `spec` with no arguments and wrap what it returns (see `envs.wrap_env`).

    The env's spec name is the spec string, so headers, config.json and plots name what was trained.
    """
    from . import wrap_env

    factory = resolve_factory(spec)
    try:
        made = factory()
    except Exception as err:
        raise UnknownEnvError(f"env factory {spec!r} raised {_first_line(err)}") from None
    try:
        return wrap_env(made, name=spec, action_repeat=action_repeat, episode_length=episode_length)
    except EnvError as err:
        raise UnknownEnvError(f"env factory {spec!r} returned an unusable object: {err}") from None
