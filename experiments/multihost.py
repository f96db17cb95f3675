"""Multi-host training on one machine: 2 processes of the CLI joined by jax.distributed over loopback.

    python experiments/multihost.py                       # one run, its 16 envs split over the 2 processes
    python experiments/multihost.py --seeds 2             # 2 runs, one per process
    python experiments/multihost.py --keep runs/mh        # keep the run directories

Each process owns one CPU device; `--coordinator-address 127.0.0.1:PORT --num-processes 2 --process-id I` makes
them one JAX job (CPU collectives over gloo), so the mesh has 2 devices on 2 hosts. The script checks that:
  1. both processes finish and report the same state checksum (they hold one distributed state);
  2. process 0 alone wrote files (process 1 was given its own --out, which must stay absent);
  3. the result equals the same run in ONE process with 2 forced host devices (--devices 2), row by row.
Prints a verdict per check and exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = ["--env", "gymnax/Pendulum-v1", "--iter-steps", "1024", "--n-envs", "16", "--n-updates", "8",
        "--batch-size", "64", "--hidden-units", "16", "--policy-init", "analytic", "--history-buffer-size", "3",
        "--max-steps", "4096", "--eval-every", "2", "--checkpoint-every", "2", "--quiet"]
CHECKSUM = re.compile(r"state checksum (\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def xla_flags(devices: int) -> str:
    """The caller's XLA_FLAGS without any forced device count, plus ours (1 device per process, or N in one)."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", "")).split()
    if devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    return " ".join(flags)


def launch(argv: list[str], devices: int) -> subprocess.Popen:
    env = dict(os.environ, XLA_FLAGS=xla_flags(devices))
    return subprocess.Popen([sys.executable, "-m", "ppocma_jax", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def same_rows(a: list[dict], b: list[dict], columns: tuple[str, ...], rtol: float) -> str | None:
    """None if every listed column agrees to rtol (empty cells must match), else a description of the first miss."""
    if len(a) != len(b):
        return f"{len(a)} rows vs {len(b)}"
    for ra, rb in zip(a, b):
        for col in columns:
            x, y = ra[col], rb[col]
            if (x == "") != (y == ""):
                return f"iteration {ra['iteration']} {col}: {x!r} vs {y!r}"
            if x and abs(float(x) - float(y)) > rtol * max(abs(float(x)), abs(float(y)), 1e-6):
                return f"iteration {ra['iteration']} {col}: {x} vs {y}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="runs per program (1: the envs of one run are split)")
    parser.add_argument("--keep", default=None, metavar="DIR", help="write the run directories here and keep them")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ppocma_multihost_"))
    root.mkdir(parents=True, exist_ok=True)
    extra = TINY + (["--seeds", str(args.seeds)] if args.seeds > 1 else [])
    address = f"127.0.0.1:{free_port()}"
    hosts = ["--coordinator-address", address, "--num-processes", "2"]
    t0 = time.perf_counter()
    procs = [launch(extra + hosts + ["--process-id", str(i), "--out", str(root / ("multi" if i == 0 else "p1"))], 1)
             for i in range(2)]
    procs.append(launch(extra + ["--devices", "2", "--out", str(root / "single")], 2))  # the reference
    outputs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            print(f"timed out after {args.timeout:.0f} s", file=sys.stderr)
            return 1
        outputs.append((proc.returncode, out, err))
    print(f"3 processes (2 joined + 1 reference) finished in {time.perf_counter() - t0:.1f} s; runs in {root}")

    failures = []
    for name, (code, out, err) in zip(("process 0", "process 1", "single process"), outputs):
        if code != 0:
            failures.append(f"{name} exited {code}: {err.strip().splitlines()[-1] if err.strip() else out[-300:]}")
    if failures:
        print("\n".join(failures))
        return 1
    sums = [CHECKSUM.search(out) for _, out, _ in outputs[:2]]
    checks = {
        "both processes hold the same state": (sums[0] is not None and sums[1] is not None
                                               and sums[0].group(1) == sums[1].group(1),
                                               [s.group(1) if s else None for s in sums]),
        "process 0 alone wrote files": (not (root / "p1").exists() and (root / "multi" / "metrics.csv").exists()
                                        and (root / "multi" / "checkpoints").is_dir(), sorted(
                                            p.name for p in (root / "multi").iterdir())),
    }
    columns = ("iteration", "policy_std", "critic_loss", "adv_std", "value_mean", "mean_return", "eval_return")
    mismatch = same_rows(rows(root / "multi"), rows(root / "single"), columns, rtol=1e-3)
    checks["2 processes x 1 device == 1 process x 2 devices"] = (mismatch is None, mismatch or "all rows agree")
    for name, (ok, detail) in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    print(outputs[0][1].strip().splitlines()[-1])  # process 0's result line
    return 0 if all(ok for ok, _ in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
