"""Rendering (--render, evaluate --video) and the wandb sink.

Budget: one tiny gymnax run (the same compiled programs as tests/test_checkpoint.py, so the session's XLA cache
serves them) shared by the GIF, wandb and evaluate --video tests, and one Brax episode from an untrained policy (no
training compile). wandb is a fake module: a real offline `wandb.init` starts a service process (about 5 s) and the
package is not in the dev extra."""

import base64
import json
import re
import sys
import types
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppocma_jax.cli import main
from ppocma_jax.evaluate import main as evaluate_main
from ppocma_jax.monitor import RunMonitor
from ppocma_jax.render import NotRenderable, render_kind
from ppocma_jax.train import METRIC_NAMES

RUN = ["--env", "gymnax/Pendulum-v1", "--iter-steps", "800", "--n-envs", "4", "--n-updates", "5",
       "--hidden-units", "16", "--pretrain-steps", "20", "--checkpoint-every", "2", "--quiet"]


class FakeRun:
    def __init__(self, kwargs):
        self.kwargs, self.logs, self.finished = kwargs, [], False

    def log(self, data, step=None):
        self.logs.append((step, dict(data)))

    def finish(self):
        self.finished = True


def fake_wandb() -> types.ModuleType:
    """A stand-in for the wandb module that records what the sink sends."""
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs):
        module.runs.append(FakeRun(kwargs))
        return module.runs[-1]

    module.init = init
    return module


def gif_steps(path: Path) -> int:
    """Decisions shown in a GIF: its total duration over the frame duration (Pillow merges identical consecutive
    frames into one longer frame, so the frame count can be lower)."""
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "GIF"
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
    return round(sum(durations) / min(durations))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 2-iteration Pendulum run with --render and --wandb (fake module)."""
    out = tmp_path_factory.mktemp("render") / "run"
    module = fake_wandb()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "wandb", module)
        assert main(RUN + ["--max-steps", "1600", "--render", "--wandb", "--out", str(out)]) == 0
    return out, module


def test_render_flag_writes_a_gif_of_one_episode(run_dir):
    out, _ = run_dir
    assert gif_steps(out / "render.gif") == 200  # Pendulum's time limit: one frame per decision


def test_wandb_sink_logs_every_iteration(run_dir):
    out, module = run_dir
    (run,) = module.runs
    assert run.kwargs["project"] == "ppocma_jax" and run.kwargs["dir"] == str(out)
    assert run.kwargs["config"]["config"]["env"] == "gymnax/Pendulum-v1"  # config.json as the wandb config
    assert (out / "wandb_id.txt").read_text().strip() == run.kwargs["id"]
    assert [step for step, _ in run.logs] == [1, 2] and run.finished
    first = run.logs[0][1]
    assert first["env_steps"] == 800 and first["mean_return"] < 0 and "policy_std" in first
    assert "eval_return" not in first and "eval_return" in run.logs[1][1]  # NaN (not evaluated) is left out


def test_wandb_sink_keys_seed_and_sweep_runs(tmp_path, monkeypatch):
    module = fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", module)
    labels = [{"setting": 0, "seed": 0, "learning_rate": 1e-3}, {"setting": 0, "seed": 1, "learning_rate": 1e-3}]
    monitor = RunMonitor(tmp_path, 1, 100, quiet=True, run_labels=labels, wandb_project="p")
    metrics = {name: np.array([1.0, np.nan]) for name in METRIC_NAMES}
    metrics.update(iteration=np.array([1, 1]), env_steps=np.array([100, 100]))
    monitor(metrics, True)
    monitor.close()
    (step, data), = module.runs[0].logs
    assert step == 1 and data["env_steps"] == 100 and data["run0/mean_return"] == 1.0
    assert "run1/mean_return" not in data  # NaN: left out
    assert not any(k.endswith(("seed", "setting", "learning_rate", "wall_s")) for k in data)


def test_evaluate_video_from_the_checkpoint(run_dir, capsys):
    out, _ = run_dir
    assert evaluate_main([str(out), "--episodes", "2", "--video"]) == 0
    assert f"video: {out / 'render_2.gif'}" in capsys.readouterr().out
    assert gif_steps(out / "render_2.gif") == 200


def test_brax_episode_renders_as_html(tmp_path):
    pytest.importorskip("brax")
    from ppocma_jax import Config, HParams
    from ppocma_jax.envs import make_env
    from ppocma_jax.normalize import scaler_init
    from ppocma_jax.policy import Policy
    from ppocma_jax.render import render_episode

    env = make_env("brax/inverted_pendulum", episode_length=20)
    policy = Policy.from_config(Config(env="brax/inverted_pendulum", hidden_units=16), env.spec)
    # untrained all-zero parameters: their structure by tracing alone (running the init eagerly costs seconds)
    shapes = jax.eval_shape(lambda key, hp: policy.init(key, hp, "analytic"), jax.random.PRNGKey(0),
                            HParams().as_arrays())
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    path = render_episode(env, policy, params, scaler_init(env.spec.obs_dim), tmp_path / "ep", jax.random.PRNGKey(1),
                          20)
    assert path.name == "ep.html" and "brax-viewer" in path.read_text()
    # the page embeds the system and the trajectory as zlib-compressed base64 JSON: one state per decision
    system = json.loads(zlib.decompress(base64.b64decode(re.search(r'var system = "([^"]+)"',
                                                                   path.read_text()).group(1))))
    assert 1 <= len(system["states"]["x"]) <= 20 and system["geoms"]


def test_missing_packages_are_one_line_errors_before_any_work(tmp_path, capsys, monkeypatch, run_dir):
    monkeypatch.setitem(sys.modules, "pygame", None)  # import pygame -> ImportError
    assert main(RUN + ["--max-steps", "800", "--render", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[render]"' in err and "pygame" in err
    assert not (tmp_path / "a" / "config.json").exists()
    assert evaluate_main([str(run_dir[0]), "--video"]) == 2
    assert 'pip install -e ".[render]"' in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert main(RUN + ["--max-steps", "800", "--wandb", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install wandb" in err and "Traceback" not in err


def test_env_without_renderer_is_named():
    from ppocma_jax.envs import make_env

    with pytest.raises(NotRenderable, match="gymnax/Reacher-misc cannot be rendered"):
        render_kind(make_env("gymnax/Reacher-misc"))
