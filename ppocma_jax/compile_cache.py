"""JAX's persistent compilation cache for the command line: where it lives, switching it on, and whether a compile
was served from it.

A run compiles its training chunk once per process (20-60 s for a brax env on a CPU). The cache keeps the compiled
executable on disk, keyed by the program and the compiler's options, so the next run of the same configuration
(a repeat, a `--resume`, a test) loads it instead. JAX never stores a program that calls back to the host, which is
why the CLI's compiled chunk returns its metrics rather than printing them from inside (cli.py).

Where: `--compile-cache DIR`, else $PPOCMA_JAX_COMPILE_CACHE, else a directory JAX was already given
(JAX_COMPILATION_CACHE_DIR), else $XDG_CACHE_HOME/ppocma_jax/xla (~/.cache/ppocma_jax/xla). `off` switches it off.
The directory may be deleted at any time; it is not pruned (JAX's entries are a few MB each).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

ENV_VAR = "PPOCMA_JAX_COMPILE_CACHE"
OFF = "off"

# JAX's own event names (jax/_src/compiler.py, compilation_cache.py), sent through jax.monitoring.
_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_MISS_EVENT = "/jax/compilation_cache/cache_misses"


class CacheSettingError(ValueError):
    """A --compile-cache / $PPOCMA_JAX_COMPILE_CACHE value that cannot name a cache directory (one line)."""


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """$XDG_CACHE_HOME/ppocma_jax/xla, or ~/.cache/ppocma_jax/xla where XDG_CACHE_HOME is unset or empty."""
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ppocma_jax" / "xla"


def resolve_cache_dir(flag: str | None, environ: Mapping[str, str] = os.environ,
                      jax_dir: str | None = None) -> Path | None:
    """The cache directory asked for (None: off). `flag` (--compile-cache) wins over $PPOCMA_JAX_COMPILE_CACHE (an
    empty variable counts as unset), which wins over `jax_dir` (a directory JAX was already configured with, e.g.
    from JAX_COMPILATION_CACHE_DIR), which wins over `default_cache_dir`. Raises CacheSettingError for an empty
    value or one naming an existing non-directory."""
    if flag is not None:
        source, value = "--compile-cache", flag
    elif environ.get(ENV_VAR):
        source, value = ENV_VAR, environ[ENV_VAR]
    elif jax_dir:
        return Path(jax_dir)
    else:
        return default_cache_dir(environ)
    value = value.strip()
    if not value:
        raise CacheSettingError(f"{source} needs a directory or '{OFF}', got an empty value")
    if value.lower() == OFF:
        return None
    path = Path(os.path.expanduser(value))
    if path.exists() and not path.is_dir():
        raise CacheSettingError(f"{source} {value!r} is a file, not a directory (give a directory or '{OFF}')")
    return path


def _writable(directory: Path) -> str | None:
    """None when `directory` can be created and written; else why not (a few words)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
            pass
    except OSError as err:
        return err.strerror or str(err)
    return None


def configure(directory: Path | None) -> tuple[Path | None, str | None]:
    """Point JAX's persistent cache at `directory` (None: switch it off); call before the first compile of the
    process. Every program is stored, however small or quick to compile (the CLI compiles a handful). Returns
    (the directory in use or None, a one-line warning or None): an unwritable directory is a warning, and the run
    goes on uncached."""
    import jax

    warning = None
    if directory is not None:
        reason = _writable(directory)
        if reason is not None:
            warning = f"compile cache {directory} is not writable ({reason}); compiling without a cache"
            directory = None
    want = str(directory) if directory is not None else None
    if (jax.config.jax_compilation_cache_dir != want
            or jax.config.jax_enable_compilation_cache != (directory is not None)):
        jax.config.update("jax_compilation_cache_dir", want)
        jax.config.update("jax_enable_compilation_cache", directory is not None)
        _reset_jax_cache()  # a process that compiled before (e.g. tests calling the CLI in-process) opened another
    if directory is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory, warning


def _reset_jax_cache() -> None:
    """Make JAX re-read its cache settings at the next compile (it reads them once per process)."""
    try:
        from jax._src import compilation_cache
    except ImportError:  # pragma: no cover - a JAX without it reads the settings at the first compile anyway
        return
    compilation_cache.reset_cache()


@dataclass
class CacheEvents:
    """Counts JAX's persistent-cache hits and misses while active (a context manager; compiles on any thread)."""

    hits: int = 0
    misses: int = 0
    _listener: object = field(default=None, repr=False)

    def __enter__(self) -> CacheEvents:
        import jax.monitoring

        def listener(event: str, **kwargs: object) -> None:
            if event == _HIT_EVENT:
                self.hits += 1
            elif event == _MISS_EVENT:
                self.misses += 1

        self._listener = listener
        jax.monitoring.register_event_listener(listener)
        return self

    def __exit__(self, *exc: object) -> None:
        import jax.monitoring

        jax.monitoring.unregister_event_listener(self._listener)

    def describe(self, directory: Path | None) -> str:
        """What the compile did, for the "compiled in X s" line: "(from cache)", "(cold; stored in cache)",
        "(cache off)", or "" when nothing went to the cache (already compiled in this process)."""
        if directory is None:
            return "(cache off)"
        if self.misses:
            return "(cold; stored in cache)"
        if self.hits:
            return "(from cache)"
        return ""
