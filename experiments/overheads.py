"""Where time goes around the training itself: start-up imports, the policy pre-training, the evaluations.

    python experiments/overheads.py --preset pendulum
    python experiments/overheads.py --preset paper-locomotion --env brax/hopper --json overheads.json

Measures, each with wall and CPU seconds (CPU is less sensitive to other jobs on a shared machine):
  (a) start-up: `python -m ppocma_jax --help` and `python -c "import jax"` in fresh subprocesses;
  (b) the train state's initialisation, compiled and run, with the original's policy pre-training
      (policy_init=pretrain, pretrain_steps Adam steps) and with the analytic initialisation;
  (c) one training iteration without evaluation against one deterministic evaluation (eval_episodes episodes of
      the env's episode limit): the evaluation's share of the run at the preset's eval_every;
  (d) the CLI's per-iteration host work: --loop-iterations iterations as one compiled program (make_train's way)
      against as many calls of a one-iteration program, each followed by copying its metrics to the host (the
      CLI's way, compiled_train.py), both donating the state as the CLI does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_runs import config_overrides, paper_config  # noqa: E402

from ppocma_jax.presets import preset_names, resolve_preset  # noqa: E402
from ppocma_jax.train import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def subprocess_seconds(argv: list[str]) -> dict:
    """Wall and CPU (user + system) seconds of one fresh Python process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": time.perf_counter() - t0,
            "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)}


def timed(fn, *args, repeats: int = 2) -> dict:
    """Compile seconds, then the best of `repeats` runs as wall and this process's CPU seconds."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    out = {"compile_s": time.perf_counter() - t0, "wall_s": float("inf"), "cpu_s": float("inf")}
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(*args))
        out["wall_s"] = min(out["wall_s"], time.perf_counter() - t0)
        out["cpu_s"] = min(out["cpu_s"], time.process_time() - c0)
    return out


def host_loop(trainer, state, hp, iterations: int) -> dict:
    """Part (d): wall seconds per iteration, one program of `iterations` against `iterations` one-iteration calls
    each copying its metrics to the host (and, to tell the host's part from the call's, the same calls without the
    copy); from a state past the first iteration (whose critic pass is longer), the best of 3 passes each."""
    def program(n):
        return jax.jit(lambda s: trainer.run(s, hp, n, evaluate=False), donate_argnums=0).lower(state).compile()

    whole, one = program(iterations), program(1)
    copy = lambda st: jax.tree.map(jax.numpy.copy, st)  # noqa: E731 - the programs donate (delete) their input
    start = jax.block_until_ready(whole(copy(state))[0])

    def calls(st, to_host: bool):
        for _ in range(iterations):
            st, metrics = one(st)
            if to_host:
                jax.device_get(metrics)  # waits for the call, as the CLI's loop does
        jax.block_until_ready(st)

    def best(run) -> float:
        seconds = []
        for _ in range(3):
            st = jax.block_until_ready(copy(start))
            t0 = time.perf_counter()
            run(st)
            seconds.append(time.perf_counter() - t0)
        return min(seconds) / iterations

    one_program = best(lambda st: jax.block_until_ready(whole(st)))
    with_copy, without_copy = best(lambda st: calls(st, True)), best(lambda st: calls(st, False))
    return {"iterations": iterations, "one_program_s_per_iteration": one_program,
            "calls_s_per_iteration": with_copy, "calls_without_copy_s_per_iteration": without_copy,
            "overhead": with_copy / one_program - 1}


def measure(config, hparams, loop_iterations: int) -> dict:
    hp = hparams.as_arrays()
    key = jax.random.PRNGKey(0)
    init = {}
    for policy_init in ("pretrain", "analytic"):
        trainer = Trainer.build(config.replace(policy_init=policy_init))
        init[policy_init] = timed(trainer.init_state, key, hp)
    trainer = Trainer.build(config)
    state = jax.jit(trainer.init_state)(key, hp)
    iteration = timed(lambda s: trainer.iteration(s, hp, evaluate=False), state)
    evaluation = timed(lambda s: trainer.evaluate(s, hp), state)
    per_run = config.n_iterations * iteration["wall_s"]
    n_evals = config.n_iterations // config.eval_every + 1 if config.eval_every else 0
    loop = host_loop(trainer, state, hp, loop_iterations)
    return {"init": init, "iteration": iteration, "evaluation": evaluation, "host_loop": loop,
            "n_iterations": config.n_iterations,
            "eval_every": config.eval_every, "eval_episodes": config.eval_episodes,
            "eval_share": n_evals * evaluation["wall_s"] / (per_run + n_evals * evaluation["wall_s"]),
            "pretrain_share": init["pretrain"]["wall_s"] / (per_run + init["pretrain"]["wall_s"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="pendulum", choices=preset_names())
    parser.add_argument("--env", default=None, help="default: the preset's env")
    parser.add_argument("--mode", default=None, help="default: the preset's mode")
    parser.add_argument("--eval-every", type=int, default=5, help="as time_to_score.py's default")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any other Config field (repeatable)")
    parser.add_argument("--no-startup", dest="startup", action="store_false", help="skip part (a)")
    parser.add_argument("--loop-iterations", type=int, default=10, help="part (d)'s iterations (default 10)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    settings = resolve_preset(args.preset, args.mode)
    try:
        config, hparams = paper_config(args.preset, args.env or settings["env"], args.mode or settings["mode"],
                                       settings.get("max_steps", 1_000_000))
        config = config.replace(eval_every=args.eval_every, **config_overrides(args.set)).validate()
    except (ValueError, KeyError) as exc:
        parser.error(f"{type(exc).__name__}: {exc}")

    result = {"env": config.env, "mode": config.mode, "preset": args.preset, "backend": jax.default_backend(),
              "load_average_start": list(os.getloadavg())}
    if args.startup:
        result["startup"] = {"cli_help": subprocess_seconds(["-m", "ppocma_jax", "--help"]),
                             "import_jax": subprocess_seconds(["-c", "import jax"])}
    if args.loop_iterations < 1:
        parser.error("--loop-iterations must be >= 1")
    result.update(measure(config, hparams, args.loop_iterations))
    result["load_average_end"] = list(os.getloadavg())

    print(f"{config.mode} on {config.env} ({args.preset}), {jax.default_backend()}, load average "
          f"{result['load_average_start'][0]:.1f} -> {result['load_average_end'][0]:.1f}")
    print("| what | wall s | CPU s | compile s |\n|---|---|---|---|")
    for name, r in result.get("startup", {}).items():
        print(f"| start-up: {name} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | - |")
    for name, r in result["init"].items():
        print(f"| init, policy_init={name} | {r['wall_s']:.3f} | {r['cpu_s']:.3f} | {r['compile_s']:.1f} |")
    for name in ("iteration", "evaluation"):
        r = result[name]
        label = "one iteration (no evaluation)" if name == "iteration" else \
            f"one evaluation ({config.eval_episodes} episodes)"
        print(f"| {label} | {r['wall_s']:.3f} | {r['cpu_s']:.3f} | {r['compile_s']:.1f} |")
    loop = result["host_loop"]
    print(f"| one iteration in a {loop['iterations']}-iteration program / as a one-iteration call + metrics to the "
          f"host (the CLI) / as the call alone | {loop['one_program_s_per_iteration']:.3f} / "
          f"{loop['calls_s_per_iteration']:.3f} / {loop['calls_without_copy_s_per_iteration']:.3f} | - | - |")
    print(f"\nthe CLI's per-iteration host work: {loop['overhead']:+.1%} of an iteration")
    print(f"over {config.n_iterations} iterations: evaluation every {config.eval_every} is "
          f"{result['eval_share']:.0%} of the run, the pre-training {result['pretrain_share']:.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
