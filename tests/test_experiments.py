"""experiments/ scripts run end to end at tiny sizes, so they cannot rot, and bad arguments are one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_time_to_score_tiny(tmp_path):
    out = tmp_path / "tts.json"
    proc = _run(["experiments/time_to_score.py", "--preset", "pendulum", "--budget", "8000", "--thresholds",
                 "-5000", "1e9", "--seeds", "0", "--chunk", "2", "--eval-every", "2", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    low, high = result["thresholds"]
    # Any Pendulum return beats -5000 from the first iteration; nothing reaches 1e9.
    assert low["train"]["reached"] == 1 and low["train"]["env_steps"] == 4000
    assert low["eval"]["reached"] == 1 and low["eval"]["total_s"] >= result["compile_s"]
    assert high["train"]["reached"] == 0 and high["eval"]["reached"] == 0
    assert "| -5000 | train | 1/1 |" in proc.stdout


def test_time_to_score_bad_arguments_are_one_line():
    proc = _run(["experiments/time_to_score.py", "--thresholds", "1", "--chunk", "0"], timeout=120)
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr
