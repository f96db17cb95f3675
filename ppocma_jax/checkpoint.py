"""Checkpoints of the complete TrainState: written atomically, verified on restore, never left half-written.

A checkpoint holds everything `Trainer.iteration` reads: every network's parameters, every Adam state, the
observation scaler, the PPO-CMA history buffer, the env states and current observations, the episode trackers,
the PRNG key and the counters. Restoring one and continuing gives the same run as never stopping.

Layout: RUN_DIR/checkpoints/<iteration>/ holds orbax's `default/` item and `commit_success.txt` (the layout orbax's
CheckpointManager wrote, so older run directories restore unchanged). Only all-digit folder names are checkpoints.

How a save stays safe (`Checkpointer.save`):
- the state is copied to the host, then written by orbax into a staging folder `<iteration>.saving-<host>-<pid>-
  <token>` and renamed to `<iteration>` only once complete, so a kill at any moment leaves every existing
  checkpoint readable;
- saving an iteration that already exists (a NaN halt right after a checkpoint, resuming a halted run) replaces it:
  the old folder is moved away only after the new one is complete, then deleted. This is sound whether or not the
  two states are equal, unlike skipping the save (which would trust that equal iterations mean equal states);
- a full disk (ENOSPC, EDQUOT, tensorstore's RESOURCE_EXHAUSTED) raises `CheckpointNoSpaceError` in one line; the
  partial staging folder is removed and the previous checkpoints are kept;
- the write runs in a worker thread while the caller waits interruptibly: Ctrl-C (KeyboardInterrupt, or any
  exception a signal handler raises) abandons it at once: the staging folder is removed (by the worker when it
  ends, or at the next open if the process exits first) and the previous checkpoints stay intact.

How a restore stays safe (`Checkpointer.restore_latest`): each checkpoint, newest first, is restored completely;
a damaged one (deleted or truncated data file, missing `_METADATA`, truncated `manifest.ocdbt`, ...) is skipped
with a one-line reason and moved aside to `<iteration>.damaged`, so it blocks no later save. A checkpoint whose
tree does not match the expected state (another configuration or TrainState layout) is not damage: it raises
`CheckpointMismatchError` and nothing is moved. Stale temporary folders (a killed writer's) are cleaned on open.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import threading
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

CHECKPOINT_DIR = "checkpoints"
ITEM = "default"  # orbax's item folder inside each step (as CheckpointManager named it)
COMMIT_FILE = "commit_success.txt"  # written last, just before the rename that publishes a checkpoint
DAMAGED_SUFFIX = ".damaged"

_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]  # the writer's host, in staging names
_STAGING = re.compile(r"^(\d+)\.saving-([0-9a-f]+)-(\d+)-([0-9a-f]+)$")  # a write in progress (or abandoned)
_REPLACED = re.compile(r"^(\d+)\.replaced-([0-9a-f]+)-(\d+)-([0-9a-f]+)$")  # the old copy during an overwrite
_ORBAX_TMP = ".orbax-checkpoint-tmp"  # orbax's own temporary names (CheckpointManager's, from older versions)
_LIVE_TOKENS: set[str] = set()  # tokens of this process's writes still running: their folders are not stale

# Errors that say the machine, not the checkpoint, is at fault: never a reason to skip or move a checkpoint.
_ENVIRONMENT_MARKERS = ("RESOURCE_EXHAUSTED", "PERMISSION_DENIED", "UNAVAILABLE", "DEADLINE_EXCEEDED",
                        "Permission denied", "Too many open files", "Out of memory", "out of memory")
_NO_SPACE_MARKERS = ("No space left on device", "Disk quota exceeded", "os_error_code='28'",
                     "os_error_code='122'")


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read, phrased as one line (the original error is its __cause__)."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint whose arrays do not match the expected state (another configuration or layout)."""


class CheckpointNoSpaceError(CheckpointError):
    """The disk (or quota) filled up during a save; the partial write is removed, older checkpoints are kept."""

    errno = errno.ENOSPC


class Restored(NamedTuple):
    """What `restore_latest` found: the newest checkpoint that restores completely.

    iteration: its iteration, or None when no checkpoint is readable (then `state` is None too: the caller
      restarts from scratch in the same directory);
    state: the restored state (numpy leaves in the structure of `like`);
    skipped: one line per newer checkpoint that was skipped, saying why (for the caller to print)."""

    iteration: int | None
    state: Any
    skipped: list[str]


class _OwnWriteFilter(logging.Filter):
    """Drops orbax's error logs (with tracebacks, from its worker threads) about this process's own writes: a
    failed write is reported by `save` as one line, and an abandoned one by the caller's Ctrl-C."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return f".saving-{_HOST}-{os.getpid()}-" not in record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to judge
            return True


_FILTER = _OwnWriteFilter()
_HOOK_INSTALLED = False


def _late_loop_callback(unraisable: Any) -> bool:
    """Is this tensorstore's late callback into an event loop orbax already closed? When one read of a damaged
    checkpoint fails, orbax's `run_sync` closes its loop while the other reads are still in flight; each of them
    then reports `RuntimeError: Event loop is closed` from `call_soon_threadsafe` as an unraisable exception, a
    traceback apiece (dozens per damaged checkpoint). The failure itself was already reported."""
    err, tb = unraisable.exc_value, unraisable.exc_traceback
    if not isinstance(err, RuntimeError) or str(err) != "Event loop is closed":
        return False
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "call_soon_threadsafe":
            return True
        tb = tb.tb_next
    return False


def _install_unraisable_filter() -> None:
    global _HOOK_INSTALLED
    if _HOOK_INSTALLED:
        return
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not _late_loop_callback(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook
    _HOOK_INSTALLED = True


def _quiet_orbax() -> None:
    # orbax logs every save at INFO/WARNING through absl; the run's own progress lines say what matters.
    for name in ("absl", "orbax"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.ERROR)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    _install_unraisable_filter()


def _first_line(err: BaseException, limit: int = 160) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _chain(err: BaseException) -> list[BaseException]:
    seen = []
    while err is not None and err not in seen and len(seen) < 8:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def is_no_space(err: BaseException) -> bool:
    """True when `err` (or its cause) says the disk or the quota is full."""
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(marker in str(e) for marker in _NO_SPACE_MARKERS):
            return True
    return False


def _is_environmental(err: BaseException) -> bool:
    return (isinstance(err, (PermissionError, MemoryError)) or is_no_space(err)
            or any(marker in str(err) for marker in _ENVIRONMENT_MARKERS))


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _owner_alive(host: str, pid: int, token: str) -> bool:
    """Is the process that named a temporary folder (possibly) still writing it?"""
    if host != _HOST:
        return True  # another machine on a shared file system: cannot tell, so leave it alone
    if pid == os.getpid():
        return token in _LIVE_TOKENS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        return True
    return True


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _flat_layout(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """{"a.b.0.w": (shape, dtype)} for every array leaf of a pytree or of orbax's metadata tree."""
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
    return {".".join(_key_name(k) for k in path): (tuple(int(d) for d in leaf.shape), str(np.dtype(leaf.dtype)))
            for path, leaf in leaves}


def _layout_difference(saved: dict, expected: dict) -> str | None:
    """One phrase naming the first difference between two flat layouts, or None when they match."""
    for name in sorted(set(saved) | set(expected)):
        if name not in saved:
            return f"{name} is missing from it"
        if name not in expected:
            return f"it holds {name}, which this state does not have"
        if saved[name] != expected[name]:
            (s_shape, s_dtype), (e_shape, e_dtype) = saved[name], expected[name]
            return f"{name} is {s_dtype}{list(s_shape)} in it, {e_dtype}{list(e_shape)} here"
    return None


class _Damaged(Exception):
    """Internal: this checkpoint cannot be read back completely (the reason is the message)."""


class _SaveJob:
    """One checkpoint write, run in a worker thread: orbax into a staging folder, then the publishing rename."""

    def __init__(self, directory: Path, step: int, host_state: Any, multiprocessing_options: Any):
        self.token = secrets.token_hex(4)
        self.final = directory / str(step)
        self.staging = directory / f"{step}.saving-{_HOST}-{os.getpid()}-{self.token}"
        self._state = host_state
        self._mp = multiprocessing_options
        self._lock = threading.Lock()
        self.done = threading.Event()
        self.abandoned = False
        self.published = False
        self.error: BaseException | None = None
        _LIVE_TOKENS.add(self.token)

    def run(self) -> None:
        import orbax.checkpoint as ocp

        try:
            self.staging.mkdir()
            kwargs = {} if self._mp is None else {"multiprocessing_options": self._mp}
            writer = ocp.Checkpointer(ocp.StandardCheckpointHandler(), **kwargs)
            try:
                writer.save(self.staging / ITEM, args=ocp.args.StandardSave(self._state))
            finally:
                writer.close()
            (self.staging / COMMIT_FILE).write_text(f"checkpoint {self.final.name} complete\n")
            with self._lock:
                if not self.abandoned:
                    _publish(self.staging, self.final, self.token)
                    self.published = True
        except BaseException as err:  # reported to the waiting caller (a worker thread must not print)
            self.error = err
        finally:
            self._state = None
            if not self.published:
                _rmtree(self.staging)
            _LIVE_TOKENS.discard(self.token)
            self.done.set()

    def abandon(self) -> None:
        """Stop caring about this write: it will not be published, and its staging folder goes (now, as far as
        possible while the worker may still be writing; the worker removes the rest when it ends)."""
        with self._lock:
            self.abandoned = True
            published = self.published
        if not published:
            _rmtree(self.staging)


def _publish(staging: Path, final: Path, token: str) -> None:
    """Rename a complete staging folder to its checkpoint name, replacing an existing checkpoint of that iteration
    only now that the new one is complete (a kill between the renames is repaired by `clean_stale`)."""
    if final.exists():
        old = final.with_name(f"{final.name}.replaced-{_HOST}-{os.getpid()}-{token}")
        final.rename(old)
        staging.rename(final)
        _rmtree(old)
    else:
        staging.rename(final)


class Checkpointer:
    """Save / restore TrainStates under RUN_DIR/checkpoints/<iteration>/, keeping the newest `keep`.

    exclusive=True: the caller holds the run directory's lock (runlock.RunLock), so every temporary folder in it
    is stale and is cleaned on open; otherwise only those whose writing process is gone (same host) are.
    Use as a context manager to close on exit (abandoning an in-flight write on KeyboardInterrupt).
    """

    def __init__(self, run_dir: str | Path, keep: int = 2, exclusive: bool = False):
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be a positive integer, got {keep!r}")
        _quiet_orbax()
        self.directory = Path(run_dir).absolute() / CHECKPOINT_DIR
        self.keep = keep
        self.exclusive = exclusive
        self._reader = None
        self._pending: _SaveJob | None = None  # an abandoned write whose worker may still be running
        self._mp = None
        if jax.process_count() > 1:  # multi-host: process 0 alone writes (distributed.HostCheckpointer)
            import orbax.checkpoint as ocp

            self._mp = ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
        self.cleaned: list[str] = self.clean_stale()  # what the clean-up did, one line each

    # ---------------------------------------------------------------- listing
    def steps(self) -> list[int]:
        """Iterations with a checkpoint folder, ascending (not verified: see restore_latest)."""
        try:
            return sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit() and p.is_dir())
        except FileNotFoundError:
            return []

    def latest_iteration(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def clean_stale(self) -> list[str]:
        """Remove what killed or abandoned writes left behind; finish an overwrite that was cut between its two
        renames. Returns one line per action. Never touches a write whose process may still be running."""
        notes: list[str] = []
        try:
            entries = sorted(self.directory.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return notes
        # complete staging folders first: a kill between an overwrite's renames left the step missing
        for pattern in (_STAGING, _REPLACED):
            for entry in entries:
                match = pattern.match(entry.name)
                if match is None or not entry.exists():
                    continue
                step, host, pid, token = match.group(1), match.group(2), int(match.group(3)), match.group(4)
                if not self.exclusive and _owner_alive(host, pid, token):
                    continue
                final = self.directory / step
                complete = pattern is _REPLACED or (entry / COMMIT_FILE).exists()
                try:
                    if complete and not final.exists():
                        entry.rename(final)
                        notes.append(f"recovered checkpoint {step} from an interrupted overwrite")
                        continue
                except OSError:
                    pass
                _rmtree(entry)
                notes.append(f"removed the unfinished checkpoint write {entry.name}")
        for entry in entries:
            if _ORBAX_TMP in entry.name and entry.exists():
                _rmtree(entry)
                notes.append(f"removed the unfinished checkpoint write {entry.name}")
        return notes

    # ---------------------------------------------------------------- saving
    def save(self, iteration: int, state: Any) -> None:
        """Write `state` as checkpoint `iteration` and wait until it is complete on disk.

        Replaces an existing checkpoint of that iteration; removes checkpoints of later iterations (the newest
        save is the run's present) and all but the newest `keep`. Raises CheckpointNoSpaceError / CheckpointError
        (one line) when the write fails, with nothing partial left. An exception raised while waiting (Ctrl-C)
        abandons the write and propagates: the previous checkpoints stay as they were."""
        self._wait_pending()
        step = int(iteration)
        final = self.directory / str(step)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _write_error(err, final) from err
        host_state = jax.device_get(state)  # device buffers are not touched once this returns (donation-safe)
        job = _SaveJob(self.directory, step, host_state, self._mp)
        del host_state
        worker = threading.Thread(target=job.run, name=f"checkpoint-{step}", daemon=True)
        worker.start()
        try:
            while not job.done.wait(1.0):  # interruptible: Ctrl-C reaches the main thread at once
                pass
        except BaseException:
            job.abandon()
            self._pending = job
            raise
        if job.error is not None:
            raise _write_error(job.error, final) from job.error
        self._prune(step)

    def _wait_pending(self) -> None:
        job, self._pending = self._pending, None
        if job is not None:
            try:
                while not job.done.wait(1.0):
                    pass
            except BaseException:
                self._pending = job
                raise

    def _prune(self, step: int) -> None:
        steps = self.steps()
        older = [s for s in steps if s < step]
        for s in [s for s in steps if s > step] + older[: max(0, len(older) - (self.keep - 1))]:
            _rmtree(self.directory / str(s))

    # ---------------------------------------------------------------- restoring
    def _orbax_reader(self):
        if self._reader is None:
            import orbax.checkpoint as ocp

            kwargs = {} if self._mp is None else {"multiprocessing_options": self._mp}
            self._reader = ocp.Checkpointer(ocp.StandardCheckpointHandler(), **kwargs)
        return self._reader

    def _restore_step(self, step: int, like: Any) -> Any:
        """Restore checkpoint `step` completely. Raises _Damaged (why), CheckpointMismatchError, CheckpointError."""
        import orbax.checkpoint as ocp

        path = self.directory / str(step) / ITEM
        if not path.is_dir():
            raise _Damaged(f"its {ITEM}/ folder is missing")
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), like)
        reader = self._orbax_reader()
        try:
            metadata = reader.metadata(path).item_metadata
            saved = None if metadata is None else _flat_layout(metadata.tree)
        except Exception as err:  # noqa: BLE001 - any failure to read the tree description
            if _is_environmental(err):
                raise CheckpointError(f"cannot read checkpoint {step} in {self.directory}: "
                                      f"{_first_line(err)}") from err
            raise _Damaged(f"its metadata is unreadable ({_first_line(err)})") from err
        if saved is None:
            raise _Damaged("its metadata (_METADATA or the array index) is missing or unreadable")
        difference = _layout_difference(saved, _flat_layout(abstract))
        if difference is not None:
            raise CheckpointMismatchError(f"checkpoint {step} in {self.directory} does not match this "
                                          f"configuration: {difference}")
        try:
            return reader.restore(path, args=ocp.args.StandardRestore(abstract))
        except Exception as err:  # noqa: BLE001 - tensorstore reports damage as ValueError / Exception
            if _is_environmental(err):
                raise CheckpointError(f"cannot read checkpoint {step} in {self.directory}: "
                                      f"{_first_line(err)}") from err
            raise _Damaged(_first_line(err)) from err

    def restore(self, like: Any, iteration: int | None = None) -> Any:
        """Restore checkpoint `iteration` (default: the newest) into the structure of `like` (a TrainState or its
        jax.eval_shape). Raises FileNotFoundError (none), CheckpointError (damaged: one line) or
        CheckpointMismatchError. No fallback: `restore_latest` is the one that skips damaged checkpoints."""
        iteration = self.latest_iteration() if iteration is None else int(iteration)
        if iteration is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if not (self.directory / str(iteration)).is_dir():
            raise FileNotFoundError(f"no checkpoint {iteration} in {self.directory}")
        try:
            return self._restore_step(iteration, like)
        except _Damaged as err:
            raise CheckpointError(f"checkpoint {iteration} in {self.directory} is damaged: {err}") from err

    def restore_latest(self, like: Any, repair: bool = True) -> Restored:
        """The newest checkpoint that restores completely, skipping damaged ones (see Restored).

        repair=True (the writer resuming): each damaged checkpoint is moved aside to <iteration>.damaged, so it
        blocks no later save; repair=False (a reader) leaves the folder alone. CheckpointMismatchError and
        CheckpointError (the machine, e.g. out of memory) propagate: neither says the checkpoint is damaged."""
        skipped: list[str] = []
        for step in reversed(self.steps()):
            try:
                return Restored(step, self._restore_step(step, like), skipped)
            except _Damaged as err:
                reason = f"checkpoint {step} is damaged ({err})"
                if repair:
                    reason += self._move_aside(step)
                skipped.append(reason)
        return Restored(None, None, skipped)

    def _move_aside(self, step: int) -> str:
        source = self.directory / str(step)
        target = self.directory / f"{step}{DAMAGED_SUFFIX}"
        try:
            if target.exists():
                _rmtree(target)
            source.rename(target)
        except OSError as err:
            return f"; could not move it aside: {err.strerror or err}"
        return f"; moved to {CHECKPOINT_DIR}/{target.name}"

    # ---------------------------------------------------------------- closing
    def close(self, abandon: bool = False) -> None:
        """Release orbax's resources. An abandoned write still running is waited for (interruptibly) unless
        abandon=True; then nothing waits, and what the write leaves is cleaned at the next open. To leave the
        process at once with a write still in flight, end it with os._exit (as `python -m ppocma_jax` does after a
        second Ctrl-C): a normal interpreter exit tears down under the storage library's running threads, which
        can abort the process ("terminate called without an active exception")."""
        if not abandon:
            self._wait_pending()
        if self._reader is not None:
            reader, self._reader = self._reader, None
            if not abandon:
                reader.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(abandon=exc_type is not None and not issubclass(exc_type, Exception))


def _write_error(err: BaseException, path: Path) -> CheckpointError:
    if is_no_space(err):
        return CheckpointNoSpaceError(f"no space left on device writing {path}")
    if isinstance(err, OSError) and err.strerror:
        return CheckpointError(f"cannot write {path}: {err.strerror}")
    return CheckpointError(f"cannot write {path}: {_first_line(err)}")


def has_checkpoint(run_dir: str | Path) -> bool:
    directory = Path(run_dir) / CHECKPOINT_DIR
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())
