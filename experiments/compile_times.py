"""Cold and warm compile times of CLI commands: the first run of a command with an empty compilation cache, then
repeats of it with the cache that run filled.

    python experiments/compile_times.py --out compile_times          # the README's four commands, 2 warm repeats
    python experiments/compile_times.py --tiny --out /tmp/ct          # seconds: a tiny Pendulum run (the tests)

Each command runs as `python -m ppocma_jax ... --compile-cache DIR --out RUN` in a fresh process, DIR a new empty
directory per command. From each run's result.json: `compile_s` and `compile_cpu_s` (what the "compiled in" line
prints: the initialisation and the training chunk), `eval_compile_s` (the evaluation program, loaded or compiled on
a thread of its own beside the first iterations), `init_s` (running the policy's initialisation), `run_s`, and the
whole process's wall seconds. Writes results.json and results.md into --out and prints the table, with the load
average before and after (a loaded machine inflates wall seconds, not CPU seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "default job": ["--max-steps", "40000"],
    "pendulum preset": ["--preset", "pendulum", "--max-steps", "8000"],
    "4 seeds": ["--seeds", "4", "--max-steps", "8000"],
    "brax/hopper": ["--env", "brax/hopper", "--max-steps", "20000"],
}
TINY = {"tiny Pendulum": ["--env", "gymnax/Pendulum-v1", "--max-steps", "1600", "--iter-steps", "800", "--n-envs",
                          "4", "--n-updates", "5", "--hidden-units", "16", "--pretrain-steps", "20"]}
FIELDS = ("compile_s", "compile_cpu_s", "eval_compile_s", "init_s", "run_s")


def run_once(flags: list[str], cache: Path, out: Path, timeout: float) -> dict:
    """One CLI process; -> the result.json fields above plus wall_s (the whole process) and the compile line."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ppocma_jax", *flags, "--compile-cache", str(cache),
                           "--out", str(out)], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    result = json.loads((out / "result.json").read_text())
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("compiled in")), "")
    return {**{k: result.get(k) for k in FIELDS}, "wall_s": round(wall, 2), "line": line}


def measure(name: str, flags: list[str], warm_runs: int, work: Path, timeout: float) -> dict:
    """The cold run and `warm_runs` warm runs of one command, each in a fresh run directory."""
    cache = work / f"cache-{len(list(work.iterdir()))}"
    runs = []
    for k in range(1 + warm_runs):
        runs.append(run_once(flags, cache, work / f"run-{cache.name}-{k}", timeout))
        print(f"  {name} {'cold' if k == 0 else 'warm'}: {runs[-1]['line']}", flush=True)
    return {"command": "python -m ppocma_jax " + " ".join(flags), "cold": runs[0], "warm": runs[1:]}


def _span(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}-{high:.1f}"


def table(rows: dict) -> str:
    """Markdown: per command, cold and warm compile (wall, CPU), the evaluation program, init and process wall."""
    lines = ["| command | cold compile s (CPU s) | warm compile s (CPU s) | evaluation program s, cold / warm "
             "(beside the run) | init s | whole process s, cold / warm |", "|---|---|---|---|---|---|"]
    for row in rows.values():
        cold, warm = row["cold"], row["warm"]
        lines.append(
            f"| `{row['command']}` | {cold['compile_s']:.1f} ({cold['compile_cpu_s']:.1f}) | "
            f"{_span([w['compile_s'] for w in warm])} ({_span([w['compile_cpu_s'] for w in warm])}) | "
            f"{_span([cold['eval_compile_s']])} / {_span([w['eval_compile_s'] for w in warm])} | "
            f"{_span([r['init_s'] for r in [cold, *warm]])} | "
            f"{cold['wall_s']:.1f} / {_span([w['wall_s'] for w in warm])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory for results.json and results.md")
    parser.add_argument("--warm-runs", type=int, default=2, help="warm repeats per command (default 2)")
    parser.add_argument("--only", nargs="*", default=None, help=f"a subset of: {', '.join(COMMANDS)}")
    parser.add_argument("--tiny", action="store_true", help="one tiny Pendulum command instead (seconds)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per process (default 1800)")
    args = parser.parse_args(argv)
    if args.warm_runs < 1:
        parser.error("--warm-runs must be >= 1")
    commands = TINY if args.tiny else COMMANDS
    unknown = sorted(set(args.only or ()) - set(commands))
    if unknown:
        parser.error(f"unknown command name(s) {unknown}; valid: {', '.join(commands)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="compile_times_") as tmp:
        for name, flags in commands.items():
            if args.only and name not in args.only:
                continue
            try:
                results[name] = measure(name, flags, args.warm_runs, Path(tmp), args.timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as err:
                print(f"compile_times.py: {name}: {str(err).splitlines()[0]}", file=sys.stderr)
                return 1
    meta = {"load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count()}
    (out / "results.json").write_text(json.dumps({"machine": meta, "commands": results}, indent=1) + "\n")
    text = (f"{table(results)}\n\n{meta['cpus']} CPUs; load average {meta['load_average_before']} before, "
            f"{meta['load_average_after']} after.\n")
    (out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
