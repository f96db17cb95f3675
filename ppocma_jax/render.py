"""Render one deterministic episode of a policy: Brax envs as an HTML trajectory, gymnax envs as a GIF.

The episode is collected as ONE jit-compiled `lax.scan` that keeps every env state (the same mean-action policy as
`evaluation.evaluate_policy`); drawing happens afterwards on the host:

- Brax (`brax/...`): the pipeline states go to `brax.io.html.render`, an interactive 3-D page (the page loads
  Brax's viewer script from a CDN when opened, so viewing it needs a network connection, writing it does not);
- gymnax classic control (Pendulum, MountainCar[Continuous], CartPole, Acrobot): gymnasium's own renderer, whose
  parameters and state gymnax maps over (`gymnax.visualize.vis_gym`), draws each frame headless through pygame; the
  frames become a GIF with pillow;
- the other gymnax envs with a gymnax visualizer (Catch, MinAtar, mazes, PointRobot): gymnax's matplotlib
  `Visualizer` writes the GIF.

Used by `python -m ppocma_jax ... --render` (RUN_DIR/render.gif or .html, at the end of the run) and
`python -m ppocma_jax.evaluate RUN_DIR --video` (RUN_DIR/render_<iteration>.gif or .html, from a checkpoint).
Every failure is a `RenderError` with a one-line message.
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .envs.base import Env
from .normalize import ScalerState, scaler_apply
from .policy import Policy, PolicyParams

PIP_RENDER = 'pip install -e ".[render]"'

# gymnax envs that gymnasium's classic-control renderer draws (gymnax.visualize.vis_gym.SUPPORTED_GYM_ENVS).
GYM_CLASSIC: tuple[str, ...] = ("Acrobot-v1", "CartPole-v1", "Pendulum-v1", "MountainCar-v0",
                                "MountainCarContinuous-v0")
# gymnax envs that gymnax's own matplotlib Visualizer draws (gymnax/visualize/visualizer.py, gymnax 1.0.1).
GYMNAX_VISUALIZER: tuple[str, ...] = ("Catch-bsuite", "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar",
                                      "Seaquest-MinAtar", "SpaceInvaders-MinAtar", "Pong-misc", "PointRobot-misc",
                                      "MetaMaze-misc", "FourRooms-misc")
GIF_MAX_WIDTH = 300  # px: classic-control frames are 500-600 px wide; half size keeps a 1000-frame GIF small


class RenderError(Exception):
    """Rendering is impossible or failed: the message is one line."""


class MissingDependency(RenderError):
    """An optional package that rendering needs is not installed (the message names the pip command)."""


class NotRenderable(RenderError):
    """This environment has no renderer."""


@dataclass(frozen=True)
class Episode:
    """One episode on the host: `states` is the env-state pytree with a leading [length] axis (the state each
    action was taken in), `rewards` [length] the rewards received."""

    states: Any
    rewards: np.ndarray
    length: int


def unwrap(env: Env) -> tuple[Env, int]:
    """(the simulator env under any ActionRepeat wrappers, total action repeat). The wrappers keep the inner env's
    state, so its renderer draws theirs."""
    repeat = 1
    while hasattr(env, "repeat") and hasattr(env, "env"):  # ActionRepeat (duck-typed: no import cycle)
        repeat *= int(env.repeat)
        env = env.env
    return env, repeat


def render_kind(env: Env) -> str:
    """The file type this env renders to, "html" or "gif", checked before any work is done.

    Raises NotRenderable (no renderer for this env) or MissingDependency (the pip command that fixes it)."""
    inner, _ = unwrap(env)
    suite, _, name = env.spec.name.partition("/")
    if suite == "brax":
        if not hasattr(inner, "sys"):
            raise NotRenderable(f"{env.spec.name} has no Brax system to render")
        _require("jinja2", "brax.io.html")  # a Brax dependency, but brax.io.html is its only user here
        return "html"
    if suite == "gymnax" and name in GYM_CLASSIC:
        _require("pygame", "gymnasium's classic-control renderer")
        _require("PIL", "writing GIFs")
        return "gif"
    if suite == "gymnax" and name in GYMNAX_VISUALIZER:
        _require("PIL", "writing GIFs")
        return "gif"
    raise NotRenderable(f"{env.spec.name} cannot be rendered: renderers exist for brax envs and the gymnax envs "
                        f"{', '.join(GYM_CLASSIC + GYMNAX_VISUALIZER)}")


def _require(module: str, purpose: str) -> None:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame greets on import otherwise
    try:
        importlib.import_module(module)
    except ImportError:
        package = {"PIL": "pillow"}.get(module, module)
        raise MissingDependency(f"rendering needs {package} ({purpose}), which is not installed: {PIP_RENDER}"
                                ) from None


def collect_episode(env: Env, policy: Policy, params: PolicyParams, scaler: ScalerState, key: jax.Array,
                    max_steps: int) -> tuple[Any, jax.Array, jax.Array]:
    """Play one episode with the deterministic policy on one env (pure; jit with env, policy, max_steps static).

    -> (states [max_steps] (the state each action was taken in), rewards [max_steps], running [max_steps] (True up
    to and including the episode's last step)). Steps after the end are computed (fixed shapes) and masked.
    The env's auto-reset replaces the state after the last step, so the final frame is the last state acted in."""
    key_reset, key_run = jax.random.split(key)
    state, obs = env.reset(key_reset)

    def step(carry, step_key):
        state, obs, running = carry
        action = policy.deterministic(params, scaler_apply(scaler, obs))
        new_state, result = env.step(step_key, state, action)
        ended = result.terminated | result.truncated
        return (new_state, result.obs, running & ~ended), (state, result.reward, running)

    carry = (state, obs, jnp.ones((), bool))
    _, (states, rewards, running) = jax.lax.scan(step, carry, jax.random.split(key_run, max_steps))
    return states, rewards, running


def episode_on_host(states: Any, rewards: jax.Array, running: jax.Array) -> Episode:
    """Cut `collect_episode`'s fixed-length output at the episode's end and move it to numpy."""
    running = np.asarray(running)
    length = int(running.sum())  # running is True for a prefix
    states = jax.tree.map(lambda x: np.asarray(x)[:length], jax.device_get(states))
    return Episode(states, np.asarray(rewards)[:length], length)


def frame_state(states: Any, t: int) -> Any:
    """The state of step t from a stacked state pytree."""
    return jax.tree.map(lambda x: x[t], states)


def write_brax_html(env: Env, episode: Episode, path: Path) -> Path:
    """The episode's pipeline states as Brax's interactive HTML viewer page."""
    from .envs.brax_env import quiet_brax

    inner, _ = unwrap(env)
    with quiet_brax():  # brax prints import-time noise (see brax_env.quiet_brax)
        from brax.io import html
    pipeline = inner.pipeline_state(episode.states)
    frames = [frame_state(pipeline, t) for t in range(episode.length)]
    path.write_text(html.render(inner.sys, frames, height=480, colab=False))
    return path


def gym_frames(name: str, gymnax_params: Any, episode: Episode) -> tuple[list[np.ndarray], float]:
    """RGB frames of a gymnax classic-control episode drawn by gymnasium's renderer, and its frames per second.

    One gymnasium env is reused for every frame: gymnax's `render_gym_frame` builds one per frame (60-90 ms each
    against about 7 ms). SDL's dummy drivers let pygame draw without a display or a sound card."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    import gymnasium
    from gymnax.visualize import vis_gym

    gym_env = gymnasium.make(name, render_mode="rgb_array")
    try:
        gym_env.reset(seed=0)
        raw = gym_env.unwrapped
        vis_gym.set_gym_params(raw, name, gymnax_params)
        frames = []
        for t in range(episode.length):
            state = frame_state(episode.states, t)
            raw.state = vis_gym.get_gym_state(state, name)
            if name == "Pendulum-v1":  # the torque arrow
                raw.last_u = np.asarray(state.last_u, dtype=np.float64)
            frames.append(np.asarray(gym_env.render()))
        fps = float(gym_env.metadata.get("render_fps", 30))
    finally:
        gym_env.close()
    return frames, fps


def write_gif(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    """Frames (uint8 [H, W, 3]) as a looping GIF at `fps`, scaled down to at most GIF_MAX_WIDTH pixels wide."""
    from PIL import Image

    if not frames:
        raise RenderError("the episode has no frames to write")
    images = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
    factor = math.ceil(images[0].width / GIF_MAX_WIDTH)
    if factor > 1:
        size = (images[0].width // factor, images[0].height // factor)
        images = [im.resize(size, Image.BILINEAR) for im in images]
    palette = _shared_palette(images)
    # One palette for all frames, no dithering: about 6x faster than Pillow's per-frame quantisation and a
    # third of the size; the flat-coloured drawings need few colours.
    images = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    duration_ms = max(20, int(round(1000.0 / fps)))  # GIF delays are in 10 ms; browsers slow < 20 ms down
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return path


def _shared_palette(images: list[Any], samples: int = 8, colors: int = 64) -> Any:
    """A palette image from up to `samples` evenly spaced frames stacked together, so colours that appear only
    later in the episode (a torque arrow, a flag) are in it too."""
    from PIL import Image

    picked = [images[i] for i in np.linspace(0, len(images) - 1, min(samples, len(images))).astype(int)]
    sheet = Image.new("RGB", (picked[0].width, picked[0].height * len(picked)))
    for i, im in enumerate(picked):
        sheet.paste(im.convert("RGB"), (0, i * picked[0].height))
    return sheet.quantize(colors=colors, method=Image.Quantize.FASTOCTREE)


def write_gymnax_visualizer_gif(gymnax_env: Any, gymnax_params: Any, episode: Episode, path: Path) -> Path:
    """gymnax's own matplotlib Visualizer (Catch, MinAtar, mazes, PointRobot), with the running return as title."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    from gymnax.visualize import Visualizer

    states = [frame_state(episode.states, t) for t in range(episode.length)]
    Visualizer(gymnax_env, gymnax_params, states, np.cumsum(episode.rewards)).animate(str(path))
    return path


def render_episode(env: Env, policy: Policy, params: PolicyParams, scaler: ScalerState, stem: Path,
                   key: jax.Array, max_steps: int) -> Path:
    """Play one deterministic episode (at most `max_steps` decisions) and write it to `stem` + .html or .gif.

    -> the written file. Raises RenderError (one line) when the env cannot be rendered or drawing fails."""
    kind = render_kind(env)
    collect = jax.jit(collect_episode, static_argnums=(0, 1, 5))
    episode = episode_on_host(*collect(env, policy, params, scaler, key, int(max_steps)))
    if episode.length == 0:
        raise RenderError("the episode has no steps")
    path = Path(f"{stem}.{kind}")
    try:
        if kind == "html":
            return write_brax_html(env, episode, path)
        inner, repeat = unwrap(env)
        name = env.spec.name.partition("/")[2]
        gymnax_env, gymnax_params = inner._env, inner._params  # GymnaxEnv's wrapped gymnax env and its params
        if name in GYM_CLASSIC:
            frames, fps = gym_frames(name, gymnax_params, episode)
            return write_gif(frames, path, fps / repeat)  # one frame per decision: real time under action repeat
        return write_gymnax_visualizer_gif(gymnax_env, gymnax_params, episode, path)
    except RenderError:
        raise
    except Exception as err:  # a renderer's own failure: one line, the caller keeps everything else
        first = str(err).splitlines()[0] if str(err) else ""
        raise RenderError(f"rendering {env.spec.name} failed: {type(err).__name__}: {first}") from None


def best_run(rows: list[dict[str, float]], n_runs: int) -> int:
    """Index of the run with the best final return (metrics.final_returns); 0 if none has one. Seed and sweep runs
    render this one."""
    from .metrics import final_returns

    scored = [(f, i) for i, f in enumerate(final_returns(rows, n_runs)) if not math.isnan(f)]
    return max(scored, key=lambda s: s[0])[1] if scored else 0


def render_trained(trainer: Any, state: Any, stem: Path, seed: int) -> Path:
    """Render the policy of one run's TrainState (a Trainer's; for seeds / sweeps, the caller picks the run, e.g.
    with `best_run`). -> the written file. Episode length: the env's own time limit (evaluation.episode_limit)."""
    from .evaluation import episode_limit

    return render_episode(trainer.env, trainer.policy, state.policy_params, state.scaler, stem,
                          jax.random.PRNGKey(seed), episode_limit(trainer.env))
