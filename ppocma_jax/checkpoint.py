"""Checkpoints of the complete TrainState with orbax, written atomically.

A checkpoint holds everything `Trainer.iteration` reads: every network's parameters, every Adam state, the
observation scaler, the PPO-CMA history buffer, the env states and current observations, the episode trackers,
the PRNG key and the counters. Restoring one and continuing gives the same run as never stopping.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a kill at any moment leaves
the previous checkpoint readable; `latest_step` only ever sees finished ones.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax

CHECKPOINT_DIR = "checkpoints"


def _quiet_orbax() -> None:
    # orbax logs every save at INFO/WARNING through absl; the run's own progress lines say what matters.
    for name in ("absl", "orbax"):
        logging.getLogger(name).setLevel(logging.ERROR)


class Checkpointer:
    """Save / restore TrainStates under RUN_DIR/checkpoints/<iteration>/, keeping the newest `keep`."""

    def __init__(self, run_dir: str | Path, keep: int = 2):
        import orbax.checkpoint as ocp

        _quiet_orbax()
        self._ocp = ocp
        self.directory = Path(run_dir).absolute() / CHECKPOINT_DIR
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        if jax.process_count() > 1:  # multi-host: process 0 alone writes (distributed.HostCheckpointer)
            self.directory.mkdir(parents=True, exist_ok=True)  # orbax cannot create it with active_processes
            options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=False,
                                                   multiprocessing_options=ocp.options.MultiprocessingOptions(
                                                       primary_host=0, active_processes={0}))
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, iteration: int, state: Any) -> None:
        """Write `state` as checkpoint `iteration` and wait until it is complete on disk."""
        self._manager.save(int(iteration), args=self._ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()

    def latest_iteration(self) -> int | None:
        self._manager.reload()
        return self._manager.latest_step()

    def restore(self, like: Any, iteration: int | None = None) -> Any:
        """Restore into the structure of `like` (a TrainState or its jax.eval_shape)."""
        iteration = self.latest_iteration() if iteration is None else iteration
        if iteration is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), like)
        return self._manager.restore(int(iteration), args=self._ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self._manager.close()


def has_checkpoint(run_dir: str | Path) -> bool:
    directory = Path(run_dir) / CHECKPOINT_DIR
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())
