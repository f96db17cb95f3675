"""A run directory: the one place that creates, locks, reads and writes a run's files.

    RUN_DIR/config.json     Config, HParams, checkpoint_every, the run plan ("runs": seeds and sweep), provenance
                            (package version, git commit, jax / jaxlib versions, devices, command line) and, after a
                            resume that changed settings, "continued"; written atomically, once per segment
    RUN_DIR/result.json     the outcome (outcome.py writes it through `RunDir.write_result`)
    RUN_DIR/summary.json    per-run and per-setting final returns of a seeds / sweep run
    RUN_DIR/.lock           the writing process's lock (runlock.py)

Every entry point goes through here: the CLI's two drivers (compiled_train.py, host_train.py) create or reopen the
directory, `Agent.save` / `Agent.load` and `python -m ppocma_jax.evaluate` read and write config.json with the
functions below, `python -m ppocma_jax.plot` reads it for its labels. Errors are one line (errors.CliError).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from .config import Config, HParams, from_jsonable, link_learning_rates
from .errors import CliError

PROG = "python -m ppocma_jax"
DEFAULT_CHECKPOINT_EVERY = 25
CONFIG_FILE = "config.json"
RESULT_FILE = "result.json"
SUMMARY_FILE = "summary.json"


# ---------------------------------------------------------------- config.json, read and written in one place
def write_json_atomic(path: Path, document: dict) -> None:
    """`document` as indented JSON at `path`, replaced atomically (a kill or a full disk leaves the old file or the
    new one, never half of one). Raises OSError; the temporary file is removed."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(document, indent=2) + "\n")
        tmp.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_document(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/config.json as a dict. Raises OSError (FileNotFoundError: none there) or ValueError."""
    document = json.loads((Path(run_dir) / CONFIG_FILE).read_text())
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return document


def load_config(run_dir: Path) -> tuple[Config, HParams, dict[str, Any]]:
    """(Config, HParams, the whole document) of a run directory; CliError (one line) when it holds none."""
    try:
        document = read_document(run_dir)
        config, hparams = from_jsonable(document)
    except FileNotFoundError:
        raise CliError(f"{str(run_dir)!r} is not a run directory: no config.json there") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise CliError(f"{str(run_dir)!r} has an unreadable config.json ({type(err).__name__}: {err})") from None
    return config, hparams, document


def run_label(run_dir: Path) -> str | None:
    """'MODE ENV (seed S)' for a plot legend, or None when the directory has no readable config.json."""
    try:
        cfg = read_document(run_dir)["config"]
        return f"{cfg['mode']} {cfg['env'].split('/')[-1]} (seed {cfg['seed']})"
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- the run plan (seeds x settings) in config.json
def plan_json(labels: list[dict[str, Any]]) -> dict[str, Any]:
    """config.json's "runs": the seeds, the swept field names and each setting's changes (learning_rate's link to
    critic_learning_rate applied, so a resume rebuilds exactly the HParams that ran)."""
    settings: dict[int, dict[str, Any]] = {}
    for label in labels:
        settings.setdefault(label["setting"], {k: v for k, v in label.items() if k not in ("setting", "seed")})
    swept = sorted({k for changes in settings.values() for k in changes})
    changes = [link_learning_rates(settings[index]) for index in sorted(settings)]
    seeds = sorted({label["seed"] for label in labels})
    return {"seeds": seeds, "swept": swept, "changes": changes}


# ---------------------------------------------------------------- provenance
def provenance(argv: Sequence[str] | None) -> dict[str, Any]:
    """What produced a run: package version, git commit (None outside a git checkout), jax / jaxlib versions, the
    devices and the exact command line."""
    import jax
    import jaxlib

    from . import __version__

    devices = jax.devices()
    return {"ppocma_jax": __version__, "git_commit": _git_commit(), "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "devices": f"{len(devices)} x {devices[0].device_kind} ({jax.default_backend()})"
                       + (f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""),
            "command": shlex.join(["python", "-m", "ppocma_jax",
                                   *(sys.argv[1:] if argv is None else list(argv))])}


def _git_commit() -> str | None:
    """HEAD of the checkout this package is imported from (None when it is installed from elsewhere)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


# ---------------------------------------------------------------- one writer per directory
def refuse_existing_run(run_dir: Path) -> None:
    """A new run never writes into a directory that already holds one (CliError, one line saying what to do)."""
    from .checkpoint import has_checkpoint
    from .distributed import is_primary

    if (run_dir / CONFIG_FILE).exists() and is_primary():  # other processes see process 0's new file
        if not has_checkpoint(run_dir):
            raise CliError(f"{str(run_dir)!r} holds a run that stopped before its first checkpoint; start it again "
                           f"with --resume {run_dir} (same settings), or choose another --out")
        raise CliError(f"{str(run_dir)!r} already holds a run; continue it with --resume {run_dir} or choose "
                       "another --out")


def lock_run_dir(run_dir: Path) -> contextlib.AbstractContextManager:
    """This process's exclusive lock on `run_dir` (runlock.py), as a context manager; a no-op on processes other
    than 0, which never write. A second writer is CliError (one line, exit 2)."""
    from .distributed import is_primary
    from .runlock import RunLock, RunLockError

    if not is_primary():
        return contextlib.nullcontext()
    try:
        lock = RunLock.acquire(run_dir)
    except RunLockError as err:
        raise CliError(str(err)) from None
    if not lock.held:
        print(f"{PROG}: note: {run_dir} is on a file system without locks: a second run writing it would not be "
              "detected", file=sys.stderr)
    return lock


class RunDir:
    """An open run directory: its path, its config.json document, and whether this process writes (process 0)."""

    def __init__(self, path: Path, document: dict[str, Any], primary: bool = True,
                 argv: Sequence[str] | None = None):
        self.path = Path(path)
        self.document = document
        self.primary = primary
        self.argv = argv  # the command line of this segment (None: sys.argv), for provenance

    @classmethod
    def create(cls, path: Path, document: dict[str, Any], held: contextlib.ExitStack,
               argv: Sequence[str] | None = None) -> RunDir:
        """A new run: make, lock (held until `held` closes) and write config.json with provenance. Processes
        other than 0 write nothing and get a read-only handle."""
        from .distributed import is_primary

        document = dict(document, provenance=provenance(argv))
        if not is_primary():
            return cls(path, document, primary=False, argv=argv)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CliError(f"cannot write the run directory {str(path)!r}: {err.strerror or err}") from None
        held.enter_context(lock_run_dir(path))
        refuse_existing_run(path)  # again, under the lock: another run may have started meanwhile
        run = cls(path, document, argv=argv)
        run.write_config()
        return run

    @classmethod
    def reopen(cls, path: Path, document: dict[str, Any], held: contextlib.ExitStack,
               argv: Sequence[str] | None = None) -> RunDir:
        """--resume: lock the directory (held until `held` closes); `document` is its config.json (load_config)."""
        from .distributed import is_primary

        held.enter_context(lock_run_dir(path))
        return cls(path, document, primary=is_primary(), argv=argv)

    @property
    def checkpoint_every(self) -> int:
        return int(self.document.get("checkpoint_every", DEFAULT_CHECKPOINT_EVERY))

    @property
    def plan(self) -> dict[str, Any] | None:
        """The seeds / sweep plan of a batched run (config.json's "runs"), None for one run."""
        return self.document.get("runs")

    def write_config(self) -> None:
        if not self.primary:
            return
        try:
            write_json_atomic(self.path / CONFIG_FILE, self.document)
        except OSError as err:
            raise CliError(f"cannot write {self.path / CONFIG_FILE}: {err.strerror or err}") from None

    def record_continuation(self, iteration: int | None, changes: dict[str, list]) -> None:
        """Settings changed on resume ({name: [old, new]}): config.json takes the new values, and its "continued"
        list records after which iteration what changed."""
        if not changes:
            return
        for name, (_, new) in changes.items():
            if name == "checkpoint_every":
                self.document["checkpoint_every"] = new
            elif name == "max_steps":
                self.document["config"]["max_steps"] = new
            else:
                self.document["hparams"][name] = new
        self.document.setdefault("continued", []).append({"after_iteration": iteration or 0, "changed": changes})
        self.write_config()

    def resume_point(self, config: Config, iteration: int | None, changes: dict[str, list]) -> bool:
        """After the restore on --resume: True when the run is already finished (say so; nothing is written, so
        result.json stays as it was). Refuses (CliError) a --max-steps below the checkpoint. Otherwise records
        the changes in config.json, removes the earlier segment's result.json / summary.json (they no longer
        describe the directory: a run stopped again must not look finished) and returns False."""
        n_iter = config.n_iterations
        if iteration is not None and iteration > n_iter:
            raise CliError(f"--max-steps {config.max_steps} is below the newest checkpoint of {self.path} (after "
                           f"iteration {iteration}, {iteration * config.iter_steps:,} env steps); give at least "
                           f"{iteration * config.iter_steps}")
        if iteration is not None and iteration >= n_iter:
            print(f"{self.path} is finished: {iteration} iterations ({iteration * config.iter_steps:,} env steps) "
                  "done; nothing to do (raise --max-steps to train further)")
            return True
        self.record_continuation(iteration, changes)
        if self.primary:
            for name in (RESULT_FILE, SUMMARY_FILE):
                with contextlib.suppress(FileNotFoundError):
                    (self.path / name).unlink()
        return False

    def restore_or_restart(self, checkpointer: Any, like: Any) -> tuple[int | None, Any]:
        """--resume: the newest readable checkpoint (iteration, state), or (None, None) when there is none: the run
        starts again from scratch in the same directory. Prints one line per damaged checkpoint skipped and one
        when restarting; a checkpoint of another configuration (or an unreadable disk) is CliError."""
        from .checkpoint import CheckpointError

        try:
            found = checkpointer.restore_latest(like)
        except CheckpointError as err:
            raise CliError(f"cannot resume {self.path}: {err}") from None
        for line in found.skipped:
            print(f"{PROG}: warning: {line}", file=sys.stderr)
        if found.iteration is None:
            print(f"{PROG}: note: {self.path} holds no readable checkpoint: starting the run again from scratch "
                  "(same settings, same seed)", file=sys.stderr)
        return found.iteration, found.state

    def write_json(self, name: str, document: dict[str, Any]) -> None:
        """RUN_DIR/name (result.json, summary.json), atomically; RunFailure (one line, exit 1) if it cannot be."""
        from .errors import RunFailure

        try:
            write_json_atomic(self.path / name, document)
        except OSError as err:
            raise RunFailure(f"cannot write {self.path / name}: {err.strerror or err}") from None
