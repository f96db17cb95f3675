"""Will a configuration fit in this machine's memory? A check on the host, before anything is compiled.

Without it an absurd size fails late and badly: `hidden_units=1e10` ends in a NotImplementedError traceback from
XLA, `hidden_units=1e6` (4 TB of weights) hangs inside XLA. `check_fits(config, spec)` estimates, in bytes, what
one run must hold at once and raises ConfigError (one line, naming the setting that drives the largest part) when
that cannot fit in the memory available to the backend that will run it.

The estimate is meant as a lower bound, not a prediction: it counts only arrays the program holds at the same time
(float32, 4 bytes each), so it rejects configurations that cannot fit and lets XLA judge the borderline ones:
- parameters: every network (policy mean/log-variance or joint/logits, critic; widths from networks.MLP with its
  dense skips) x 3 (weights and two Adam moments), twice (the NaN guard in Trainer.run selects between the old
  and the new state, so both exist), plus the gradient of the largest network (one network trains at a time);
- history: PPO-CMA's buffer [H, samples_per_iter, obs + action + advantage], twice (old and new state);
- rollout: the iteration's transitions [T, n_envs, 2 obs + action + 4 scalars], plus the critic's inputs at every
  state and successor [2, T, n_envs, obs + 1];
- activations: the widest pass through a network: a forward pass over the largest batch any pass evaluates at
  once (all samples of the iteration, or PPO-CMA's variance pass drawing n_updates x minibatch up front), or a
  minibatch's forward pass kept for its backward pass plus the gradients; per sample, the input, every hidden
  layer's activation and the output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .config import Config, ConfigError
from .envs.base import EnvSpec

GIB = 2 ** 30
FLOAT_BYTES = 4  # float32 everywhere in the compiled program
TRANSITION_SCALARS = 4  # reward, terminated, truncated, time index


@dataclass(frozen=True)
class MemoryEstimate:
    """Lower bounds, in bytes, of what one compiled iteration holds at once (see the module docstring)."""

    parameters: int
    history: int
    rollout: int
    activations: int

    @property
    def total(self) -> int:
        return self.parameters + self.history + self.rollout + self.activations

    def scaled(self, runs: int) -> MemoryEstimate:
        return MemoryEstimate(self.parameters * runs, self.history * runs, self.rollout * runs,
                              self.activations * runs)


def _networks(config: Config, spec: EnvSpec) -> list:
    """Every MLP a run trains: the policy's network(s) and the critic (obs + time feature -> value)."""
    from .networks import MLP
    from .policy import Policy

    nets = list(Policy.from_config(config, spec).networks().values())
    nets.append(MLP(spec.obs_dim + 1, 1, config.hidden_layers, config.hidden_units, config.activation,
                    config.dense_skips, config.init))
    return nets


def _n_params(net) -> int:
    return sum(fan_in * units + units for fan_in, units in net.layer_dims())


def _activation_width(net) -> int:
    """Floats per sample a forward pass must keep for the backward pass: the input, each hidden layer's
    activation and the output (dense skips' concatenations are copies of these, which XLA may avoid)."""
    return net.in_dim + net.hidden_layers * net.hidden_units + net.out_dim


def _widest_batch(config: Config) -> int:
    """The most samples one forward pass evaluates at once (the minibatch steps' batches are never wider)."""
    widest = max(config.samples_per_iter, config.minibatch_size)
    if config.is_cma:  # the variance pass evaluates the mean net on all its minibatches in one forward
        widest = max(widest, config.n_updates * config.minibatch_size)
    return widest


def estimate_memory(config: Config, spec: EnvSpec) -> MemoryEstimate:
    """Lower bounds of one run's memory, in bytes (Python integers: no overflow for absurd sizes)."""
    nets = _networks(config, spec)
    sizes = [_n_params(net) for net in nets]
    parameters = (2 * 3 * sum(sizes) + max(sizes)) * FLOAT_BYTES
    samples = config.samples_per_iter
    obs, act = spec.obs_dim, (1 if spec.discrete else spec.action_dim)
    history = 0
    if config.is_cma:
        history = 2 * config.history_buffer_size * samples * (obs + act + 1) * FLOAT_BYTES
    rollout = samples * (2 * obs + act + TRANSITION_SCALARS) * FLOAT_BYTES + 2 * samples * (obs + 1) * FLOAT_BYTES
    width = max(_activation_width(net) for net in nets)
    activations = max(_widest_batch(config), 2 * config.minibatch_size) * width * FLOAT_BYTES
    return MemoryEstimate(parameters, history, rollout, activations)


# ---------------------------------------------------------------- what the machine has
def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except (OSError, ValueError):
        return None
    return int(text) if text.isdigit() else None


def host_memory_available() -> int | None:
    """Bytes this process may still allocate on the host: MemAvailable, capped by a cgroup memory limit (a
    container's), or None when neither is known."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    if not candidates:
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and limit < 2 ** 60:  # "max" / a huge number: no limit
            candidates.append(max(0, limit - (usage or 0)))
    return min(candidates) if candidates else None


def device_memory_available() -> tuple[int | None, int | None, str]:
    """(free bytes on one accelerator, free bytes on all local ones, what they are); (None, None, "cpu") on CPU,
    where arrays live in host memory."""
    import jax

    devices = jax.local_devices()
    if not devices or devices[0].platform == "cpu":
        return None, None, "cpu"
    free = []
    for device in devices:
        try:
            stats = device.memory_stats() or {}
        except Exception:  # noqa: BLE001 - a backend without memory statistics
            stats = {}
        if "bytes_limit" not in stats:
            return None, None, devices[0].platform
        free.append(int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)))
    return min(free), sum(free), f"{len(devices)} {devices[0].platform} device(s)"


def _gib(n: int) -> str:
    value = n / GIB
    if value >= 1e6:
        return f"{value:.1e}"
    return f"{value:.1f}" if value >= 0.1 else f"{value:.2g}"


def check_fits(config: Config, spec: EnvSpec, runs: int = 1, available: int | None = None) -> MemoryEstimate:
    """Raise ConfigError (one line) when `runs` runs of `config` on `spec` cannot fit in memory; else return the
    estimate. `available` (bytes) replaces what the machine reports (tests, or a budget of one's own).

    On an accelerator the parameters must fit on one device (they are replicated), the rest on all local devices
    together (a run's envs, or a sweep's runs, are split over them); on CPU everything must fit in host memory."""
    need = estimate_memory(config, spec).scaled(max(1, runs))
    if available is not None:
        per_device, total, where = available, available, "this machine has"
    else:
        per_device, total, where = device_memory_available()
        if per_device is None:
            per_device = total = host_memory_available()
            where = "this machine has"
        else:
            where = f"the {where} have"
        if total is None:
            return need
    batch_driver = (f"iter_steps={config.iter_steps}" if _widest_batch(config) == config.samples_per_iter
                    else f"n_updates={config.n_updates} x batch_size={config.batch_size}")
    parts = {
        "parameters": (need.parameters, f"hidden_units={config.hidden_units} x hidden_layers={config.hidden_layers}"
                       + (" with dense skips" if config.dense_skips else ""), "the networks' parameters and Adam "
                       "state"),
        "history": (need.history, f"history_buffer_size={config.history_buffer_size} x "
                    f"iter_steps={config.iter_steps}", "the PPO-CMA history buffer"),
        "rollout": (need.rollout, f"iter_steps={config.iter_steps}", "the iteration's transitions"),
        "activations": (need.activations, f"{batch_driver} ({_widest_batch(config)} samples in one pass) with "
                        f"hidden_units={config.hidden_units} x hidden_layers={config.hidden_layers}",
                        "the largest forward pass"),
    }
    runs_text = f" ({runs} runs)" if runs > 1 else ""
    if need.parameters // max(1, runs) > per_device or need.total > total:
        name = max(parts, key=lambda k: parts[k][0])
        amount, driver, what = parts[name]
        others = need.total - amount
        raise ConfigError(f"{driver} needs ~{_gib(amount)} GiB for {what}{runs_text}"
                          + (f" (~{_gib(need.total)} GiB in all)" if others > amount / 100 else "")
                          + f"; {where} {_gib(total)} GiB available")
    return need
