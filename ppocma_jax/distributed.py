"""Devices and hosts: one run's env batch, or a batch of runs, sharded over a 1-D device mesh.

    mesh = device_mesh(2)                                   # the first 2 devices, one mesh axis "devices"
    check_divisible(config.n_envs, mesh, "n_envs")          # one-line error otherwise
    shardings = state_shardings(jax.eval_shape(init, key, hp), mesh, batched=False)
    state = jax.jit(init, out_shardings=shardings)(key, hp)

Single run: the leading n_envs axis of the env carry (env states, observations, episode trackers) is split over
the devices, so each device steps its share of the envs; everything else (parameters, optimizer states, scaler,
history, PRNG key) is replicated. The program itself is unchanged: XLA's SPMD partitioner (GSPMD) inserts the
all-reduces where the learner reduces over envs (scaler statistics, advantage std, loss means) and gathers the
minibatches, so N devices compute the same numbers as one, up to the order of float sums.

Batched runs (seeds x settings): every leaf carries the run axis first, and that axis is split instead; runs never
interact, so the only communication is the per-iteration logging callback.

Hosts: `init_hosts` wraps `jax.distributed.initialize`; afterwards `jax.devices()` lists every process's devices,
the mesh spans them all, and every process runs the same program on its shards. `to_host` gathers a result on every
process; only process 0 (`is_primary`) writes files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from .config import ConfigError

AXIS = "devices"
"""The one mesh axis: envs of a single run, or runs of a batch, are split along it."""


def init_hosts(coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> None:
    """Join a multi-process (multi-host) JAX job; a no-op when no flag is given.

    Must run before anything touches a JAX backend. On CPU the collectives go through gloo (jax 0.10's default,
    set explicitly so that an environment that changed it still gets cross-process all-reduces). Under SLURM
    (or another cluster jax auto-detects) all three may be omitted: `jax.distributed.initialize()` reads them from
    the environment; pass `--coordinator-address auto` for that.
    """
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if not any(given):
        return
    if coordinator_address == "auto":
        coordinator_address = None
    elif not all(given):
        raise ConfigError("multi-host runs need --coordinator-address HOST:PORT, --num-processes N and "
                          "--process-id I together (or --coordinator-address auto on a cluster jax detects)")
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"--num-processes must be >= 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id must be in [0, {num_processes}), got {process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    except (RuntimeError, ValueError) as err:  # unreachable coordinator, auto-detection failed, ...
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"cannot join the multi-host job: {first_line}") from None


def is_primary() -> bool:
    """True on the process that writes files and prints the results (process 0; the only one without hosts)."""
    return jax.process_index() == 0


def device_mesh(n_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first `n_devices` devices (default: all, over every process).

    Auto axis types: the partitioner propagates shardings through the unchanged training program (jax 0.10's
    `make_mesh` defaults to Explicit axes, which would make every op's sharding part of its type).
    """
    available = jax.device_count()
    n = available if n_devices is None else n_devices
    if not 1 <= n <= available:
        raise ConfigError(f"--devices must be between 1 and the {available} available device(s), got {n}")
    if jax.process_count() > 1 and n != available:
        raise ConfigError(f"with several processes --devices must be all {available} devices (got {n}): every "
                          "process has to own a part of the mesh")
    return jax.make_mesh((n,), (AXIS,), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])


def mesh_size(mesh: Mesh) -> int:
    return math.prod(mesh.devices.shape)


def check_divisible(count: int, mesh: Mesh, what: str) -> None:
    """One-line ConfigError unless `count` (n_envs of one run, or the number of runs) splits evenly."""
    n = mesh_size(mesh)
    if count % n:
        raise ConfigError(f"{what}={count} is not divisible by the {n} devices; use a multiple of {n} or "
                          f"--devices with a divisor of {count}")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def split_leading(mesh: Mesh) -> NamedSharding:
    """Leading axis over the mesh, the rest whole."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def state_shardings(state: Any, mesh: Mesh, batched: bool) -> Any:
    """Shardings for a TrainState (or its `jax.eval_shape`): the run axis of every leaf when `batched`, else only
    the env carry's n_envs axis; scalars and everything else replicated."""
    lead, whole = split_leading(mesh), replicated(mesh)

    def leaf(x: Any) -> NamedSharding:
        return lead if np.ndim(x) >= 1 else whole

    if batched:
        return jax.tree.map(leaf, state)
    env = jax.tree.map(leaf, state.env)
    return jax.tree.map(lambda _: whole, state).replace(env=env)


def batch_shardings(tree: Any, mesh: Mesh) -> Any:
    """Inputs with a leading run axis (keys [R, 2], stacked HParams [R]): split that axis."""
    return jax.tree.map(lambda x: split_leading(mesh) if np.ndim(x) >= 1 else replicated(mesh), tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    return jax.tree.map(lambda _: replicated(mesh), tree)


def put(tree: Any, shardings: Any) -> Any:
    """Place host or device values with the given shardings, also across processes.

    Every process must pass the same values (as the CLI does: same flags, same seeds); each then supplies only the
    shards its own devices hold (`make_array_from_callback`), which is what a multi-process array needs.
    """
    def one(x: Any, sharding: NamedSharding) -> jax.Array:
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree, shardings)


def to_host(tree: Any) -> Any:
    """Numpy copies of every leaf, gathered from all devices and processes (every process gets the whole)."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def constrain(tree: Any, shardings: Any) -> Any:
    """Inside jit: keep `tree` laid out as `shardings` (so a compiled chunk returns its state as it received it,
    and the next chunk can take it without a re-layout)."""
    return jax.lax.with_sharding_constraint(tree, shardings)


def agree(flag: bool) -> bool:
    """Process 0's value of `flag` on every process, so that all take the same branch (a collective: every
    process must call it). Only process 0 sees the logging callback, hence the monitor's view of the run."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.bool_(flag)))


def checksum(tree: Any) -> float:
    """Sum of every float leaf, in float64 on the host: a cheap fingerprint to compare processes and runs."""
    host = to_host(tree)
    return float(sum(np.sum(np.asarray(x, np.float64)) for x in jax.tree.leaves(host)
                     if np.issubdtype(np.asarray(x).dtype, np.floating)))


class HostCheckpointer:
    """`checkpoint.Checkpointer` for one process or many: process 0 writes, every process restores.

    With several processes the state is first gathered to every host (`to_host`, a collective), then process 0
    alone saves it; on resume process 0 reads it and broadcasts it. Every method must be called by every process.
    """

    def __init__(self, run_dir: str | Path, exclusive: bool = False):
        """exclusive=True: process 0 holds the run directory's lock (runlock.py), see checkpoint.Checkpointer."""
        from .checkpoint import CHECKPOINT_DIR, Checkpointer

        self.directory = Path(run_dir).absolute() / CHECKPOINT_DIR
        self._inner = Checkpointer(run_dir, exclusive=exclusive) if is_primary() else None

    def latest_iteration(self) -> int | None:
        latest = self._inner.latest_iteration() if self._inner is not None else None
        if jax.process_count() == 1:
            return latest
        from jax.experimental import multihost_utils

        value = int(multihost_utils.broadcast_one_to_all(np.int32(-1 if latest is None else latest)))
        return None if value < 0 else value

    def restore(self, like: Any, iteration: int) -> Any:
        if jax.process_count() == 1:
            return self._inner.restore(like, iteration)
        from jax.experimental import multihost_utils

        local = (self._inner.restore(like, iteration) if self._inner is not None
                 else jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), like))
        return multihost_utils.broadcast_one_to_all(local)

    def restore_latest(self, like: Any):
        """checkpoint.Checkpointer.restore_latest on process 0, its iteration (-1: none) and state broadcast to
        every process (their `skipped` is empty: process 0 reports). A CheckpointError on process 0 is raised
        there only; the others then fail in the broadcast, as in `restore`."""
        from .checkpoint import Restored

        found = self._inner.restore_latest(like) if self._inner is not None else None
        if jax.process_count() == 1:
            return found
        from jax.experimental import multihost_utils

        iteration = int(multihost_utils.broadcast_one_to_all(
            np.int32(-1 if found is None or found.iteration is None else found.iteration)))
        if iteration < 0:
            return Restored(None, None, found.skipped if found is not None else [])
        local = (found.state if found is not None else jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), like))
        return Restored(iteration, multihost_utils.broadcast_one_to_all(local),
                        found.skipped if found is not None else [])

    def save(self, iteration: int, state: Any) -> None:
        if jax.process_count() > 1:
            state = to_host(state)
        if self._inner is not None:
            self._inner.save(iteration, state)

    def close(self, abandon: bool = False) -> None:
        if self._inner is not None:
            self._inner.close(abandon=abandon)
