"""A trained policy as a plain function: `make_policy(...) -> act(obs)`, and a small file that holds it.

`act` carries what acting needs and nothing of the trainer: the policy's parameters, the observation scaler of the
state it came from (forgetting it silently changes the actions: the networks were trained on scaled inputs), the
action box and the soft-clip bounds. It is a pytree (a flax struct dataclass), so it can be jitted, vmapped or
passed into a jitted function; `act(obs)` takes one observation [D] or any batch [..., D].

    act = make_policy(run_dir)                 # or make_policy(state, trainer=train), make_policy(load_run(...))
    action = jax.jit(act)(obs)                 # deterministic: the mean action (arg-max for discrete actions)
    save_policy("policy.npz", act)             # params, scaler, bounds, network spec: one .npz file
    act = load_policy("policy.npz")            # no Config, no Trainer; custom networks: networks=Networks(...)

Deterministic acting is the trainer's evaluation (evaluation.py): clip(mean) or arg-max logit, after the scaler.
Stochastic acting (`deterministic=False`) samples as the rollout does and needs a key: `act(obs, key)`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from .config import ConfigError, HParams
from .networks import Networks, custom_network
from .normalize import ScalerState
from .policy import Policy

FORMAT = "ppocma_jax-policy"
VERSION = 1
_NETWORK_FIELD = {"mean": "mean", "logvar": "logvar", "joint": "policy", "logits": "policy"}  # params key -> field


class PolicyError(ValueError):
    """A policy cannot be made, saved or loaded from what was given: one line."""


@struct.dataclass
class PolicyFn:
    """`act(obs [..., D]) -> action [..., d]` (int32 [...] for discrete actions); pure, jit-able, vmap-able.

    obs are raw observations: the run's scaler is applied inside. Stochastic policies take a key:
    `act(obs, key)` samples N(mean, sigma^2) clipped to the action box (as the rollout does)."""

    policy: Policy = struct.field(pytree_node=False)
    deterministic: bool = struct.field(pytree_node=False)
    params: Any  # the policy networks' params, {"mean", "logvar"} | {"joint"} | {"logits"}
    obs_offset: jax.Array  # [D] subtracted from the observation ...
    obs_scale: jax.Array  # [D] ... then multiplied (normalize.scaler_apply)
    sigma_min: jax.Array  # the soft-clip bounds of the log-variance (stochastic acting only)
    sigma_max_scale: jax.Array

    # jax.jit(act) keys its cache on the function object: hash by identity (the params are not hashable).
    __hash__ = object.__hash__

    def __call__(self, obs: jax.Array, key: jax.Array | None = None) -> jax.Array:
        obs = jnp.asarray(obs, jnp.float32)
        if obs.ndim == 0 or obs.shape[-1] != self.policy.obs_dim:
            raise PolicyError(f"act expects observations of shape [..., {self.policy.obs_dim}], got "
                              f"{list(obs.shape)}")
        x = (obs - self.obs_offset) * self.obs_scale
        if self.deterministic:
            return self.policy.deterministic(self.params, x)
        if key is None:
            raise PolicyError("a stochastic policy (deterministic=False) samples: call act(obs, key)")
        hp = HParams(sigma_min=self.sigma_min, sigma_max_scale=self.sigma_max_scale)
        return self.policy.sample(key, self.params, x, hp)[0]

    def save(self, path: str | Path) -> Path:
        """Write this policy to one .npz file (see save_policy)."""
        return save_policy(path, self)


def _trainer_of(obj: Any):
    from .train import Trainer

    if isinstance(obj, Trainer):
        return obj
    if isinstance(getattr(obj, "trainer", None), Trainer):  # make_train's / make_train_batched's function, a Run
        return obj.trainer
    raise PolicyError("make_policy(state) needs trainer=: the Trainer, or the function make_train returned, that "
                      f"built the state (got {type(obj).__name__})")


def _take(tree: Any, run: int | None, n_runs: int | None, what: str) -> Any:
    """sweep.select_run with this module's error class."""
    from .sweep import select_run

    try:
        return select_run(tree, run, n_runs, what)
    except ValueError as err:
        raise PolicyError(str(err)) from None


def make_policy(source: Any, deterministic: bool = True, *, trainer: Any = None, run: int | None = None,
                hparams: HParams | None = None) -> PolicyFn:
    """The policy of a run as `act(obs)` (see PolicyFn).

    source:
      - a run directory (str or Path) written by `python -m ppocma_jax` (its newest checkpoint, see runs.load_run);
      - a runs.Run (from load_run);
      - a TrainState, with trainer= the Trainer or the function make_train / make_train_batched returned.
    run: for seeds / sweeps (states with a leading run axis): which run's policy (the row of its labels / metrics).
    hparams: sigma_min and sigma_max_scale of the stochastic policy's variance bounds (a Run knows its own;
      default HParams()). The deterministic policy does not use them.
    """
    from .runs import Run, load_run
    from .train import TrainState

    if isinstance(source, (str, os.PathLike)):
        source = load_run(source)
    if isinstance(source, Run):
        if hparams is None:
            hparams = source.hparams if source.run_hparams is None else _take(source.run_hparams, run,
                                                                              source.n_runs, "run")
        return make_policy(source.state, deterministic, trainer=source.trainer, run=run, hparams=hparams)
    if not isinstance(source, TrainState):
        raise PolicyError("make_policy takes a run directory, a Run (load_run) or a TrainState, got "
                          f"{type(source).__name__}")
    policy = _trainer_of(trainer).policy
    iteration = np.asarray(source.iteration)
    state = _take(source, run, None if iteration.ndim == 0 else int(iteration.shape[0]), "state")
    hp = hparams if hparams is not None else HParams()
    if np.ndim(hp.sigma_min) or np.ndim(hp.sigma_max_scale):
        raise PolicyError("hparams holds several settings: pass the one of this run")
    scaler: ScalerState = state.scaler
    return PolicyFn(policy, bool(deterministic), state.policy_params, jnp.asarray(scaler.offset, jnp.float32),
                    jnp.asarray(scaler.scale, jnp.float32), jnp.asarray(hp.sigma_min, jnp.float32),
                    jnp.asarray(hp.sigma_max_scale, jnp.float32))


# ---------------------------------------------------------------- the file
def _spec(policy: Policy) -> dict[str, Any]:
    return {"kind": policy.kind, "obs_dim": policy.obs_dim, "action_dim": policy.action_dim,
            "action_low": policy.action_low and list(policy.action_low),
            "action_high": policy.action_high and list(policy.action_high),
            "initial_mean": policy.initial_mean and list(policy.initial_mean),
            "initial_std": policy.initial_std and list(policy.initial_std),
            "mlp": {"hidden_layers": policy.hidden_layers, "hidden_units": policy.hidden_units,
                    "activation": policy.activation, "dense_skips": policy.dense_skips,
                    "init_scheme": policy.init_scheme},
            "custom": [name for name, _ in policy.custom]}


def save_policy(path: str | Path, act: PolicyFn) -> Path:
    """Write `act` to one .npz file (no pickles): the params, the scaler, the action box, the soft-clip bounds and
    the network spec (the built-in MLP's sizes; custom networks are named, their modules are given again to
    load_policy). Written to a temporary name and renamed, so the path never holds half a file."""
    if not isinstance(act, PolicyFn):
        raise PolicyError(f"save_policy saves what make_policy returned, got {type(act).__name__}")
    path = Path(path)
    leaves = []
    arrays: dict[str, np.ndarray] = {}
    for name in sorted(act.params):
        for key_path, leaf in jax.tree_util.tree_flatten_with_path(act.params[name])[0]:
            arrays[f"leaf_{len(leaves)}"] = np.asarray(leaf)
            leaves.append([name, jax.tree_util.keystr(key_path)])
    meta = {"format": FORMAT, "version": VERSION, "policy": _spec(act.policy), "deterministic": act.deterministic,
            "leaves": leaves}
    arrays.update(meta=np.asarray(json.dumps(meta)), obs_offset=np.asarray(act.obs_offset),
                  obs_scale=np.asarray(act.obs_scale), sigma_min=np.asarray(act.sigma_min),
                  sigma_max_scale=np.asarray(act.sigma_max_scale))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise PolicyError(f"cannot write {str(path)!r}: {err.strerror or err}") from None
    return path


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise PolicyError(f"{str(path)!r}: no such file") from None
    except IsADirectoryError:
        raise PolicyError(f"{str(path)!r} is a directory, not a saved policy (a run directory? use "
                          "make_policy(run_dir))") from None
    except (OSError, ValueError, EOFError) as err:  # not a zip, truncated, pickled objects
        raise PolicyError(f"{str(path)!r} is not a saved policy ({type(err).__name__})") from None
    try:
        meta = json.loads(str(arrays["meta"]))
        if meta.get("format") != FORMAT:
            raise ValueError
    except (KeyError, ValueError, TypeError, AttributeError):
        raise PolicyError(f"{str(path)!r} is not a saved policy (an .npz file without our metadata)") from None
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise PolicyError(f"{str(path)!r} was saved in format version {meta.get('version')}; this ppocma_jax reads "
                          f"up to {VERSION}")
    return meta, arrays


def load_policy(path: str | Path, networks: Networks | None = None, deterministic: bool | None = None) -> PolicyFn:
    """A policy saved by save_policy, as `act(obs)`. Needs neither the trainer nor the training config; a policy
    trained with custom networks needs them again: `networks=Networks(mean=..., logvar=...)` (same modules).
    deterministic: None acts as saved; True / False chooses the mean action / sampling."""
    path = Path(path)
    meta, arrays = _read(path)
    try:
        spec = meta["policy"]
        tup = lambda v: None if v is None else tuple(map(float, v))  # noqa: E731
        mlp = spec["mlp"]
        policy = Policy(spec["kind"], int(spec["obs_dim"]), int(spec["action_dim"]), tup(spec["action_low"]),
                        tup(spec["action_high"]), tup(spec["initial_mean"]), tup(spec["initial_std"]),
                        int(mlp["hidden_layers"]), int(mlp["hidden_units"]), str(mlp["activation"]),
                        bool(mlp["dense_skips"]), str(mlp["init_scheme"]))
        custom_names = list(spec["custom"])
        leaves = [(str(name), str(key)) for name, key in meta["leaves"]]
        deterministic = bool(meta["deterministic"]) if deterministic is None else bool(deterministic)
    except (KeyError, TypeError, ValueError) as err:
        raise PolicyError(f"{str(path)!r} has unreadable metadata ({type(err).__name__}: {err})") from None
    if custom_names:
        fields = sorted({_NETWORK_FIELD.get(n, n) for n in custom_names})
        if networks is None or not isinstance(networks, Networks) or any(getattr(networks, f) is None
                                                                          for f in fields):
            raise PolicyError(f"{str(path)!r} holds custom networks ({', '.join(fields)}): pass them again, "
                              f"load_policy(path, networks=Networks({', '.join(f + '=...' for f in fields)}))")
        d = policy.action_dim
        custom = []
        for name in custom_names:
            field = _NETWORK_FIELD.get(name, name)
            try:
                custom.append((name, custom_network(getattr(networks, field), field, policy.obs_dim,
                                                    2 * d if name == "joint" else d, f"as saved in {path.name}")))
            except ConfigError as err:
                raise PolicyError(str(err)) from None
        policy = dataclasses.replace(policy, custom=tuple(custom))
    nets = policy.networks()
    saved = {(name, key): arrays.get(f"leaf_{i}") for i, (name, key) in enumerate(leaves)}
    params = {}
    for name, net in nets.items():
        like = jax.eval_shape(net.init, jax.random.PRNGKey(0))
        flat, treedef = jax.tree_util.tree_flatten_with_path(like)
        values = []
        for key_path, leaf in flat:
            value = saved.pop((name, jax.tree_util.keystr(key_path)), None)
            if value is None or value.shape != leaf.shape:
                got = "is missing" if value is None else f"has shape {list(value.shape)}"
                raise PolicyError(f"{str(path)!r} does not match its network: {name}{jax.tree_util.keystr(key_path)}"
                                  f" {got}, expected {list(leaf.shape)}")
            values.append(jnp.asarray(value, leaf.dtype))
        params[name] = jax.tree_util.tree_unflatten(treedef, values)
    if saved:
        name, key = next(iter(saved))
        raise PolicyError(f"{str(path)!r} does not match its network: {name}{key} is not a parameter of it")
    try:
        return PolicyFn(policy, deterministic, params, jnp.asarray(arrays["obs_offset"], jnp.float32),
                        jnp.asarray(arrays["obs_scale"], jnp.float32), jnp.asarray(arrays["sigma_min"], jnp.float32),
                        jnp.asarray(arrays["sigma_max_scale"], jnp.float32))
    except KeyError as err:
        raise PolicyError(f"{str(path)!r} lacks {err.args[0]}") from None
