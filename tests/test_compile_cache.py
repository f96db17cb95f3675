"""The persistent compilation cache's settings (compile_cache.py): where it lives, bad values, an unwritable
directory. That a second CLI run loads its program from the cache is tested in tests/test_cli.py."""

import os
from pathlib import Path

import jax
import pytest

from ppocma_jax.cli import main
from ppocma_jax.compile_cache import (ENV_VAR, CacheSettingError, configure, default_cache_dir,
                                      resolve_cache_dir)


def test_flag_wins_over_the_variable_which_wins_over_jax_and_the_default(tmp_path):
    env = {ENV_VAR: str(tmp_path / "from_env"), "HOME": str(tmp_path)}
    assert resolve_cache_dir(str(tmp_path / "flag"), env, "/jax") == tmp_path / "flag"
    assert resolve_cache_dir(None, env, "/jax") == tmp_path / "from_env"
    assert resolve_cache_dir(None, {ENV_VAR: ""}, "/jax") == Path("/jax")  # an empty variable is unset
    assert resolve_cache_dir("OFF", env) is None and resolve_cache_dir(None, {ENV_VAR: "off"}) is None
    assert default_cache_dir({"XDG_CACHE_HOME": "/xdg"}) == Path("/xdg/ppocma_jax/xla")
    assert default_cache_dir({"XDG_CACHE_HOME": ""}) == Path(os.path.expanduser("~/.cache/ppocma_jax/xla"))


def test_bad_values_are_refused(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(CacheSettingError, match="--compile-cache needs a directory or 'off'"):
        resolve_cache_dir(" ")
    with pytest.raises(CacheSettingError, match=f"{ENV_VAR} .*is a file, not a directory"):
        resolve_cache_dir(None, {ENV_VAR: str(a_file)})


@pytest.mark.parametrize("value,needle", [("", "needs a directory or 'off'"), ("FILE", "is a file")])
def test_a_bad_flag_is_one_line_and_exit_2(value, needle, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main(["--compile-cache", str(a_file) if value == "FILE" else value, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m ppocma_jax: error: --compile-cache"), err
    assert needle in err and not (tmp_path / "r").exists()


@pytest.fixture
def restore_jax_cache():
    before = jax.config.jax_compilation_cache_dir
    yield
    configure(Path(before) if before else None)


def test_an_unwritable_directory_is_a_warning_and_no_cache(tmp_path, restore_jax_cache):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    directory, warning = configure(a_file / "cache")  # cannot be created: its parent is a file
    assert directory is None and jax.config.jax_compilation_cache_dir is None
    assert warning.startswith(f"compile cache {a_file / 'cache'} is not writable (") and "\n" not in warning
    assert jax.jit(lambda x: x + 1)(1) == 2  # compiling goes on, uncached
    directory, warning = configure(tmp_path / "cache")
    assert directory == tmp_path / "cache" and warning is None
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")


def test_a_background_compile_hands_over_its_program_or_its_error():
    import threading

    from ppocma_jax.compile_cache import BackgroundCompile, compiling_in_background

    release = threading.Event()
    job = BackgroundCompile(lambda: release.wait(10) and jax.jit(lambda x: 2 * x).lower(1.0).compile(), "double")
    assert compiling_in_background()  # what __main__ asks before leaving: os._exit while one runs
    release.set()
    assert float(job.result()(3.0)) == 6.0
    assert not compiling_in_background() and job.seconds is not None and job.seconds >= 0

    def fails():
        raise ValueError("cannot compile this")

    with pytest.raises(ValueError, match="cannot compile this"):
        BackgroundCompile(fails, "broken").result()
    assert not compiling_in_background()


def test_a_normal_exit_waits_for_a_running_background_compile(tmp_path):
    """Outside the CLI (which leaves with os._exit), the interpreter's exit waits for it rather than finalizing
    under a compiler thread."""
    import subprocess
    import sys

    done = tmp_path / "done"
    code = ("import time, pathlib\nfrom ppocma_jax.compile_cache import BackgroundCompile\n"
            f"BackgroundCompile(lambda: (time.sleep(1.0), pathlib.Path({str(done)!r}).write_text('x')), 'slow')\n")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert done.read_text() == "x"
