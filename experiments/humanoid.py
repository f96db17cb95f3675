"""The paper's humanoid comparison (algorithm.md §9.2) on brax/humanoid: PPO-CMA-m vs PPO, both with N=32000.

    python experiments/humanoid.py --out results/humanoid                           # paper budget: 10M steps, 3 seeds
    python experiments/humanoid.py --budget 320000 --seeds 1 --out results/hum-small  # a CPU-sized look

Uses the `paper-humanoid` preset: action repeat 2, lr 5e-4, 100 updates, no entropy bonus, N=32000 (128 envs x 125
decisions x 2); PPO-CMA-m M=512, H=9; PPO M=128, eps=0.0025. Seeds of one mode train as one program. Writes
humanoid.json, humanoid.md (final returns) and humanoid.png (mean over seeds, shaded +- half a std).
The paper reports PPO-CMA-m plateauing at about 4500 after 4-10M steps and PPO at about 500 (MuJoCo Humanoid-v2;
Brax's humanoid has its own reward scale, so compare the two algorithms, not the numbers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from paper_runs import done, load, paper_config, plot, run_seeds, save, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="brax/humanoid")
    parser.add_argument("--modes", nargs="+", default=["PPO-CMA-m", "PPO"])
    parser.add_argument("--seeds", type=int, default=3, help="runs per mode (the paper: 3)")
    parser.add_argument("--budget", type=int, default=10_000_000, help="simulator steps per run (the paper: 10M)")
    parser.add_argument("--out", default="results/humanoid")
    args = parser.parse_args()

    out = Path(args.out)
    results = load(out, "humanoid")  # resumable: finished modes are kept, not rerun
    seeds = list(range(args.seeds))
    for mode in args.modes:
        config, hparams = paper_config("paper-humanoid", args.env, mode, args.budget)
        if done(results, args.env, mode, seeds, config.max_steps):
            print(f"{args.env} {mode}: already in {out / 'humanoid.json'}", flush=True)
            continue
        print(f"{args.env} {mode}: {args.seeds} seeds x {config.n_iterations} iterations x {config.iter_steps} "
              "steps", flush=True)
        r = run_seeds(config, hparams, seeds)
        print(f"  finals {[round(v, 1) for v in r['finals']]}; {r['run_s']:.0f} s + {r['compile_s']:.0f} s compile",
              flush=True)
        results.append(r)
        save(results, out, "humanoid")
        plot(results, out / "humanoid.png", f"{args.env}, N=32000, {args.budget:,} steps, {args.seeds} seeds")
    print(table(results))
    print(f"wrote {out / 'humanoid.json'}, {out / 'humanoid.md'}, {out / 'humanoid.png'}")


if __name__ == "__main__":
    main()
