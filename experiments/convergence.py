"""The paper's convergence study (algorithm.md §9.1) on the Brax counterparts of its tasks: PPO vs PPO-CMA-m.

    python experiments/convergence.py --out results/convergence                       # paper budget: 1M steps
    python experiments/convergence.py --budget 100000 --seeds 2 --out results/conv-small  # laptop CPU, < 1 hour
    python experiments/convergence.py --modes PPO-CMA-m PPO PPO-orig --seeds 3 --out docs/convergence

Resumable: results already in OUT/convergence.json (same env, mode, seeds and budget) are kept and not rerun, so a
stopped study loses at most the program that was running. Modes are the trainer's (`PPO` is standard PPO with
mean/std advantage normalisation) plus `PPO-orig`, the original code's PPO variant (std-only normalisation) that
the paper compared against.

Every (env, mode) trains its seeds as ONE compiled program (the seed axis vmapped inside the iteration loop) with
the `paper-locomotion` preset: action repeat 2, lr 5e-4, 100 updates per pass, no entropy bonus; PPO-CMA-m N=8000,
M=512, H=9; PPO N=2000, M=128, eps=0.005 (the paper's best settings per algorithm). Writes convergence.json (curves
and timings), convergence.md (final-return table: mean of each seed's last 5 iterations) and convergence.png (one
panel per env, mean over seeds, shaded +- half a std, as the original README's plot). Roboschool's
InvertedPendulumSwingup and Pong have no Brax counterpart and are left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from paper_runs import done, load, paper_config, plot, run_seeds, save, table  # noqa: E402

PAPER_ENVS = ("brax/inverted_pendulum", "brax/inverted_double_pendulum", "brax/reacher", "brax/hopper",
              "brax/walker2d", "brax/halfcheetah", "brax/ant")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(PAPER_ENVS))
    parser.add_argument("--modes", nargs="+", default=["PPO", "PPO-CMA-m"])
    parser.add_argument("--seeds", type=int, default=5, help="runs per env and mode (the paper: 5)")
    parser.add_argument("--budget", type=int, default=1_000_000, help="simulator steps per run (the paper: 1M)")
    parser.add_argument("--out", default="results/convergence")
    args = parser.parse_args()

    out = Path(args.out)
    results = load(out, "convergence")
    seeds = list(range(args.seeds))
    for env in args.envs:
        for mode in args.modes:
            config, hparams = paper_config("paper-locomotion", env, mode, args.budget)
            if done(results, env, mode, seeds, config.max_steps):
                print(f"{env} {mode}: already in {out / 'convergence.json'}", flush=True)
                continue
            print(f"{env} {mode}: {args.seeds} seeds x {config.n_iterations} iterations x {config.iter_steps} steps",
                  flush=True)
            r = run_seeds(config, hparams, seeds)
            print(f"  finals {[round(v, 1) for v in r['finals']]}; {r['run_s']:.0f} s + {r['compile_s']:.0f} s "
                  f"compile ({r['steps_per_s']:,.0f} steps/s over all seeds)", flush=True)
            results.append(r)
            save(results, out, "convergence")  # after every program: a stopped study keeps what it finished
            plot(results, out / "convergence.png", f"PPO vs PPO-CMA-m, {args.budget:,} steps, {args.seeds} seeds")
    # Also when everything was already done: rerunning the command redraws the table and plot from the JSON.
    save(results, out, "convergence")
    plot(results, out / "convergence.png", f"PPO vs PPO-CMA-m, {args.budget:,} steps, {args.seeds} seeds")
    print(table(results))
    print(f"wrote {out / 'convergence.json'}, {out / 'convergence.md'}, {out / 'convergence.png'}")


if __name__ == "__main__":
    main()
