"""Sweep throughput: K runs (seeds x learning rates) in ONE compiled program against 1 run, on 1 and 2 devices.

    python experiments/bench_sweep.py                                   # K = 1, 2, 4, ..., 64 on Pendulum, 40k steps
    python experiments/bench_sweep.py --runs 1 2 4 8 16 --json bench_sweep.json
    python experiments/bench_sweep.py --runs 16 --no-two-devices        # one K, one device only

For each K it builds `make_train_batched` over K runs (the first K of seeds x --lrs, setting-major: K = 16 with two
rates is 8 seeds x 2 rates), compiles it (timed apart), runs it once and reports the run's wall time, the process
CPU time (all threads; less sensitive to other jobs on a shared machine than wall time), total env steps/s and
the time relative to ONE run (the plain `make_train` program). The two-device column repeats the batched K >= 2
in a subprocess with 2 forced host devices (XLA_FLAGS=--xla_force_host_platform_device_count=2), the run axis split
over them (ppocma_jax.distributed). The machine's load average is recorded with the numbers.
Evaluation is off (--eval-every 0 equivalent): this measures training.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

import jax

from ppocma_jax import Config, make_train
from ppocma_jax.config import HParams
from ppocma_jax.sweep import expand_seeds, hparams_grid, make_train_batched

from paper_runs import config_overrides  # noqa: E402  (experiments/ is on the path of a script run from it)


def load() -> float:
    """1-minute load average (other jobs on the machine make wall times longer)."""
    return os.getloadavg()[0]


def measure(fn, *args) -> dict:
    """Compile `jax.jit(fn)(*args)` and run it once: compile wall, run wall and run CPU seconds."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    load_before = load()
    t0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(compiled(*args))
    return {"compile_s": compile_s, "run_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            "load": (load_before + load()) / 2}


def runs_for(k: int, lrs: list[float]):
    """The first k runs of seeds x learning rates, setting-major (k = 16, 2 rates: 8 seeds x 2 rates)."""
    n_lrs = min(k, len(lrs))
    if k % n_lrs:
        raise SystemExit(f"error: K={k} is not a multiple of the {n_lrs} learning rates")
    settings, labels = hparams_grid(learning_rate=lrs[:n_lrs])
    return expand_seeds(settings, labels, seeds=list(range(k // n_lrs)))


def bench_batched(config: Config, k: int, lrs: list[float], devices: int) -> dict:
    runs = runs_for(k, lrs)
    keys, hps = runs.keys, runs.hparams
    train = make_train_batched(config)
    if devices > 1:
        from ppocma_jax import distributed

        mesh = distributed.device_mesh(devices)
        distributed.check_divisible(k, mesh, "K")
        keys = distributed.put(keys, distributed.batch_shardings(keys, mesh))
        hps = distributed.put(hps, distributed.batch_shardings(hps, mesh))
    result = measure(train, keys, hps)
    result["steps_per_s"] = k * config.n_iterations * config.iter_steps / result["run_s"]
    return result


def bench_single(config: Config) -> dict:
    result = measure(make_train(config), jax.random.PRNGKey(0), HParams())
    result["steps_per_s"] = config.n_iterations * config.iter_steps / result["run_s"]
    return result


def two_device_results(argv: list[str], ks: list[int]) -> dict[int, dict]:
    """The batched Ks >= 2 again in a subprocess with 2 forced host devices."""
    ks = [k for k in ks if k >= 2 and k % 2 == 0]
    if not ks:
        return {}
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
    env = dict(os.environ, XLA_FLAGS=(flags + " --xla_force_host_platform_device_count=2").strip())
    cmd = [sys.executable, __file__, *argv, "--runs", *map(str, ks), "--devices", "2", "--child"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"two-device subprocess failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return {}
    return {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="gymnax/Pendulum-v1")
    parser.add_argument("--max-steps", type=int, default=40_000, help="env steps per run")
    parser.add_argument("--iter-steps", type=int, default=4000)
    parser.add_argument("--mode", default="PPO-CMA-m")
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64], metavar="K")
    parser.add_argument("--lrs", default="3e-4,1e-3", help="learning rates the runs cycle through")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any other Config field, e.g. --set policy_init=analytic (repeatable)")
    parser.add_argument("--json", default=None, help="write the results here (rewritten after every K)")
    parser.add_argument("--no-two-devices", dest="two_devices", action="store_false")
    parser.add_argument("--no-single", dest="single", action="store_false",
                        help="skip the one-run make_train program; ratios are then to K=1 of the batched program")
    parser.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    lrs = [float(v) for v in args.lrs.split(",")]
    try:
        extra = config_overrides(args.set)
        config = Config(env=args.env, mode=args.mode, max_steps=args.max_steps, iter_steps=args.iter_steps,
                        eval_every=0, **extra).validate()
    except ValueError as exc:
        parser.error(str(exc))
    common = ["--env", args.env, "--max-steps", str(args.max_steps), "--iter-steps", str(args.iter_steps),
              "--mode", args.mode, "--lrs", args.lrs, *(f"--set={pair}" for pair in args.set)]

    if args.child:  # one JSON line for the parent
        print(json.dumps({k: bench_batched(config, k, lrs, args.devices) for k in args.runs}))
        return

    print(f"{args.mode} on {args.env}, {args.max_steps:,} env steps per run, learning rates {lrs}; "
          f"{os.cpu_count()} CPU cores; load average at start {load():.1f}", flush=True)
    single = bench_single(config) if args.single else None
    if single:
        print(f"1 run alone (make_train): compile {single['compile_s']:.1f} s, run {single['run_s']:.2f} s "
              f"({single['steps_per_s']:,.0f} steps/s, cpu {single['cpu_s']:.1f} s, load {single['load']:.1f})",
              flush=True)
    one = {}

    def x_one(run_s: float) -> float:
        """run_s over one run's time: make_train alone, else K=1 of the batched program (NaN: neither measured)."""
        base = single or one.get(1)
        return run_s / base["run_s"] if base else float("nan")

    def save(two: dict) -> None:  # after every K: a run stopped part-way keeps what it measured
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"env": args.env, "mode": args.mode, "max_steps": args.max_steps, "lrs": lrs,
                           "cpu_count": os.cpu_count(), "backend": jax.default_backend(), "single": single,
                           "one_device": one, "two_devices": two}, fh, indent=2)

    save({})
    header = (f"{'K':>3} {'compile s':>9} {'run s':>7} {'cpu s':>7} {'steps/s':>9} {'x 1 run':>8} {'load':>5}"
              f" | {'2 dev run s':>11} {'steps/s':>9} {'x 1 run':>8} {'speed-up':>8} {'load':>5}")
    for k in args.runs:
        one[k] = bench_batched(config, k, lrs, 1)
        r = one[k]
        print(f"K={k}: compile {r['compile_s']:.1f} s, run {r['run_s']:.2f} s ({x_one(r['run_s']):.2f}x "
              f"one run), load {r['load']:.1f}", flush=True)
        save({})
    two = two_device_results(common, args.runs) if args.two_devices else {}

    print(header)
    for k in args.runs:
        r = one[k]
        line = (f"{k:>3} {r['compile_s']:>9.1f} {r['run_s']:>7.2f} {r['cpu_s']:>7.1f} {r['steps_per_s']:>9,.0f} "
                f"{x_one(r['run_s']):>8.2f} {r['load']:>5.1f}")
        if k in two:
            t = two[k]
            line += (f" | {t['run_s']:>11.2f} {t['steps_per_s']:>9,.0f} {x_one(t['run_s']):>8.2f} "
                     f"{r['run_s'] / t['run_s']:>8.2f} {t['load']:>5.1f}")
        print(line)
    save(two)


if __name__ == "__main__":
    main()
