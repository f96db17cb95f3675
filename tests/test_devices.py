"""--devices: one run's envs, or a batch of runs, sharded over 2 devices gives the 1-device result.

Two CPU devices are forced with XLA_FLAGS=--xla_force_host_platform_device_count=2, which must be set before JAX
starts, so the CLI runs in subprocesses: two of them, started together, so that their compilations (which dominate
on a CPU) overlap on the two cores. The 1-device reference is seed 0 of the 2-run batch: split over 2 devices, each
run lives whole on one device, and a run inside a batch equals the same run alone (tests/test_sweep.py).
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TINY = ["--env", "gymnax/Pendulum-v1", "--iter-steps", "256", "--n-envs", "8", "--n-updates", "4",
        "--batch-size", "32", "--hidden-units", "8", "--hidden-layers", "1", "--policy-init", "analytic",
        "--history-buffer-size", "2", "--max-steps", "768", "--eval-every", "0", "--checkpoint-every", "0"]

# Runs inside a subprocess: each CLI call's exit code, stdout and stderr, as JSON on the last line.
SCRIPT = r"""
import contextlib, io, json, sys
from ppocma_jax.cli import main

out, tiny, calls = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
report = {}
for name, extra in calls.items():
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(tiny + extra + ["--out", out + "/" + name])
    report[name] = {"code": code, "out": stdout.getvalue(), "err": stderr.getvalue()}
print(json.dumps(report))
"""

# Two subprocesses with one real run each; the error cases end before any compilation.
CALLS = [
    {"bad_envs": ["--n-envs", "5", "--iter-steps", "500"],
     "bad_runs": ["--seeds", "3"],
     "bad_count": ["--devices", "3"],
     "two": []},                      # one run, default --devices: all, here 2
    {"runs": ["--seeds", "2"]},       # 2 runs, one per device
]


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def _column(rows: list[dict], name: str) -> np.ndarray:
    return np.array([float(r[name]) for r in rows])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("devices")
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), json.dumps(TINY), json.dumps(calls)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for calls in CALLS]
    report = {}
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        report.update(json.loads(stdout.strip().splitlines()[-1]))
    return out, report


def test_one_run_on_two_devices_equals_one_device(report):
    out, rep = report
    assert rep["two"]["code"] == 0 and rep["runs"]["code"] == 0, (rep["two"]["err"], rep["runs"]["err"])
    assert "seed 0, 2 cpu device(s)" in rep["two"]["out"]
    two = _rows(out / "two" / "metrics.csv")
    one = [r for r in _rows(out / "runs" / "metrics.csv") if r["seed"] == "0"]  # seed 0, whole on one device
    assert [r["iteration"] for r in two] == ["1", "2", "3"]  # unordered callbacks still arrive in order
    assert [r["iteration"] for r in one] == ["1", "2", "3"]
    # The same numbers up to the order of float sums (the learner's reductions run over both env shards).
    np.testing.assert_allclose(_column(two, "policy_std"), _column(one, "policy_std"), rtol=1e-4)
    for name in ("critic_loss", "adv_std", "value_mean", "policy_loss"):
        np.testing.assert_allclose(_column(two, name), _column(one, name), rtol=1e-3, atol=1e-6, err_msg=name)


def test_runs_of_a_batch_split_over_two_devices(report):
    out, rep = report
    assert "2 runs (1 settings x 2 seeds) in one program" in rep["runs"]["out"]
    assert "2 cpu device(s)" in rep["runs"]["out"]
    rows = _rows(out / "runs" / "metrics.csv")
    assert sorted((r["seed"], r["iteration"]) for r in rows) == [(s, i) for s in "01" for i in "123"]
    seed0, seed1 = ([r for r in rows if r["seed"] == s] for s in "01")
    assert not np.allclose(_column(seed1, "critic_loss"), _column(seed0, "critic_loss"))  # independent runs
    assert (out / "runs" / "summary.json").exists() and (out / "runs" / "checkpoints").is_dir()


@pytest.mark.parametrize("name,needle", [
    ("bad_envs", "n_envs=5 is not divisible by the 2 devices"),
    ("bad_runs", "the number of runs=3 is not divisible by the 2 devices"),
    ("bad_count", "--devices must be between 1 and the 2 available device(s), got 3"),
])
def test_indivisible_or_unavailable_devices_are_one_line_errors(report, name, needle):
    out, rep = report
    assert rep[name]["code"] == 2
    err = rep[name]["err"]
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err
    assert not (out / name / "config.json").exists()  # nothing written before the error
