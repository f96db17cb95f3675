"""One-command accelerator check: versions, compiled-path tests, throughput, seed scaling, sweep and time-to-score.

On a GPU machine (status: ready, not yet run on a GPU), with network:

    pip install -e ".[dev]" "jax[cuda13]==0.10.2"      # the CUDA 13 build of the pinned jax ("jax[cuda12]" for CUDA 12)
    python experiments/accelerator_check.py --out results/gpu

On a GPU machine without network that has its own JAX stack: experiments/device_check.sh (wheels carried in .whl/).

    python experiments/accelerator_check.py --tiny --out /tmp/check   # every part at toy sizes: ~1 min of CPU (the test)

It runs on whatever device JAX finds, in at most --budget seconds (default 540: 9 minutes) including compiles. Each
part runs in its own subprocess (its own process group) with a hard wall-clock limit, so a hang or a crash in one
part is recorded as "timeout" / "failed" with its output tail and the rest continues. A part's limit is its share
of the budget plus whatever earlier parts left unused, never more than what remains. The parts:

  env         device list, backend, jax / jaxlib / flax / optax / brax / gymnax versions (printed first)
  tests       the test subset that exercises the compiled paths (GAE, updates against the golden reference,
              the train loop, sweeps, devices, learning)
  throughput  bench_throughput.py: training steps/s against the random-action ceiling, gymnax Pendulum and brax
              hopper / ant at n_envs up to thousands
  seeds       bench_sweep.py: 1, 16, 64, 256 vmapped Pendulum runs in one program: time per run
  sweep       bench_sweep.py: the 16-run sweep (8 seeds x 2 learning rates) against one run
  score       time_to_score.py: the default job, Pendulum and brax/hopper with the paper preset

The parts share one persistent XLA compilation cache (JAX_COMPILATION_CACHE_DIR, a temporary folder unless set), so
a program that two parts build identically (the sweep's one-run and 16-run programs are the seeds part's) compiles
once; a compile time reported for such a repeat is a cache load.

Writes DIR/results.json (every part: status, seconds, limit, parsed results, output tail), DIR/results.md (the
tables) and DIR/log.txt (every part's full output). Exit status 0 when every part is ok, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"

ENV_PROBE = r"""
import json, platform
from importlib import metadata
import jax, jaxlib
versions = {"python": platform.python_version()}
for name in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "brax", "gymnax", "mujoco",
             "mujoco-mjx", "numpy"):
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:  # an optional package missing is recorded, not fatal
        versions[name] = "not installed"
devices = [str(d) for d in jax.devices()]
kinds = sorted({d.device_kind for d in jax.devices()})
print(f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, backend {jax.default_backend()}, devices {devices}",
      flush=True)
print(json.dumps({"backend": jax.default_backend(), "devices": devices, "device_kinds": kinds,
                  "versions": versions, "platform": platform.platform()}))
"""


@dataclass
class Command:
    """One subprocess of a part: argv (after the Python interpreter), the JSON file it writes (if any) and its
    share of the part's time (the last command of a part gets whatever remains)."""
    name: str
    argv: list[str]
    json_out: str | None = None
    share: float = 1.0
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Part:
    name: str
    share: float  # of the total budget
    commands: list[Command]
    what: str
    floor_s: float = 0.0  # at least this long (if the budget has it left): importing jax alone can take 10 s+


def plan(tiny: bool, tmp: Path) -> list[Part]:
    """The parts and their commands; --tiny shrinks every size so the whole check takes about a minute of CPU."""
    py = lambda script: str(EXPERIMENTS / script)  # noqa: E731
    j = lambda name: str(tmp / f"{name}.json")  # noqa: E731
    no_prealloc = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # test workers share the device
    if tiny:
        # The smallest programs that still take every code path: no policy pre-training loop, 2 minibatch steps.
        small = ["--set", "policy_init=analytic", "--set", "n_updates=2"]
        tests = ["-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                 str(ROOT / "tests/test_gae.py") + "::test_jit_matches_eager"]
        throughput = [Command("gymnax/Pendulum-v1", [py("bench_throughput.py"), "--env", "gymnax/Pendulum-v1",
                                                     "--n-envs", "4", "--rollout-len", "8", "--iterations", "1",
                                                     "--modes", "PPO", *small, "--json", j("tp_pendulum")],
                              j("tp_pendulum"))]
        sweep_common = ["--mode", "PPO", "--max-steps", "64", "--iter-steps", "32", "--no-two-devices", *small]
        seeds = [Command("seeds", [py("bench_sweep.py"), *sweep_common, "--runs", "2", "--lrs", "3e-4",
                                   "--no-single", "--json", j("seeds")], j("seeds"))]
        sweep = [Command("sweep", [py("bench_sweep.py"), *sweep_common, "--runs", "2", "--lrs", "3e-4,1e-3",
                                   "--json", j("sweep")], j("sweep"))]
        # Two iterations (one chunk); the thresholds make both outcomes visible: -5000 is reached at once, 1e9 never.
        score = [Command("pendulum", [py("time_to_score.py"), "--preset", "pendulum", "--budget", "8000",
                                      "--thresholds", "-5000", "1e9", "--seeds", "0", "--chunk", "2",
                                      "--eval-every", "2", *small, "--json", j("tts_pendulum")], j("tts_pendulum"))]
    else:
        # One worker per file (--dist loadfile), as many as the cores allow: compiling dominates and is per process.
        workers = str(max(1, min(7, os.cpu_count() or 1)))
        tests = ["-m", "pytest", "-q", "-n", workers, "-p", "no:cacheprovider",
                 *(str(ROOT / "tests" / f) for f in ("test_gae.py", "test_golden.py", "test_units.py",
                                                     "test_train.py", "test_sweep.py", "test_devices.py",
                                                     "test_learning.py"))]
        throughput = [
            Command("gymnax/Pendulum-v1", [py("bench_throughput.py"), "--env", "gymnax/Pendulum-v1", "--n-envs",
                                           "64", "512", "4096", "--iterations", "3", "--json", j("tp_pendulum")],
                    j("tp_pendulum"), share=0.3),
            Command("brax/hopper", [py("bench_throughput.py"), "--env", "brax/hopper", "--n-envs", "128", "2048",
                                    "--rollout-len", "50", "--iterations", "3", "--modes", "PPO-CMA-m",
                                    "--json", j("tp_hopper")], j("tp_hopper"), share=0.35),
            Command("brax/ant", [py("bench_throughput.py"), "--env", "brax/ant", "--n-envs", "128", "2048",
                                 "--rollout-len", "50", "--iterations", "3", "--modes", "PPO-CMA-m",
                                 "--json", j("tp_ant")], j("tp_ant"), share=0.35),
        ]
        sweep_common = ["--env", "gymnax/Pendulum-v1", "--max-steps", "40000", "--iter-steps", "4000",
                        "--no-two-devices"]
        seeds = [Command("seeds", [py("bench_sweep.py"), *sweep_common, "--runs", "1", "16", "64", "256",
                                   "--lrs", "3e-4", "--no-single", "--json", j("seeds")], j("seeds"))]
        sweep = [Command("sweep", [py("bench_sweep.py"), *sweep_common, "--runs", "16", "--lrs", "3e-4,1e-3",
                                   "--json", j("sweep")], j("sweep"))]
        score = [
            Command("default", [py("time_to_score.py"), "--preset", "default", "--thresholds", "90", "--seeds", "0",
                                "1", "--stop-when-reached", "--json", j("tts_default")], j("tts_default"), 0.15),
            Command("pendulum", [py("time_to_score.py"), "--preset", "pendulum", "--thresholds", "-400", "-250",
                                 "-200", "--seeds", "0", "1", "--stop-when-reached", "--json", j("tts_pendulum")],
                    j("tts_pendulum"), 0.3),
            Command("brax/hopper", [py("time_to_score.py"), "--preset", "paper-locomotion", "--thresholds", "400",
                                    "700", "--seeds", "0", "--stop-when-reached", "--json", j("tts_hopper")],
                    j("tts_hopper"), 0.55),
        ]
    return [
        Part("env", 0.03, [Command("env", ["-c", ENV_PROBE])], "device and versions", floor_s=60.0),
        Part("tests", 0.17, [Command("tests", tests, env=no_prealloc)], "compiled-path test subset"),
        Part("throughput", 0.27, throughput, "training steps/s against the random-action ceiling"),
        Part("seeds", 0.10, seeds, "K vmapped Pendulum runs in one program: time per run"),
        Part("sweep", 0.05, sweep, "the 16-run sweep (8 seeds x 2 learning rates) against one run"),
        Part("score", 0.38, score, "time to score"),
    ]


def _children_cpu_s() -> float:
    """CPU seconds (user + system, all threads) of the finished subprocesses: less sensitive than wall time to
    other jobs on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_command(cmd: Command, limit_s: float, env: dict[str, str], log) -> dict:
    """Run one command with a hard wall-clock limit (its whole process group is killed at the limit)."""
    t0, cpu0 = time.perf_counter(), _children_cpu_s()
    log.write(f"\n===== {cmd.name}: {' '.join(cmd.argv)[:300]} (limit {limit_s:.0f} s)\n")
    log.flush()
    if limit_s < 1:
        return {"status": "skipped", "seconds": 0.0, "cpu_s": 0.0, "limit_s": round(limit_s, 1), "returncode": None,
                "result": None, "output_tail": "skipped: no time left in the budget"}
    proc = subprocess.Popen([sys.executable, *cmd.argv], cwd=ROOT, env={**env, **cmd.env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=limit_s)
        status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the part's own process group: pytest workers included
        out, _ = proc.communicate()
        status = "timeout"
    seconds, cpu_s = time.perf_counter() - t0, _children_cpu_s() - cpu0
    log.write(out)
    log.flush()
    result = None
    if cmd.json_out and Path(cmd.json_out).exists():  # the benches write after every row: partial on a timeout
        try:
            result = json.loads(Path(cmd.json_out).read_text())
        except json.JSONDecodeError:
            result = None
    if cmd.name == "env" and status == "ok":  # the probe's JSON line: the last line that parses
        for line in reversed(out.strip().splitlines()):
            try:
                result = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    return {"status": status, "seconds": round(seconds, 1), "cpu_s": round(cpu_s, 1), "limit_s": round(limit_s, 1),
            "returncode": proc.returncode, "result": result, "output_tail": out[-3000:]}


def run_parts(parts: list[Part], budget_s: float, env: dict[str, str], log) -> dict:
    """Every part in order, each command within its share (+ earlier savings) of the remaining budget."""
    start = time.perf_counter()
    results, saved = {}, 0.0
    for part in parts:
        part_budget = max(part.share * budget_s + saved, part.floor_s)
        part_start = time.perf_counter()
        commands, shares_left = {}, sum(c.share for c in part.commands)
        for cmd in part.commands:
            part_left = part_budget - (time.perf_counter() - part_start)
            remaining = budget_s - (time.perf_counter() - start)
            limit = max(0.0, min(part_left * cmd.share / shares_left, remaining))
            shares_left -= cmd.share
            try:
                commands[cmd.name] = run_command(cmd, limit, env, log)
            except Exception as exc:  # the check itself must go on (e.g. a JSON file written half-way)
                commands[cmd.name] = {"status": "failed", "seconds": 0.0, "cpu_s": 0.0, "limit_s": round(limit, 1),
                                      "returncode": None, "result": None,
                                      "output_tail": f"accelerator_check: {type(exc).__name__}: {exc}"}
            c = commands[cmd.name]
            print(f"[{part.name}] {cmd.name}: {c['status']} in {c['seconds']:.0f} s, cpu {c['cpu_s']:.0f} s "
                  f"(limit {limit:.0f} s)",
                  flush=True)
            if part.name == "env" and c["status"] == "ok":
                print(c["output_tail"].strip().splitlines()[0], flush=True)
        used = time.perf_counter() - part_start
        saved = max(0.0, part_budget - used)
        statuses = {c["status"] for c in commands.values()}
        results[part.name] = {"what": part.what, "status": "ok" if statuses == {"ok"} else
                              "/".join(sorted(statuses - {"ok"})), "seconds": round(used, 1), "commands": commands}
    return results


def _tp_table(name: str, data: dict) -> list[str]:
    modes = [m for m in ("PPO-CMA-m", "PPO") if data["results"] and m in data["results"][0]]
    lines = [f"{name}, {data['results'][0]['rollout_len']} decisions per env per iteration", "",
             "| n_envs | random-action ceiling steps/s | " + " | ".join(
                 f"{m} steps/s (of ceiling) | {m} rollout share | {m} compile s" for m in modes) + " |",
             "|---" * (2 + 3 * len(modes)) + "|"]
    for r in data["results"]:
        cells = [f"{r[m]['steps_per_s']:,.0f} ({r[m]['steps_per_s'] / r['ceiling_steps_per_s']:.0%}) | "
                 f"{r[m]['rollout_share']:.0%} | {r[m]['compile_s']:.1f}" for m in modes if m in r]
        lines.append(f"| {r['n_envs']} | {r['ceiling_steps_per_s']:,.0f} | " + " | ".join(cells) + " |")
    return lines


def _sweep_table(data: dict) -> list[str]:
    """K runs in one program against one run: make_train alone when measured, else K=1 of the batched program."""
    runs = sorted(data["one_device"].items(), key=lambda kv: int(kv[0]))
    single = data.get("single")
    base = single or data["one_device"].get("1")
    head = (f"one run alone (make_train): {single['run_s']:.2f} s, compile {single['compile_s']:.1f} s" if single
            else "one run: K=1 of the batched program")
    lines = [f"{data['mode']} on {data['env']}, {data['max_steps']:,} env steps per run, learning rates "
             f"{data['lrs']}; {head}", "",
             "| K runs | run s | run s per run | x one run | compile s |", "|---|---|---|---|---|"]
    for k, r in runs:
        ratio = f"{r['run_s'] / base['run_s']:.2f}" if base else "-"
        lines.append(f"| {k} | {r['run_s']:.2f} | {r['run_s'] / int(k):.3f} | {ratio} | {r['compile_s']:.1f} |")
    return lines


def markdown(report: dict) -> str:
    env = report["parts"].get("env", {}).get("commands", {}).get("env", {}).get("result") or {}
    lines = ["# Accelerator check", "",
             f"Command: `{report['command']}`; budget {report['budget_s']:.0f} s, total {report['total_s']:.0f} s"
             f"{' (--tiny)' if report['tiny'] else ''}.", "",
             f"Backend {env.get('backend', '?')}, devices {env.get('devices', '?')}; versions "
             + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()) + ".", "",
             "| part | what | status | seconds |", "|---|---|---|---|"]
    for name, part in report["parts"].items():
        lines.append(f"| {name} | {part['what']} | {part['status']} | {part['seconds']:.0f} |")
    for name, part in report["parts"].items():
        lines += ["", f"## {name}", ""]
        for cname, c in part["commands"].items():
            data = c.get("result")
            lines.append(f"{cname}: {c['status']} in {c['seconds']:.0f} s (limit {c['limit_s']:.0f} s)")
            lines.append("")
            try:
                if name == "tests":
                    tail = [ln for ln in c["output_tail"].strip().splitlines() if ln.strip()]
                    lines.append(f"    {tail[-1] if tail else '(no output)'}")
                elif name == "throughput" and data and data.get("results"):
                    lines += _tp_table(cname, data)
                elif name in ("seeds", "sweep") and data and data.get("one_device"):
                    lines += _sweep_table(data)
                elif name == "score" and data and "table" in data:
                    lines.append(data["table"])
                elif c["status"] != "ok" and name != "env":
                    lines += ["    " + ln for ln in c["output_tail"].strip().splitlines()[-8:]]
            except (KeyError, TypeError, ZeroDivisionError, ValueError) as exc:  # a partial result: say so
                lines.append(f"(could not tabulate: {type(exc).__name__}: {exc})")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for results.json, results.md and log.txt")
    parser.add_argument("--budget", type=float, default=None,
                        help="total seconds, compiles included (default: 540; --tiny: 480, for loaded CPUs)")
    parser.add_argument("--tiny", action="store_true", help="every part at tiny sizes, seconds on a CPU")
    parser.add_argument("--parts", nargs="+", default=None, help="run only these parts (default: all)")
    args = parser.parse_args()
    budget = args.budget if args.budget is not None else (480.0 if args.tiny else 540.0)
    if budget <= 0:
        parser.error("--budget must be positive")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="ppocma_jax_check_cache_"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ppocma_jax_check_") as tmp, open(out / "log.txt", "w") as log:
        parts = plan(args.tiny, Path(tmp))
        if args.parts:
            unknown = set(args.parts) - {p.name for p in parts}
            if unknown:
                parser.error(f"unknown parts {sorted(unknown)}; choose from {[p.name for p in parts]}")
            parts = [p for p in parts if p.name in args.parts or p.name == "env"]
            total = sum(p.share for p in parts)
            for p in parts:
                p.share /= total
        print(f"accelerator check{' (--tiny)' if args.tiny else ''}: {len(parts)} parts in at most {budget:.0f} s; "
              f"results into {out}", flush=True)
        results = run_parts(parts, budget, env, log)
    report = {"command": " ".join(["python", "experiments/accelerator_check.py", *sys.argv[1:]]),
              "tiny": args.tiny, "budget_s": budget, "total_s": round(time.perf_counter() - t0, 1),
              "load_average": list(os.getloadavg()), "parts": results}
    (out / "results.json").write_text(json.dumps(report, indent=1))
    (out / "results.md").write_text(markdown(report))
    bad = [n for n, p in results.items() if p["status"] != "ok"]
    print(f"done in {report['total_s']:.0f} s: " + ("every part ok" if not bad else f"not ok: {', '.join(bad)}") +
          f"; {out / 'results.md'}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
