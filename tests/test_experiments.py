"""experiments/ scripts run end to end at tiny sizes, so they cannot rot, and bad arguments are one-line errors."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _load_experiment(name: str):
    """experiments/<name>.py as a module (its siblings importable, as when it runs as a script)."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "experiments"))


def test_accelerator_check_tiny_and_time_to_score(tmp_path):
    """Every part of the one-command accelerator check runs at tiny sizes and reports ok. Its score part is
    time_to_score.py on 2 Pendulum iterations, whose numbers are checked here (no run of its own to compile)."""
    out = tmp_path / "check"
    proc = _run(["experiments/accelerator_check.py", "--tiny", "--out", str(out)], timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "results.json", "results.md"]
    report = json.loads((out / "results.json").read_text())
    parts = report["parts"]
    assert list(parts) == ["env", "tests", "throughput", "seeds", "sweep", "score"]
    assert {name: p["status"] for name, p in parts.items()} == {name: "ok" for name in parts}
    env = parts["env"]["commands"]["env"]["result"]
    assert env["backend"] == "cpu" and env["devices"] and env["versions"]["jax"][0].isdigit()
    assert "passed" in parts["tests"]["commands"]["tests"]["output_tail"]
    row = parts["throughput"]["commands"]["gymnax/Pendulum-v1"]["result"]["results"][0]
    assert row["n_envs"] == 4 and row["ceiling_steps_per_s"] > 0 and row["PPO"]["steps_per_s"] > 0
    seeds = parts["seeds"]["commands"]["seeds"]["result"]
    sweep = parts["sweep"]["commands"]["sweep"]["result"]
    assert seeds["lrs"] == [3e-4] and sweep["lrs"] == [3e-4, 1e-3]
    assert set(seeds["one_device"]) == set(sweep["one_device"]) == {"2"} and sweep["single"]["run_s"] > 0

    tts = parts["score"]["commands"]["pendulum"]["result"]
    low, high = tts["thresholds"]
    # Any Pendulum return beats -5000 from the first iteration; nothing reaches 1e9.
    assert low["train"]["reached"] == 1 and low["train"]["env_steps"] == 4000
    assert low["eval"]["reached"] == 1 and low["eval"]["total_s"] >= tts["compile_s"]
    assert high["train"]["reached"] == 0 and high["eval"]["reached"] == 0
    md = (out / "results.md").read_text()
    assert "| -5000 | train | 1/1 |" in md and "| throughput |" in md


def test_accelerator_check_records_a_hang_and_a_crash_and_goes_on(tmp_path):
    check = _load_experiment("accelerator_check")
    parts = [check.Part("a", 0.5, [check.Command("hang", ["-c", "import time; time.sleep(60)"]),
                                   check.Command("crash", ["-c", "raise SystemExit(3)"])], "faults"),
             check.Part("b", 0.5, [check.Command("fine", ["-c", "print('fine')"])], "still runs")]
    with open(tmp_path / "log.txt", "w") as log:
        results = check.run_parts(parts, budget_s=10.0, env=dict(os.environ), log=log)
    hang, crash = results["a"]["commands"]["hang"], results["a"]["commands"]["crash"]
    assert hang["status"] == "timeout" and hang["seconds"] < 10
    assert crash["status"] == "failed" and crash["returncode"] == 3
    assert results["a"]["status"] == "failed/timeout" and results["b"]["status"] == "ok"
    assert "fine" in results["b"]["commands"]["fine"]["output_tail"]


def test_time_to_score_bad_arguments_are_one_line():
    proc = _run(["experiments/time_to_score.py", "--thresholds", "1", "--chunk", "0"], timeout=120)
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_config_overrides_cast_to_the_field_types_and_refuse_the_rest():
    overrides = _load_experiment("paper_runs").config_overrides
    assert overrides(["policy_init=analytic", "n_updates=2", "dense-skips=false"]) == {
        "policy_init": "analytic", "n_updates": 2, "dense_skips": False}
    # gamma is a hyperparameter (HParams), not a Config field; initial_std is a tuple.
    for bad in (["n_updates"], ["gamma=0.9"], ["n_updates=two"], ["dense_skips=maybe"], ["initial_std=1"]):
        try:
            overrides(bad)
        except ValueError as exc:
            assert "--set" in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")


def test_first_reach_smooths_the_training_return_over_3_iterations_and_skips_missing_evaluations():
    first_reach = _load_experiment("time_to_score").first_reach
    nan = float("nan")
    run = {"env_steps": [100, 200, 300, 400, 500], "wall_s": [1.0, 2.0, 3.0, 4.0, 5.0], "compile_s": 10.0,
           "mean_return": [0.0, 9.0, 9.0, nan, 1.0], "eval_return": [nan, 4.0, nan, 8.0, nan]}
    # Smoothed training return: 0, 4.5, 6, 9 (NaN skipped), 5; evaluation 4 at 200 and 8 at 400.
    assert first_reach(run, 6.0) == {"train": {"env_steps": 300, "run_s": 3.0, "total_s": 13.0},
                                     "eval": {"env_steps": 400, "run_s": 4.0, "total_s": 14.0}}
    assert first_reach(run, 8.5) == {"train": {"env_steps": 400, "run_s": 4.0, "total_s": 14.0}, "eval": None}


def test_compile_times_tiny_reports_a_cold_and_a_warm_run(tmp_path):
    """The cold run compiles into an empty cache; the warm run loads from it, faster (the ratio in one run)."""
    proc = _run(["experiments/compile_times.py", "--tiny", "--warm-runs", "1", "--out", str(tmp_path)], timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads((tmp_path / "results.json").read_text())["commands"]["tiny Pendulum"]
    assert "(cold; stored in cache)" in row["cold"]["line"] and "(from cache)" in row["warm"][0]["line"]
    assert row["warm"][0]["compile_cpu_s"] < row["cold"]["compile_cpu_s"]
    assert row["cold"]["eval_compile_s"] is not None and "| command |" in (tmp_path / "results.md").read_text()
    bad = _run(["experiments/compile_times.py", "--out", str(tmp_path), "--only", "nope"], timeout=120)
    assert bad.returncode == 2 and "unknown command name" in bad.stderr and "Traceback" not in bad.stderr


def _device_wheels() -> dict[str, str]:
    """experiments/device_wheels.txt as {name: version}, read as fetch_device_wheels.sh reads it (comments off)."""
    wheels = {}
    for line in (ROOT / "experiments" / "device_wheels.txt").read_text().splitlines():
        requirement, _, why = line.partition("#")
        if not requirement.strip():
            continue
        name, sep, version = requirement.strip().partition("==")
        assert sep and name and version[0].isdigit() and " " not in version, f"not NAME==VERSION: {line!r}"
        assert why.strip(), f"no reason given: {line!r}"
        assert name.lower() not in wheels, f"listed twice: {name}"
        wheels[name.lower()] = version
    return wheels


def test_device_wheels_list_matches_the_pins_and_the_device_scripts_parse(tmp_path):
    """The carried wheels are pinned to the versions pyproject.toml asks for; both scripts are valid bash; a
    device check without wheels stops at once with one line (exit 3) instead of running on a half-installed stack."""
    wheels = _device_wheels()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"brax=={wheels["brax"]}"' in pyproject and wheels["gymnax"].startswith("1.0.")
    assert {"gymnax", "gymnasium", "brax", "mujoco", "mujoco-core", "mujoco-mjx"} <= set(wheels)
    assert not {"jax", "jaxlib", "numpy", "flax", "optax"} & set(wheels)  # the device's own stack is used
    for script in ("fetch_device_wheels.sh", "device_check.sh"):
        proc = subprocess.run(["bash", "-n", str(ROOT / "experiments" / script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    empty = tmp_path / "no_wheels"
    empty.mkdir()
    proc = subprocess.run(["bash", str(ROOT / "experiments" / "device_check.sh")], capture_output=True, text=True,
                          env=dict(os.environ, OUT=str(tmp_path / "out"), WHEELS=str(empty)), timeout=60)
    assert proc.returncode == 3 and "no wheels in" in proc.stdout, proc.stdout + proc.stderr
    assert (tmp_path / "out" / "device_check.txt").read_text().count("\n") == 2
