"""The paper's didactic example (algorithm.md §8): PG, PG-pos, PPO and PPO-CMA-m on a 2-D quadratic bandit.

    python experiments/didactic.py --out docs/didactic            # didactic.json, didactic.png, didactic.gif
    python experiments/didactic.py --out /tmp/d --seeds 5          # also: final distance over 5 seeds

Every iteration samples 64 one-step episodes of r(a) = -||a||^2 (env `didactic/quadratic`, optimum at the origin),
starting from N((-1, -1), 0.25^2 I), and updates with the original DidacticExample.py's settings: the Agent's
defaults (2 x 128 lrelu networks, lr 5e-4, 100 minibatch steps per pass, minibatch min(64, 512) = 64, PPO epsilon
0.2) except gamma = 0 and H = 5. The question it answers: does the policy's variance first grow along the slope and
then shrink at the optimum (PPO-CMA-m), or collapse early (PPO, PG-pos), or blow up (PG)?

Outputs in --out:
  didactic.json  {mode: {"mean": [[x, y] per iteration], "std": [[sx, sy] per iteration]}}, entry 0 = the initial
                 policy, entry k = the policy after k updates (read at the constant zero state);
  didactic.png   the paper's figure: rows = modes, columns = iterations 1, 5, 9, 20; each panel shows that
                 iteration's 64 sampled actions, the reward contours and the 2-sigma ellipse of the policy that drew
                 them;
  didactic.gif   PPO next to PPO-CMA-m, one frame per iteration (the original README's teaser).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ppocma_jax import Config, HParams
from ppocma_jax.rollout import rollout
from ppocma_jax.train import Trainer, TrainState, iteration_keys

MODES: tuple[str, ...] = ("PG", "PG-pos", "PPO", "PPO-CMA-m")
MODE_TITLES: dict[str, str] = {
    "PG": "Policy gradient",
    "PG-pos": "Policy gradient\n(positive advantages only)",
    "PPO": "PPO",
    "PPO-CMA-m": "PPO-CMA-m",
}
PLOT_ITERATIONS: tuple[int, ...] = (1, 5, 9, 20)  # the original figure's columns
N_ITERATIONS = 20
SAMPLES_PER_ITERATION = 64
INITIAL_MEAN = (-1.0, -1.0)
INITIAL_STD = (0.25, 0.25)
HISTORY = 5  # DidacticExample.py: "in this simple problem, we may use a smaller H"
ZERO_STATE = jnp.zeros((1, 1), jnp.float32)  # the bandit's constant observation (the scaler keeps scale 1 on it)


@dataclass(frozen=True)
class Trace:
    """One mode's run: the policy after each update and the actions each iteration sampled."""

    mean: np.ndarray  # [K + 1, 2]: entry 0 the initial policy, entry k the policy after k updates
    std: np.ndarray  # [K + 1, 2]
    actions: np.ndarray  # [K, 64, 2]: iteration k's samples (k = 1..K), drawn by the policy of entry k - 1

    def final_distance(self) -> float:
        """Distance of the final mean from the optimum (the origin)."""
        return float(np.linalg.norm(self.mean[-1]))


def didactic_config(mode: str, seed: int = 0, n_iterations: int = N_ITERATIONS,
                    samples: int = SAMPLES_PER_ITERATION, **overrides) -> Config:
    """The original DidacticExample.py's settings as a Config; `overrides` (e.g. smaller networks for a quick
    test) replace fields. One env per sample, one decision each: an iteration is `samples` one-step episodes."""
    settings = dict(env="didactic/quadratic", mode=mode, seed=seed, n_envs=samples, iter_steps=samples,
                    max_steps=samples * n_iterations, history_buffer_size=HISTORY, initial_mean=INITIAL_MEAN,
                    initial_std=INITIAL_STD, eval_every=0)
    settings.update(overrides)
    return Config(**settings).validate()


def didactic_hparams() -> HParams:
    """The Agent's defaults (lr 5e-4, PPO epsilon 0.2, sigma_min 0.01) with gamma = 0: a bandit has no future."""
    return HParams(gamma=0.0)


def _iteration(trainer: Trainer, state: TrainState, hp: HParams) -> tuple[TrainState, jax.Array]:
    """Trainer.iteration without metrics or evaluation, also returning the sampled actions [n, 2].

    Written here rather than read from Trainer.iteration because that returns metrics, not the samples the
    figure shows; keys and counters come from the same helpers as Trainer.iteration's."""
    key, key_rollout, key_critic, key_policy = iteration_keys(state.key)
    env_carry, traj, _ = rollout(trainer.env, trainer.policy, state.policy_params, state.scaler, state.env,
                                 key_rollout, trainer.config.rollout_len, hp)
    learned, _ = trainer.learn(state, traj, key_critic, key_policy, hp)
    new_state = trainer.advance(learned, key).replace(env=env_carry)
    return new_state, traj.action.reshape(-1, traj.action.shape[-1])


def _policy_at_zero(trainer: Trainer, state: TrainState, hp: HParams) -> tuple[jax.Array, jax.Array]:
    """(mean [2], std [2]) of the policy at the constant state."""
    mean, logvar = trainer.policy.gaussian(state.policy_params, ZERO_STATE, hp)
    return mean[0], jnp.exp(0.5 * logvar[0])


def _programs(trainer: Trainer, hp: HParams, key: jax.Array):
    """(lowered init, lowered step) of one mode, ready to compile.

    One jitted iteration called from a Python loop rather than one scan over all iterations: the compiled programs
    then do not depend on the iteration count, so short and full runs share a persistent compilation cache."""
    init = jax.jit(lambda k, h: _with_policy(trainer, trainer.init_state(k, h), h))
    step = jax.jit(lambda s, h: _step_with_policy(trainer, s, h))
    state_shape = jax.eval_shape(init, key, hp)[0]
    return init.lower(key, hp), step.lower(state_shape, hp)


def _init_kind(trainer: Trainer) -> tuple[str, bool]:
    """Modes with equal init_state programs: PG, PG-pos and PPO build the same joint network and optimizer, so
    one initial state (same seed) serves all three and is computed and compiled once."""
    return trainer.policy.kind, trainer.config.is_cma


def compile_modes(modes: Sequence[str] = MODES, n_iterations: int = N_ITERATIONS, hparams: HParams | None = None,
                  **overrides) -> Callable[[int], dict[str, Trace]]:
    """Compile every mode's programs and return `run(seed) -> {mode: Trace}`, reusable for any seed.

    All programs are compiled up front, two at a time in threads (XLA releases the GIL while compiling; compiling,
    not training, dominates this experiment's time on a CPU). `overrides` replace Config fields (e.g. smaller
    networks for a quick test)."""
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown didactic mode(s) {', '.join(bad)}; valid: {', '.join(MODES)}")
    if n_iterations < 1:
        raise ValueError(f"n_iterations must be >= 1, got {n_iterations}")
    hparams = hparams if hparams is not None else didactic_hparams()
    hp = hparams.as_arrays()
    key0 = jax.random.PRNGKey(0)  # only its shape matters for compiling
    trainers = {m: Trainer.build(didactic_config(m, 0, n_iterations, **overrides)) for m in modes}
    lowered: dict[tuple, Any] = {}
    for mode, trainer in trainers.items():
        trainer.check_hparams(hparams)
        init, step = _programs(trainer, hp, key0)
        lowered.setdefault(("init", _init_kind(trainer)), init)
        lowered[("step", mode)] = step
    with ThreadPoolExecutor(max_workers=2) as pool:
        compiled = dict(zip(lowered, pool.map(lambda program: program.compile(), lowered.values())))

    def run(seed: int) -> dict[str, Trace]:
        # Same seed, same first-iteration samples for every mode (the original reset numpy's seed per mode).
        key = jax.random.PRNGKey(seed)
        initial = {kind: compiled[(name, kind)](key, hp) for name, kind in lowered if name == "init"}
        traces = {}
        for mode, trainer in trainers.items():
            state, mean, std = initial[_init_kind(trainer)]
            means, stds, actions = [mean], [std], []
            for _ in range(n_iterations):
                state, acts, mean, std = compiled[("step", mode)](state, hp)
                means.append(mean)
                stds.append(std)
                actions.append(acts)
            traces[mode] = Trace(np.asarray(jnp.stack(means)), np.asarray(jnp.stack(stds)),
                                 np.asarray(jnp.stack(actions)))
        return traces

    return run


def run_all(modes: Sequence[str] = MODES, seed: int = 0, n_iterations: int = N_ITERATIONS,
            hparams: HParams | None = None, **overrides) -> dict[str, Trace]:
    """Every mode from one seed: {mode: Trace}."""
    return compile_modes(modes, n_iterations, hparams, **overrides)(seed)


def _with_policy(trainer: Trainer, state: TrainState, hp: HParams):
    return (state, *_policy_at_zero(trainer, state, hp))


def _step_with_policy(trainer: Trainer, state: TrainState, hp: HParams):
    state, actions = _iteration(trainer, state, hp)
    return (state, actions, *_policy_at_zero(trainer, state, hp))


def to_json(traces: dict[str, Trace]) -> dict[str, dict[str, list[list[float]]]]:
    """{mode: {"mean": [[x, y], ...], "std": [[sx, sy], ...]}} with plain floats (rounded to 6 digits)."""
    def rows(a: np.ndarray) -> list[list[float]]:
        return [[round(float(v), 6) for v in row] for row in a]

    return {mode: {"mean": rows(t.mean), "std": rows(t.std)} for mode, t in traces.items()}


# ---------------------------------------------------------------- figures
def _draw_panel(ax, actions: np.ndarray, mean: np.ndarray, std: np.ndarray, trail: np.ndarray | None = None,
                lim: tuple[float, float] = (-2.0, 1.0)) -> None:
    """Reward contours (circles of radius 0.5, 1, ... around the optimum), the samples, the policy's 2-sigma
    ellipse and, optionally, the path of the mean so far."""
    from matplotlib.patches import Ellipse

    grid = np.linspace(lim[0], lim[1], 121)
    xx, yy = np.meshgrid(grid, grid)
    ax.contourf(xx, yy, -(xx ** 2 + yy ** 2), levels=10, cmap="Greys_r", alpha=0.35)
    ax.contour(xx, yy, np.sqrt(xx ** 2 + yy ** 2), levels=np.arange(0.5, 3.0, 0.5), colors="k", linewidths=0.5,
               alpha=0.6)
    ax.plot(0.0, 0.0, marker="*", color="gold", markersize=10, markeredgecolor="k", zorder=4)
    if trail is not None:
        ax.plot(trail[:, 0], trail[:, 1], "-", color="tab:red", linewidth=1, alpha=0.7, zorder=3)
    ax.scatter(actions[:, 0], actions[:, 1], s=6, color="tab:blue", zorder=3)
    ax.add_patch(Ellipse(tuple(mean), 4 * std[0], 4 * std[1], fill=False, color="tab:red", linewidth=1.5, zorder=4))
    ax.plot(mean[0], mean[1], "+", color="tab:red", markersize=8, zorder=5)
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_figure(traces: dict[str, Trace], out: str | Path, iterations: Sequence[int] = PLOT_ITERATIONS) -> Path:
    """The paper's figure: one row per mode, one column per iteration in `iterations` (1-based)."""
    # A bare Figure (no pyplot): no global backend switch, so this also works inside a notebook.
    from matplotlib.figure import Figure

    modes = list(traces)
    fig = Figure(figsize=(2.2 * len(iterations), 2.2 * len(modes)))
    axes = fig.subplots(len(modes), len(iterations), squeeze=False)
    for row, mode in enumerate(modes):
        trace = traces[mode]
        for col, it in enumerate(iterations):
            ax = axes[row, col]
            # Iteration `it` sampled with the policy after it - 1 updates: draw that policy's ellipse.
            _draw_panel(ax, trace.actions[it - 1], trace.mean[it - 1], trace.std[it - 1])
            if row == 0:
                ax.set_title(f"Iteration {it}", fontsize=11)
            if col == 0:
                ax.set_ylabel(MODE_TITLES.get(mode, mode), fontsize=10)
    fig.suptitle("r(a) = -|a|^2: samples (blue), policy mean and 2-sigma ellipse (red), optimum (star)",
                 fontsize=9)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=80)
    return out


def plot_animation(traces: dict[str, Trace], out: str | Path, modes: Sequence[str] = ("PPO", "PPO-CMA-m"),
                   fps: int = 3) -> Path:
    """Animated GIF, the given modes side by side, one frame per iteration (pillow writer, small palette)."""
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.figure import Figure

    missing = [m for m in modes if m not in traces]
    if missing:
        raise ValueError(f"no trace for mode(s) {', '.join(missing)}; have {', '.join(traces)}")
    n_iter = min(len(traces[m].actions) for m in modes)
    fig = Figure(figsize=(3.2 * len(modes), 3.4))
    axes = fig.subplots(1, len(modes), squeeze=False)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9, wspace=0.06)

    def frame(i: int):
        for ax, mode in zip(axes[0], modes):
            ax.clear()
            t = traces[mode]
            _draw_panel(ax, t.actions[i], t.mean[i], t.std[i], trail=t.mean[: i + 1])
            ax.set_title(f"{mode}, iteration {i + 1}", fontsize=10)
        return []

    anim = FuncAnimation(fig, frame, frames=list(range(n_iter)) + [n_iter - 1] * fps, blit=False)
    out = Path(out)
    anim.save(out, writer=PillowWriter(fps=fps), dpi=80)
    return out


# ---------------------------------------------------------------- report
def summary_lines(traces: dict[str, Trace], every: int = 2) -> list[str]:
    """Per mode: mean std (over the 2 dims) every `every` iterations, peak std, final mean and distance."""
    lines = []
    for mode, t in traces.items():
        s = t.std.mean(axis=1)
        shown = " ".join(f"{v:.3f}" for v in s[::every])
        peak = int(np.argmax(s))
        lines.append(f"{mode:10s} std[0::{every}]: {shown}")
        lines.append(f"{'':10s} peak std {s[peak]:.3f} at iteration {peak}, final std {s[-1]:.4f}, final mean "
                     f"({t.mean[-1, 0]:+.3f}, {t.mean[-1, 1]:+.3f}), distance to optimum {t.final_distance():.3f}")
    return lines


def plot_iterations(n_iterations: int) -> tuple[int, ...]:
    """The original's columns (1, 5, 9, 20) when the run is that long, else up to 4 evenly spaced iterations."""
    if n_iterations >= PLOT_ITERATIONS[-1]:
        return PLOT_ITERATIONS
    return tuple(sorted({int(round(v)) for v in np.linspace(1, n_iterations, min(4, n_iterations))}))


def _fast_compile_flags() -> None:
    """Cheaper LLVM code generation (about 20% less compile time, the flag the test suite uses); only effective
    before JAX's CPU backend starts, i.e. at the top of main."""
    import os

    flag = "--xla_llvm_disable_expensive_passes=true"
    if flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


def main(argv: Sequence[str] | None = None) -> int:
    _fast_compile_flags()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run that is saved and drawn")
    parser.add_argument("--seeds", type=int, default=1,
                        help="also rerun with seeds seed+1..seed+K-1 and print each mode's final distance")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="modes to compare")
    parser.add_argument("--iterations", type=int, default=N_ITERATIONS, help="iterations per mode")
    parser.add_argument("--no-gif", action="store_true", help="skip the animated GIF")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.iterations < 1:
        print(f"didactic.py: error: --seeds and --iterations must be >= 1, got {args.seeds} and {args.iterations}",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    run = compile_modes(args.modes, args.iterations)
    compile_s = time.perf_counter() - t0
    traces = run(args.seed)
    train_s = time.perf_counter() - t0 - compile_s
    (out / "didactic.json").write_text(json.dumps(to_json(traces)) + "\n")
    print("\n".join(summary_lines(traces)))
    print(f"{len(traces)} modes x {args.iterations} iterations: compiled in {compile_s:.1f} s, trained in "
          f"{train_s:.1f} s")
    print(plot_figure(traces, out / "didactic.png", plot_iterations(args.iterations)))
    gif_modes = [m for m in ("PPO", "PPO-CMA-m") if m in traces] or list(traces)[:2]
    if not args.no_gif:
        print(plot_animation(traces, out / "didactic.gif", gif_modes))
    if args.seeds > 1:
        finals = {mode: [traces[mode].final_distance()] for mode in traces}
        for seed in range(args.seed + 1, args.seed + args.seeds):
            for mode, trace in run(seed).items():
                finals[mode].append(trace.final_distance())
        print(f"final distance to the optimum, seeds {args.seed}..{args.seed + args.seeds - 1}:")
        for mode, values in finals.items():
            print(f"  {mode:10s} " + " ".join(f"{v:.3f}" for v in values) + f"  (median {np.median(values):.3f})")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
