"""Execute every notebook in notebooks/ top to bottom, so they never rot.

Each notebook runs in a fresh kernel with the notebooks directory as working directory; any cell error fails the
test with that cell's traceback. Their cost is almost all XLA compilation, which is single-threaded, so the
kernels run concurrently (sharing the cores instead of one after another). Kernels inherit this
session's environment, including the persistent compilation cache of tests/conftest.py, so the didactic notebook
reuses the programs tests/test_didactic.py compiled. The notebooks are stored without outputs and are not rewritten.
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("quickstart.ipynb", "didactic.ipynb", "sweeps.ipynb", "custom_env.ipynb")
TIMEOUT_S = 300  # per cell; generous for a loaded shared CPU
# Notebooks whose programs run for well under a second: compile them at LLVM optimisation level 0 (about half the
# compile time). Not the didactic one: its kernel must keep the session's XLA flags to hit the compilation cache
# (the flags are part of the cache key), and its programs run long enough to want optimised code.
FAST_COMPILE = {"quickstart.ipynb", "sweeps.ipynb", "custom_env.ipynb"}


def _kernel_env(name: str) -> dict[str, str]:
    env = dict(os.environ)
    if name in FAST_COMPILE:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    return env


def _execute(name: str) -> float:
    """Run one notebook in its own kernel; returns the wall time. Raises on any cell error."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    t0 = time.perf_counter()
    client.execute(env=_kernel_env(name))
    return time.perf_counter() - t0


def test_notebooks_are_stored_clean():
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.get("outputs") or
                                                                                  c.get("execution_count"))]
        assert not dirty, f"{name} is stored with outputs in cells {dirty}; clear them before committing"
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES), "a notebook is not under test"


def test_notebooks_execute():
    with ThreadPoolExecutor(max_workers=len(NAMES)) as pool:
        futures = {name: pool.submit(_execute, name) for name in NAMES}
        failures, times = {}, {}
        for name, future in futures.items():
            try:
                times[name] = future.result()
            except Exception as err:  # noqa: BLE001 - reported below with the notebook's name
                failures[name] = err
    print("notebook wall times: " + ", ".join(f"{n} {t:.1f} s" for n, t in times.items()))
    assert not failures, "\n\n".join(f"{name}: {type(err).__name__}: {err}" for name, err in failures.items())
    assert not list(NOTEBOOKS.glob("*.png")), "a notebook left a file behind"
