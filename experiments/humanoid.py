"""The paper's humanoid comparison (algorithm.md §9.2) on brax/humanoid: PPO-CMA-m vs PPO, both with N=32000.

    python experiments/humanoid.py --out docs/humanoid                                   # paper budget: 10M steps
    python experiments/humanoid.py --budget 320000 --seeds 1 --out results/hum-small      # a CPU-sized look

Each (mode, seed) is one CLI run (`python -m ppocma_jax --preset paper-humanoid ...`) in RUNS/<mode>-seed<k> with a
checkpoint every 4 iterations, so the study survives a crash or the end of a session: run the same command again and
an unfinished run continues from its newest checkpoint (`--resume`, bit-identical to an uninterrupted run), a
finished one is read back. Writes humanoid.json, humanoid.md (final returns: mean of the last 5 iterations that
finished episodes, as experiments/convergence.py) and humanoid.png (mean over seeds, shaded +- half a std).

The `paper-humanoid` preset: action repeat 2, lr 5e-4, 100 updates, no entropy bonus, N=32000 (128 envs x 125
decisions x 2); PPO-CMA-m M=512, H=9; PPO M=128, eps=0.0025. The paper reports PPO-CMA-m plateauing at about 4500
after 4-10M steps and PPO at about 500 (MuJoCo Humanoid-v2; Brax's humanoid has its own reward scale, so compare the
two algorithms, not the numbers).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from paper_runs import _final, plot, save, table  # noqa: E402

from ppocma_jax.monitor import read_metrics_csv  # noqa: E402

CHECKPOINT_EVERY = 4  # iterations (about 15 s of training each on a 2-core CPU): what a crash can cost


def run_dir_command(run_dir: Path, env: str, mode: str, seed: int, budget: int) -> list[str] | None:
    """The CLI command that starts or continues the run in `run_dir`; None when it has finished."""
    if (run_dir / "result.json").exists():
        return None
    cli = [sys.executable, "-m", "ppocma_jax", "--quiet"]
    if (run_dir / "config.json").exists():
        return cli + ["--resume", str(run_dir)]
    return cli + ["--preset", "paper-humanoid", "--env", env, "--mode", mode, "--seed", str(seed),
                  "--max-steps", str(budget), "--checkpoint-every", str(CHECKPOINT_EVERY), "--out", str(run_dir)]


def read_run(run_dir: Path) -> dict:
    """One finished run's curve and timings from its metrics.csv and result.json."""
    rows = read_metrics_csv(run_dir / "metrics.csv")
    result = json.loads((run_dir / "result.json").read_text())
    returns = np.array([r["mean_return"] for r in rows], np.float64)
    # wall_s counts training time across resumed segments (compile excluded); compile_s is the last segment's.
    return {"env_steps": [int(r["env_steps"]) for r in rows], "returns": returns, "final": _final(returns),
            "run_s": rows[-1]["wall_s"], "compile_s": result["compile_s"]}


def mode_result(env: str, mode: str, seeds: list[int], runs: list[dict], budget: int) -> dict:
    """The seeds of one mode in experiments/paper_runs.py's result format (curves [iterations, seeds])."""
    curves = np.stack([r["returns"] for r in runs], axis=1)
    return {"env": env, "mode": mode, "seeds": seeds, "budget": budget, "env_steps": runs[0]["env_steps"],
            "mean_return": [[None if math.isnan(v) else v for v in row] for row in curves.tolist()],
            "finals": [r["final"] for r in runs], "run_s": float(np.mean([r["run_s"] for r in runs])),
            "compile_s": float(np.mean([r["compile_s"] for r in runs]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="brax/humanoid")
    parser.add_argument("--modes", nargs="+", default=["PPO-CMA-m", "PPO"])
    parser.add_argument("--seeds", type=int, default=1, help="runs per mode (the paper: 3)")
    parser.add_argument("--budget", type=int, default=10_000_000, help="simulator steps per run (the paper: 10M)")
    parser.add_argument("--out", default="results/humanoid", help="where humanoid.json/.md/.png go")
    parser.add_argument("--runs", default=None, help="where the run directories go (default: OUT/runs)")
    args = parser.parse_args()

    out = Path(args.out)
    runs_root = Path(args.runs) if args.runs else out / "runs"
    seeds = list(range(args.seeds))
    results = []
    for mode in args.modes:
        finished = []
        for seed in seeds:
            run_dir = runs_root / f"{mode}-seed{seed}"
            command = run_dir_command(run_dir, args.env, mode, seed, args.budget)
            if command is not None:
                print(f"{args.env} {mode} seed {seed}: {' '.join(command[1:])}", flush=True)
                code = subprocess.run(command).returncode
                if code != 0:
                    sys.exit(f"{run_dir}: the run ended with exit code {code}; run this script again to continue it")
            finished.append(read_run(run_dir))
            print(f"  final {finished[-1]['final']:.1f}; {finished[-1]['run_s']:.0f} s + "
                  f"{finished[-1]['compile_s']:.0f} s compile", flush=True)
        results.append(mode_result(args.env, mode, seeds, finished, args.budget))
        save(results, out, "humanoid")
        plot(results, out / "humanoid.png", f"{args.env}, N=32000, {args.budget:,} steps, {args.seeds} seed(s)")
    print(table(results))
    print(f"wrote {out / 'humanoid.json'}, {out / 'humanoid.md'}, {out / 'humanoid.png'}")


if __name__ == "__main__":
    main()
