"""The paper's didactic example (spec §8): PG, PG-pos, PPO and PPO-CMA-m on a 2-D quadratic bandit.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ppocma_jax import Config, HParams
from ppocma_jax.rollout import rollout
from ppocma_jax.train import Trainer, TrainState

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
    figure shows; the key handling is the same, so the runs match `make_train`'s."""
    key, key_rollout, key_critic, key_policy = jax.random.split(state.key, 4)
    env_carry, traj, _ = rollout(trainer.env, trainer.policy, state.policy_params, state.scaler, state.env,
                                 key_rollout, trainer.config.rollout_len, hp)
    learned, _ = trainer.learn(state, traj, key_critic, key_policy, hp)
    new_state = learned.replace(env=env_carry, key=key, iteration=state.iteration + 1,
                                env_steps=state.env_steps + trainer.config.iter_steps)
    return new_state, traj.action.reshape(-1, traj.action.shape[-1])


def _policy_at_zero(trainer: Trainer, state: TrainState, hp: HParams) -> tuple[jax.Array, jax.Array]:
    """(mean [2], std [2]) of the policy at the constant state."""
    mean, logvar = trainer.policy.gaussian(state.policy_params, ZERO_STATE, hp)
    return mean[0], jnp.exp(0.5 * logvar[0])


def run_mode(config: Config, hparams: HParams | None = None) -> Trace:
    """Train one mode for config.n_iterations iterations and record the policy after each.

    One jitted iteration called from a Python loop (rather than one scan over all iterations): the compiled
    programs then do not depend on the iteration count, so short and full runs share the compilation cache."""
    hparams = hparams if hparams is not None else didactic_hparams()
    trainer = Trainer.build(config)
    trainer.check_hparams(hparams)
    hp = hparams.as_arrays()
    init = jax.jit(lambda key, h: _with_policy(trainer, trainer.init_state(key, h), h))
    step = jax.jit(lambda s, h: _step_with_policy(trainer, s, h))
    state, mean, std = init(jax.random.PRNGKey(config.seed), hp)
    means, stds, actions = [mean], [std], []
    for _ in range(config.n_iterations):
        state, acts, mean, std = step(state, hp)
        means.append(mean)
        stds.append(std)
        actions.append(acts)
    return Trace(np.asarray(jnp.stack(means)), np.asarray(jnp.stack(stds)), np.asarray(jnp.stack(actions)))


def _with_policy(trainer: Trainer, state: TrainState, hp: HParams):
    return (state, *_policy_at_zero(trainer, state, hp))


def _step_with_policy(trainer: Trainer, state: TrainState, hp: HParams):
    state, actions = _iteration(trainer, state, hp)
    return (state, actions, *_policy_at_zero(trainer, state, hp))


def run_all(modes: Sequence[str] = MODES, seed: int = 0, n_iterations: int = N_ITERATIONS,
            **overrides) -> dict[str, Trace]:
    """Every mode from the same seed: the same first-iteration samples for all (as the original's np seed)."""
    return {mode: run_mode(didactic_config(mode, seed, n_iterations, **overrides)) for mode in modes}


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
    ax.contourf(xx, yy, -(xx ** 2 + yy ** 2), levels=20, cmap="Greys_r", alpha=0.35)
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(traces)
    fig, axes = plt.subplots(len(modes), len(iterations), figsize=(2.2 * len(iterations), 2.2 * len(modes)),
                             squeeze=False)
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
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def plot_animation(traces: dict[str, Trace], out: str | Path, modes: Sequence[str] = ("PPO", "PPO-CMA-m"),
                   fps: int = 3) -> Path:
    """Animated GIF, the given modes side by side, one frame per iteration (pillow writer, small palette)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    missing = [m for m in modes if m not in traces]
    if missing:
        raise ValueError(f"no trace for mode(s) {', '.join(missing)}; have {', '.join(traces)}")
    n_iter = min(len(traces[m].actions) for m in modes)
    fig, axes = plt.subplots(1, len(modes), figsize=(3.2 * len(modes), 3.4), squeeze=False)

    def frame(i: int):
        for ax, mode in zip(axes[0], modes):
            ax.clear()
            t = traces[mode]
            _draw_panel(ax, t.actions[i], t.mean[i], t.std[i], trail=t.mean[: i + 1])
            ax.set_title(f"{mode}, iteration {i + 1}", fontsize=10)
        return []

    anim = FuncAnimation(fig, frame, frames=list(range(n_iter)) + [n_iter - 1] * fps, blit=False)
    out = Path(out)
    anim.save(out, writer=PillowWriter(fps=fps), dpi=60)
    plt.close(fig)
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run that is saved and drawn")
    parser.add_argument("--seeds", type=int, default=1,
                        help="also rerun with seeds seed..seed+K-1 and print each mode's final distance (K >= 1)")
    parser.add_argument("--no-gif", action="store_true", help="skip the animated GIF")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        print(f"didactic.py: error: --seeds must be >= 1, got {args.seeds}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    traces = run_all(seed=args.seed)
    train_s = time.perf_counter() - t0
    (out / "didactic.json").write_text(json.dumps(to_json(traces)) + "\n")
    print("\n".join(summary_lines(traces)))
    print(f"trained {len(traces)} modes x {N_ITERATIONS} iterations in {train_s:.1f} s (compilation included)")
    print(plot_figure(traces, out / "didactic.png"))
    if not args.no_gif:
        print(plot_animation(traces, out / "didactic.gif"))
    if args.seeds > 1:
        finals = {mode: [traces[mode].final_distance()] for mode in MODES}
        for seed in range(args.seed + 1, args.seed + args.seeds):
            for mode, trace in run_all(seed=seed).items():
                finals[mode].append(trace.final_distance())
        print(f"final distance to the optimum over seeds {args.seed}..{args.seed + args.seeds - 1}:")
        for mode, values in finals.items():
            print(f"  {mode:10s} " + " ".join(f"{v:.3f}" for v in values) + f"  (median {np.median(values):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
