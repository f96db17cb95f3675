"""JAX's persistent compilation cache for the command line: where it lives, switching it on, and whether a compile
was served from it.

A run compiles its training chunk once per process (20-60 s for a brax env on a CPU). The cache keeps the compiled
executable on disk, keyed by the program and the compiler's options, so the next run of the same configuration
(a repeat, a `--resume`, a test) loads it instead. JAX never stores a program that calls back to the host, which is
why the CLI's compiled chunk returns its metrics rather than printing them from inside (compiled_train.py).

Where: `--compile-cache DIR`, else $PPOCMA_JAX_COMPILE_CACHE, else a directory JAX was already given
(JAX_COMPILATION_CACHE_DIR), else $XDG_CACHE_HOME/ppocma_jax/xla (~/.cache/ppocma_jax/xla). `off` switches it off.
The directory may be deleted at any time; it is not pruned (entries are a few MB each).

Two layers. JAX's own cache (keyed by the lowered program) still costs the Python tracing and lowering of the whole
training loop before it can look anything up: seconds for a large program. So the CLI's programs (the
initialisation, the training chunk and the evaluation) are also kept traced and lowered (`ProgramStore`, via
jax.export), keyed by everything that decides them without tracing: the name, the configuration and the arguments'
shapes, dtypes and layouts, this package's source, the installed packages' versions, JAX's settings, XLA_FLAGS
and the devices. A loaded program checks its arguments' shapes when called. What the key cannot see is a
dependency's code edited in place without a version change: after such an edit, delete the directory (or run with
--compile-cache off). Nor can it see the code of an env given by a factory (`--env module:factory`), the user's own
and edited between runs: the CLI keeps no traced programs of such a run (compiled_train.py).

The cache directory is trusted like JAX's own: loading an entry runs code from it. Do not share it with users you
do not trust.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import os
import pickle
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .stopping import Background

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


# ---------------------------------------------------------------- serialized executables
_PACKAGE_DIR = Path(__file__).resolve().parent
_SETTINGS_NOT_IN_PROGRAMS = ("cache", "explain_", "log_compiles")  # JAX settings that change no compiled program


def _environment_digest() -> str:
    """What decides a program besides the caller's key: this package's source, every installed package's version,
    JAX's settings (cache settings aside), XLA_FLAGS, and the devices and processes."""
    import importlib.metadata

    import jax

    digest = hashlib.sha256()
    for path in sorted(_PACKAGE_DIR.rglob("*.py")):
        digest.update(str(path.relative_to(_PACKAGE_DIR)).encode() + b"\0" + path.read_bytes() + b"\0")
    versions = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())
    settings = sorted(f"{k}={v!r}" for k, v in jax.config.values.items()
                      if not any(word in k for word in _SETTINGS_NOT_IN_PROGRAMS))
    devices = [(d.id, d.platform, d.device_kind, d.process_index) for d in jax.devices()]
    backend = jax.devices()[0].client
    digest.update(repr((versions, settings, os.environ.get("XLA_FLAGS", ""), os.environ.get("LIBTPU_INIT_ARGS", ""),
                        devices, backend.platform_version, jax.process_count(), jax.process_index())).encode())
    return digest.hexdigest()


def describe_arguments(args: Any) -> str:
    """The shapes, dtypes and layouts of a pytree of arrays (and its structure): the arguments' part of a key."""
    import jax

    leaves, tree = jax.tree.flatten(args)
    return repr(tree) + repr([(tuple(x.shape), str(x.dtype), repr(getattr(x, "sharding", None))) for x in leaves])


class ProgramStore:
    """Traced programs on disk, DIRECTORY/programs/NAME-KEY.bin (the pickled jax.export.Exported of the
    lowered program, with the output's tree structure), so that a later run skips the Python tracing and lowering; the
    compile itself then hits JAX's persistent cache. A damaged or unloadable entry is traced again and replaced; a
    failed write only costs the next run a trace; a program that cannot be exported is compiled as usual. Several
    processes (multi-host) skip it and use JAX's cache alone."""

    def __init__(self, directory: Path | None):
        import jax

        self.directory = directory / "programs" if directory is not None and jax.process_count() == 1 else None
        self._environment: str | None = None

    def key(self, name: str, key: str) -> str:
        if self._environment is None:
            self._environment = _environment_digest()
        return hashlib.sha256(f"{name}\0{key}\0{self._environment}".encode()).hexdigest()[:40]

    def compile(self, name: str, key: str, fn: Callable[..., Any], args: tuple, donate_first: bool = False
                ) -> Callable[..., Any]:
        """`fn(*args)` compiled for `args` (a tuple of pytrees of arrays), as jax.jit(fn, donate_argnums=0 if
        `donate_first`).lower(*args).compile() would, returned as a callable on such arguments. `key` must name
        everything `fn` depends on beyond the environment and the arguments' shapes, dtypes and layouts (which are
        added): the configuration, static sizes."""
        import jax

        def plain() -> Callable[..., Any]:
            return jax.jit(fn, donate_argnums=(0,) if donate_first else ()).lower(*args).compile()

        leaves, in_tree = jax.tree.flatten(args)
        donate = tuple(range(len(jax.tree.leaves(args[0])))) if donate_first else ()
        if self.directory is None:
            return plain()
        path = self.directory / f"{name}-{self.key(name, key + describe_arguments(args))}.bin"
        found = self._load(path)
        if found is None:
            out_tree: list = []

            def flat(*xs):
                out_leaves, tree = jax.tree.flatten(fn(*jax.tree.unflatten(in_tree, xs)))
                out_tree.append(tree)
                return out_leaves

            try:
                exported = jax.export.export(jax.jit(flat))(*leaves)
            except Exception:  # noqa: BLE001 - not exportable (e.g. a custom call jax.export refuses): no store
                return plain()
            found = exported, out_tree[-1]
            self._store(path, exported, out_tree[-1])
        exported, tree = found
        try:
            compiled_flat = jax.jit(exported.call, donate_argnums=donate).lower(*leaves).compile()
        except Exception:  # noqa: BLE001 - an entry these arguments cannot call (a key too coarse): drop it
            path.unlink(missing_ok=True)
            return plain()

        def call(*call_args):
            return jax.tree.unflatten(tree, compiled_flat(*jax.tree.leaves(call_args)))

        return call

    @staticmethod
    def _load(path: Path) -> Any:
        import jax.export

        try:
            exported, tree = pickle.loads(path.read_bytes())
            if not isinstance(exported, jax.export.Exported):
                return None
            return exported, tree
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - a damaged or foreign entry: trace again and replace it
            return None

    @staticmethod
    def _store(path: Path, exported: Any, tree: Any) -> bool:
        tmp = None
        try:
            # pickled rather than Exported.serialize(), which needs the flatbuffers package; the VJP rule (a
            # closure, never used here: the CLI does not differentiate its programs) is left out
            payload = pickle.dumps((dataclasses.replace(exported, _get_vjp=None), tree))
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as fh:
                tmp = Path(fh.name)
                fh.write(payload)
            tmp.replace(path)  # atomic: concurrent runs (test workers) read a whole entry or none
            return True
        except Exception:  # noqa: BLE001 - unserializable or unwritable: the next run traces again
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            return False


# ---------------------------------------------------------------- compiling beside the run
_RUNNING: set[BackgroundCompile] = set()  # background compiles not yet finished (see compiling_in_background)


class BackgroundCompile(Background):
    """`work()` (a `ProgramStore.compile` of a program needed later, e.g. the evaluation) on a daemon thread, so
    that it loads or compiles while the run goes on; `result()` waits for it (stopping.Background). Counted by
    `compiling_in_background` until it ends."""

    def __init__(self, work: Callable[[], Any], name: str):
        def tracked() -> Any:
            try:
                return work()
            finally:
                _RUNNING.discard(self)

        _RUNNING.add(self)
        super().__init__(tracked, f"compile-{name}")


def compiling_in_background() -> bool:
    """Whether a BackgroundCompile is still running: a process leaving now should leave with os._exit (__main__),
    since a compiler thread still at work while the interpreter shuts down can crash the exit."""
    return bool(_RUNNING)


@atexit.register
def _let_background_compiles_finish(timeout_s: float = 120.0) -> None:
    """At a normal interpreter exit (a notebook, a test session that called the CLI in-process; the CLI itself
    leaves with os._exit instead), wait for running background compiles, up to `timeout_s` in all, so that no
    compiler thread is still at work while the interpreter finalizes."""
    deadline = time.perf_counter() + timeout_s
    for job in list(_RUNNING):
        job.join(max(0.0, deadline - time.perf_counter()))
