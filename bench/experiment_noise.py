"""The loop under label noise: how much held-out accuracy cross-entropy loses when a cycle's accepted answers are
partly wrong, and how much TaiLr and meta-weighting win back.

Run: `make bench-noise` (or `PYTHONPATH=src python bench/experiment_noise.py [--output-dir runs/bench-noise]
[--quick]`); the figures go to `bench/results.json` (keys `clean_ce`, `noise30_ce`, `noise30_tailr`,
`noise30_meta`, `noise50_*`: held-out accuracy, plus `noise*_meta_weight_gap`: the mean weight of clean minus
corrupted rows in the meta arm's last quarter of steps).

Setup, all on the demo (`vstar demo`'s shapes clips, tiny Qwen2.5-VL, recipe `recipes/demo/config_shapes_tiny.yaml`):
1. the demo's source, base model, 100-clip seed set and warm start (full finetune, 910 steps);
2. one Video-STaR cycle from the warm start (`vstar.cycle.CycleRunner`, no control): its accepted answers are the
   clean training data and its held-out accuracy is `clean_ce`;
3. copies of that cycle's accepted answers with 30% and 50% of the rows corrupted (seeded): the colour in the final
   `Answer:` line is replaced by another of the 12 colours, the reasoning before it is left as it was;
4. from the same warm start, the same LoRA settings and the same number of steps as the clean cycle, three arms per
   noise level: `ce`, `tailr` (gamma 0.1, w_min 0.3) and `sample_weighting: meta` (cross-entropy, Meta-Weight-Net
   meta-trained on the seed set, which is clean); each evaluated greedily on the 200 held-out clips as the loop does.

Every stage is resumable: a second run with the same `--output-dir` redoes only what is missing. `--quick` runs a
small version (a few clips and steps) to check that everything works; it records nothing.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import re
import time
from pathlib import Path

from demo_experiment import experiment_parser, start_demo_experiment
from results import record

from vstar.cycle import CycleRunner, RunState
from vstar.evaluate.run import evaluate_model
from vstar.generate.base import get_backend
from vstar.io import configs_yaml, load_split, split_file, write_parquet
from vstar.schema import INSTRUCTION_FEATURES
from vstar.sources.shapes import COLORS
from vstar.train.sft import SAMPLE_WEIGHTS_FILE, train

logger = logging.getLogger("experiment_noise")

NOISE_LEVELS = (0.3, 0.5)
ARMS = {
    "ce": {},
    "tailr": {"loss_type": "tailr", "tailr_gamma": 0.1, "tailr_min_weight": 0.3},
    "meta": {"sample_weighting": "meta"},
}
ANSWER_LINE = re.compile(r"(Answer:\s*)(\w+)")


def corrupt_answer(answer: str, rng: random.Random) -> str:
    """The answer with the colour of its `Answer:` line replaced by another colour (the reasoning untouched)."""
    matches = list(ANSWER_LINE.finditer(answer))
    if not matches:
        raise ValueError(f"no `Answer:` line in {answer!r}")
    last = matches[-1]
    wrong = rng.choice([c for c in COLORS if c != last.group(2)])
    return answer[: last.start(2)] + wrong + answer[last.end(2) :]


def write_corrupted(dataset_dir: Path, output: Path, share: float, seed: int) -> list[str]:
    """A copy of the accepted rows with `share` of them corrupted; returns the corrupted rows' ids."""
    rows = load_split(dataset_dir, "train").to_list()
    rng = random.Random(f"noise:{share}:{seed}")
    chosen = set(rng.sample(range(len(rows)), round(share * len(rows))))
    corrupted = []
    for index in sorted(chosen):
        row = rows[index]
        answer = corrupt_answer(row["answer"], rng)
        messages = copy.deepcopy(row["messages"])
        for part in messages[-1]["content"]:
            if part.get("type") == "text" and part.get("text") == row["answer"]:
                part["text"] = answer
        if messages[-1]["content"][-1].get("text") != answer:
            raise ValueError(f"row {row['id']}: the assistant message does not hold the answer text")
        row.update(answer=answer, messages=messages)
        corrupted.append(row["id"])
    write_parquet(output / split_file("train"), rows, INSTRUCTION_FEATURES)
    import yaml

    header = yaml.safe_dump({"configs": configs_yaml({"default": ["train"]})}, sort_keys=False)
    (output / "README.md").write_text(f"---\n{header}---\n\n{len(corrupted)} of {len(rows)} answers corrupted.\n")
    return corrupted


def meta_weight_gap(model_dir: Path, corrupted: set[str]) -> float | None:
    """Mean weight of clean minus corrupted rows over the last quarter of the meta arm's steps."""
    path = model_dir / SAMPLE_WEIGHTS_FILE
    if not path.exists():
        return None
    import pandas as pd

    frame = pd.read_parquet(path)
    late = frame[frame["step"] >= frame["step"].max() * 0.75]
    bad = late["id"].isin(corrupted)
    return float(late.loc[~bad, "weight"].mean() - late.loc[bad, "weight"].mean())


def main() -> int:
    args = experiment_parser(__doc__.splitlines()[0], "runs/bench-noise").parse_args()
    # The clean cycle: the loop's own generate -> verify -> rationalize -> assemble -> train -> evaluate.
    experiment = start_demo_experiment(args, "loop")
    out, started = experiment.out, experiment.started
    cycle_config, train_config = experiment.cycle_config, experiment.train_config
    cycle_config.num_cycles = 1
    seconds = {"setup": experiment.setup_seconds}
    runner = CycleRunner(cycle_config, train_config)
    history = runner.run()
    clean = history[1]
    steps = clean["train_steps"]
    dataset_dir = out / "loop" / "cycle-1" / "dataset"
    seconds["clean_cycle"] = time.perf_counter() - started - seconds["setup"]

    figures: dict[str, float | None] = {
        "warm_start": history[0]["heldout_accuracy"],
        "clean_ce": clean["heldout_accuracy"],
    }
    details: dict[str, dict] = {}
    state = RunState(out / "arms_state.json")
    for share in NOISE_LEVELS:
        tag = f"noise{round(share * 100)}"
        noisy_dir = out / tag / "dataset"
        if not state.done(f"{tag}/dataset"):
            state.mark(f"{tag}/dataset", write_corrupted(dataset_dir, noisy_dir, share, args.seed))
        corrupted = set(state.result(f"{tag}/dataset"))
        for arm, overrides in ARMS.items():
            key = f"{tag}_{arm}"
            arm_started = time.perf_counter()
            model_dir = out / tag / arm / "model"
            if not state.done(f"{key}/train"):
                config = copy.deepcopy(train_config)
                config.output_dir, config.dataset, config.init_adapter = str(model_dir), str(noisy_dir), None
                config.max_steps = steps
                for name, value in overrides.items():
                    setattr(config, name, value)
                if config.sample_weighting == "meta":
                    config.meta_dataset = str(out / "seed")
                state.mark(f"{key}/train", train(config))
            if not state.done(f"{key}/evaluate"):
                backend = get_backend(runner.generation, str(out / "warm-start"), str(model_dir))
                results = evaluate_model(
                    backend,
                    runner.eval_rows,
                    runner.task,
                    out / tag / arm / "eval",
                    runner.evaluation,
                    description={"model": str(out / "warm-start"), "adapter": str(model_dir), "arm": key},
                )
                state.mark(f"{key}/evaluate", results["metrics"])
            figures[key] = state.result(f"{key}/evaluate")["accuracy"]
            details[key] = {
                "train_loss": state.result(f"{key}/train")["train_loss"],
                "steps": state.result(f"{key}/train")["global_step"],
                "seconds": round(time.perf_counter() - arm_started, 1),
            }
            if arm == "meta":
                figures[f"{tag}_meta_weight_gap"] = meta_weight_gap(model_dir, corrupted)
            logger.info("%s: held-out accuracy %.3f", key, figures[key])

    seconds["total"] = time.perf_counter() - started
    summary = {
        "figures": figures,
        "arms": details,
        "clean_cycle": {k: clean.get(k) for k in ("accepted_direct", "accepted_rationalized", "train_steps")},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "quick": args.quick,
    }
    (out / "noise_results.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    for share in NOISE_LEVELS:
        tag = f"noise{round(share * 100)}"
        lost = figures["clean_ce"] - figures[f"{tag}_ce"]
        for arm in ("tailr", "meta"):
            won = figures[f"{tag}_{arm}"] - figures[f"{tag}_ce"]
            share_back = won / lost if lost > 0 else float("nan")
            print(f"{tag}: ce loses {lost:+.3f}; {arm} wins back {won:+.3f} ({share_back:.0%} of the loss)")
    record(
        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items() if k != "warm_start"},
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
