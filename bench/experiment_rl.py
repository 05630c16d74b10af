"""GRPO against the Video-STaR loop from the same warm start, with the same number of generated answers.

Run: `make bench-rl` (or `PYTHONPATH=src python bench/experiment_rl.py [--output-dir runs/bench-rl] [--quick]`); the
figures go to `bench/results.json` (keys `rl_warm_start`, `rl_star_heldout`, `rl_grpo_heldout`,
`rl_grpo_hint_heldout`: greedy held-out accuracy on the 200 test clips; `rl_*_answers`: answers each arm generated),
the curves to `OUTPUT/rl_curves.png` and everything to `OUTPUT/rl_results.json`.

Setup, all on the demo (shapes clips, tiny Qwen2.5-VL):
1. the demo's source, base model, 100-clip seed set and warm start (full finetune, 910 steps), built by the same
   functions and settings as `vstar demo` (and `make bench-noise`, whose warm start is the same);
2. STaR: the loop's cycles (`recipes/demo/config_shapes_tiny.yaml`: generate, verify, rationalize, train, evaluate)
   on the other 900 training clips; its answer count (direct + hinted) is the budget;
3. GRPO (`recipes/demo/config_grpo_shapes_tiny.yaml`): LoRA on the warm start, the shapes verifier as the reward,
   as many optimizer steps as make the same number of rollouts; checkpoints evaluated along the way;
4. GRPO with `hint_when_all_fail: true`, the same steps (its hinted rollouts are extra answers, counted).

Every stage is resumable: a second run with the same `--output-dir` redoes only what is missing. `--quick` runs a
small version to check that everything works; it records nothing.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from demo_experiment import experiment_parser, start_demo_experiment
from results import record

from vstar.configs import parse_configs
from vstar.cycle import CycleRunner, RunState
from vstar.demo import recipe_path
from vstar.evaluate.run import evaluate_model
from vstar.generate.base import get_backend, read_generations
from vstar.train.grpo import VStarGRPOConfig, train_grpo

logger = logging.getLogger("experiment_rl")

GRPO_RECIPE = "demo/config_grpo_shapes_tiny.yaml"
ARMS = {"grpo": {}, "grpo_hint": {"hint_when_all_fail": True}}


def star_answers(run_dir: Path, cycles: int) -> list[int]:
    """Answers the loop generated in each cycle (direct and hinted)."""
    counts = []
    for cycle in range(1, cycles + 1):
        out = run_dir / f"cycle-{cycle}" / "generations"
        counts.append(sum(len(read_generations(out, attempt)) for attempt in ("direct", "rationalized")))
    return counts


def evaluate(runner: CycleRunner, model: Path, adapter: Path, out: Path, state: RunState, stage: str) -> float:
    if not state.done(stage):
        backend = get_backend(runner.generation, str(model), str(adapter))
        results = evaluate_model(
            backend, runner.eval_rows, runner.task, out, runner.evaluation, description={"adapter": str(adapter)}
        )
        backend.close()
        state.mark(stage, results["metrics"])
    return state.result(stage)["accuracy"]


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, curve in curves.items():
        left.plot(curve["answers"], curve["heldout"], marker="o", label=name)
        if curve.get("reward"):
            # One step's reward is the mean over 4 prompts: the moving average over 10 steps shows the trend.
            window = 10
            reward = curve["reward"]
            smooth = [sum(reward[max(0, i - window + 1) : i + 1]) / len(reward[max(0, i - window + 1) : i + 1])
                      for i in range(len(reward))]  # fmt: skip
            right.plot(curve["reward_answers"], smooth, label=name)
    left.set(xlabel="generated answers", ylabel="held-out accuracy", title="Held-out accuracy (greedy, 200 clips)")
    right.set(xlabel="generated answers", ylabel="mean reward (10-step mean)", title="GRPO training reward")
    left.legend()
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = experiment_parser(__doc__.splitlines()[0], "runs/bench-rl")
    parser.add_argument("--evals", type=int, default=4, help="held-out evaluations along each GRPO run")
    args = parser.parse_args()
    # STaR: the loop as the demo runs it (no control arm).
    experiment = start_demo_experiment(args, "star")
    out, sizes, started, cycle_config = experiment.out, experiment.sizes, experiment.started, experiment.cycle_config
    seconds = {"setup": experiment.setup_seconds}
    warm = experiment.warm_start
    if args.quick:
        cycle_config.num_cycles = 1
    runner = CycleRunner(cycle_config, experiment.train_config)
    history = runner.run()
    cycles = len(history) - 1
    answers = star_answers(out / "star", cycles)
    seconds["star"] = time.perf_counter() - started - seconds["setup"]
    curves = {
        "Video-STaR": {
            "answers": [0, *[sum(answers[: k + 1]) for k in range(cycles)]],
            "heldout": [entry["heldout_accuracy"] for entry in history],
        }
    }
    budget = sum(answers)

    state = RunState(out / "arms_state.json")
    figures = {"rl_warm_start": history[0]["heldout_accuracy"], "rl_star_heldout": history[-1]["heldout_accuracy"]}
    figures["rl_star_answers"] = budget
    details = {}
    for arm, overrides in ARMS.items():
        arm_started = time.perf_counter()
        (config,) = parse_configs((VStarGRPOConfig,), ["--config", str(recipe_path(GRPO_RECIPE))])
        rollouts_per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps
        steps = max(1, budget // rollouts_per_step)
        every = max(1, steps // args.evals)
        flags = {
            "model_name_or_path": warm,
            "dataset": out / "source",
            "dataset_offset": sizes["seed"],
            "output_dir": out / arm / "model",
            "max_steps": steps,
            "save_strategy": "steps",
            "save_steps": every,
            "save_only_model": "true",
            "logging_steps": 1,
            "seed": args.seed,
            **overrides,
        }
        argv = ["--config", str(recipe_path(GRPO_RECIPE))]
        for key, value in flags.items():
            argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
        (config,) = parse_configs((VStarGRPOConfig,), argv)
        if not state.done(f"{arm}/train"):
            summary = train_grpo(config)
            log = [e for e in summary.pop("log_history") if "reward" in e]
            state.mark(f"{arm}/train", {**summary, "log": log})
        trained = state.result(f"{arm}/train")
        log = trained["log"]
        hinted = sum(int(e.get("hint/rollouts", 0)) for e in log)
        points = sorted((int(p.name.split("-")[1]), p) for p in (out / arm / "model").glob("checkpoint-*"))
        points = [(s, p) for s, p in points if s < steps] + [(steps, out / arm / "model")]
        heldout = [figures["rl_warm_start"]]
        for step, adapter in points:
            heldout.append(evaluate(runner, warm, adapter, out / arm / f"eval-{step}", state, f"{arm}/eval-{step}"))
        curves["GRPO" + (" + hint" if "hint" in arm else "")] = {
            "answers": [0, *[s * rollouts_per_step for s, _ in points]],
            "heldout": heldout,
            "reward_answers": [e["step"] * rollouts_per_step for e in log],
            "reward": [e["reward"] for e in log],
        }
        figures[f"rl_{arm}_heldout"] = heldout[-1]
        figures[f"rl_{arm}_answers"] = steps * rollouts_per_step + hinted
        details[arm] = {
            "steps": steps,
            "rollouts_per_step": rollouts_per_step,
            "hinted_rollouts": hinted,
            "final_reward": log[-1]["reward"] if log else None,
            "seconds": round(time.perf_counter() - arm_started, 1),
        }
        logger.info("%s: held-out accuracy %.3f after %d steps", arm, heldout[-1], steps)
        seconds[arm] = time.perf_counter() - arm_started

    seconds["total"] = time.perf_counter() - started
    plot(curves, out / "rl_curves.png")
    summary = {
        "figures": figures,
        "arms": details,
        "star": {
            "answers_per_cycle": answers,
            "history": [
                {
                    k: e.get(k)
                    for k in ("cycle", "heldout_accuracy", "accepted_direct", "accepted_rationalized", "train_steps")
                }
                for e in history
            ],
        },  # fmt: skip
        "curves": curves,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "quick": args.quick,
    }
    (out / "rl_results.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("figures", "arms", "seconds")}, indent=2))
    record({k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}, quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
