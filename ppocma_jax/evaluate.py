"""`python -m ppocma_jax.evaluate RUN_DIR [--episodes N] [--stochastic] [--video]`: evaluate a run's newest
checkpoint; --video also renders one deterministic episode to RUN_DIR/render_<iteration>.gif (gymnax) or .html
(brax)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

import jax

from .evaluation import episode_limit, evaluate_policy
from .rundir import load_config, write_json_atomic

PROG = "python -m ppocma_jax.evaluate"


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate the newest checkpoint of a run directory."""
    args = _parser().parse_args(argv)
    if args.episodes <= 0:
        print(f"{PROG}: error: --episodes must be positive, got {args.episodes}", file=sys.stderr)
        return 2

    from .checkpoint import has_checkpoint
    from .errors import CliError

    run_dir = Path(args.run_dir)
    try:
        config, hparams, _ = load_config(run_dir)
    except CliError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    if not has_checkpoint(run_dir):
        print(f"{PROG}: error: {run_dir} has no checkpoint", file=sys.stderr)
        return 2
    if config.env.startswith("gymnasium/"):
        return _evaluate_host(run_dir, config, args)
    return _evaluate_compiled(run_dir, config, hparams, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=main.__doc__)
    parser.add_argument("run_dir", help="a run directory written by python -m ppocma_jax")
    parser.add_argument("--episodes", type=int, default=10, help="episodes, one per env instance (default: 10)")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the evaluation env starts")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the mean action")
    parser.add_argument("--iteration", type=int, default=None, help="checkpoint to load (default: newest)")
    parser.add_argument("--video", action="store_true",
                        help="also render one deterministic episode to RUN_DIR/render_<iteration>.gif or .html")
    return parser


def _evaluate_compiled(run_dir: Path, config, hparams, args: argparse.Namespace) -> int:
    """A JAX suite's run: restore the checkpoint and evaluate it in one compiled program (evaluation.py)."""
    from .checkpoint import CheckpointError, Checkpointer
    from .train import Trainer

    trainer = Trainer.build(config)
    if args.video:  # before loading anything: a missing package or an env without a renderer is one line
        from .render import RenderError, render_kind

        try:
            render_kind(trainer.env)
        except RenderError as err:
            print(f"{PROG}: error: --video: {err}", file=sys.stderr)
            return 2
    hp = hparams.as_arrays()
    like = jax.eval_shape(trainer.init_state, jax.random.PRNGKey(0), hp)
    checkpointer = Checkpointer(run_dir)
    try:
        iteration = args.iteration if args.iteration is not None else checkpointer.latest_iteration()
        state = checkpointer.restore(like, iteration)
    except (FileNotFoundError, CheckpointError) as err:  # none, damaged, or another configuration's: one line
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    finally:
        checkpointer.close()
    evaluate = jax.jit(evaluate_policy, static_argnums=(0, 1, 5, 6, 8))
    returns = evaluate(trainer.env, trainer.policy, state.policy_params, state.scaler,
                       jax.random.PRNGKey(args.seed), args.episodes, episode_limit(trainer.env), hp,
                       not args.stochastic)
    kind = "stochastic" if args.stochastic else "deterministic"
    _report(run_dir, config, iteration, int(state.env_steps), kind, [float(r) for r in returns])
    return _video(run_dir, trainer, state, iteration, args.seed) if args.video else 0


def _video(run_dir: Path, trainer, state, iteration: int, seed: int) -> int:
    """--video: one deterministic episode of the checkpoint to RUN_DIR/render_<iteration>.*."""
    from .render import RenderError, render_trained

    try:
        path = render_trained(trainer, state, run_dir / f"render_{iteration}", seed)
    except RenderError as err:
        print(f"{PROG}: error: --video: {err}", file=sys.stderr)
        return 1
    print(f"video: {path}")
    return 0


def _report(run_dir: Path, config, iteration: int, env_steps: int, kind: str, returns: list[float]) -> None:
    """Print the mean and std and write RUN_DIR/eval_<kind>.json."""
    mean = sum(returns) / len(returns)
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / len(returns))
    print(f"{config.env} {config.mode}, checkpoint after iteration {iteration} "
          f"({env_steps:,} env steps): {kind} return {mean:.1f} +- {std:.1f} over {len(returns)} episodes")
    out = {"iteration": iteration, "env_steps": env_steps, "mode": kind, "returns": returns, "mean": mean,
           "std": std}
    write_json_atomic(run_dir / f"eval_{kind}.json", out)


def _evaluate_host(run_dir: Path, config, args: argparse.Namespace) -> int:
    """A gymnasium run: load it as an Agent and play episodes on the host, one per gymnasium env instance."""
    from .agent import Agent, AgentError
    from .host_train import run_episodes

    if args.video or args.iteration is not None:
        print(f"{PROG}: error: --video and --iteration are not available for gymnasium runs (the newest "
              "checkpoint is evaluated)", file=sys.stderr)
        return 2
    try:
        agent = Agent.load(run_dir)
    except (AgentError, ValueError, FileNotFoundError) as err:
        print(f"{PROG}: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    env_id = config.env.split("/", 1)[1]
    max_decisions = episode_limit(agent.spec)
    returns = run_episodes(agent, env_id, args.episodes, config.action_repeat, args.seed, max_decisions,
                           deterministic=not args.stochastic)
    kind = "stochastic" if args.stochastic else "deterministic"
    state = agent.state
    _report(run_dir, config, int(state.iteration), int(state.env_steps), kind, [float(r) for r in returns])
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
