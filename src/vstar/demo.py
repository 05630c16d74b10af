"""The embedded demo: the whole loop on synthetic clips and a tiny model built offline, on a CPU.

```bash
vstar demo --output-dir runs/demo
```

1. build the shapes source dataset (`DIR/source`);
2. build a tiny, randomly initialised Qwen2.5-VL (`DIR/base-model`);
3. warm-start it by a short full finetune on a small seed subset of the training split (reference answers,
   plus hinted copies so the model learns to use a hint), as a real run starts from an instruction-tuned model
   (`DIR/warm-start`);
4. run the Video-STaR cycles on the rest of the training split with LoRA, each cycle continuing from the
   previous one, and a control trained on the seed subset alone for the same number of steps;
5. print the per-cycle table; `DIR/metrics.json` and `DIR/cycles.png` hold the results.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vstar.configs import CycleConfig, parse_configs
from vstar.cycle import CycleRunner, RunState
from vstar.io import configs_yaml, load_split, split_file, write_parquet
from vstar.schema import conversation
from vstar.tasks.base import load_task
from vstar.train.sft import VStarSFTConfig, train

logger = logging.getLogger(__name__)

DEMO_RECIPE = "demo/config_shapes_tiny.yaml"


@dataclass
class DemoConfig:
    """Settings of the demo around the recipe's loop settings."""

    output_dir: str = field(default="runs/demo", metadata={"help": "Where everything is written."})
    recipe: str | None = field(
        default=None, metadata={"help": "Loop recipe (default: the packaged recipes/demo/config_shapes_tiny.yaml)."}
    )
    architecture: str = field(default="qwen2_5_vl", metadata={"help": "Tiny model class: qwen2_5_vl or qwen2_vl."})
    seed_size: int = field(default=100, metadata={"help": "Training clips with reference answers (the seed set)."})
    warm_start_steps: int = field(default=910, metadata={"help": "Full-finetuning steps of the warm start."})
    warm_start_learning_rate: float = field(default=2e-3, metadata={"help": "Warm-start learning rate."})
    num_train: int = field(default=1000, metadata={"help": "Training clips of the shapes data set."})
    num_test: int = field(default=200, metadata={"help": "Held-out test clips."})
    num_cycles: int | None = field(default=None, metadata={"help": "Override the recipe's number of cycles."})
    seed: int = field(default=0, metadata={"help": "Seed of the data, the model and training."})
    hub_repo: str | None = field(
        default=None, metadata={"help": "Push every cycle to ORG/NAME (dataset and model repos); `--push-to-hub`."}
    )


def recipe_path(name: str) -> Path:
    """A packaged recipe (`recipes/` ships inside the package as `vstar.recipes`)."""
    return Path(str(resources.files("vstar.recipes") / name))


def seed_rows(source_dir: Path, size: int, task, seed: int) -> list[dict[str, Any]]:
    """Reference answers for the first `size` training clips, each asked directly and with the hint."""
    dataset = load_split(source_dir, "train").select(range(size))
    names = dataset.features["label"].names
    rows = []
    for row in dataset:
        label = task.label({**row, "label": names[row["label"]]})
        question = task.question(rng=random.Random(f"{seed}:{row['id']}"))
        answer = task.reference_answer(label)
        for prompt, hinted in (
            (task.direct_prompt(question), False),
            (task.rationalization_prompt(question, label), True),
        ):
            rows.append(
                {
                    "id": row["id"],
                    "video": row["video"],
                    "start": row["start"],
                    "end": row["end"],
                    "source": row["source"],
                    "task": task.name,
                    "label": json.dumps(label, sort_keys=True),
                    "question": question,
                    "answer": answer,
                    "messages": conversation(prompt, answer),
                    "rationalized": hinted,
                    "cycle": 0,
                    "verification": {"passed": True, "reason": "reference", "fields": []},
                    "generator": "reference",
                }
            )
    return rows


def write_seed_dataset(output: Path, rows: list[dict[str, Any]]) -> Path:
    from vstar.schema import INSTRUCTION_FEATURES

    write_parquet(output / split_file("train"), rows, INSTRUCTION_FEATURES)
    import yaml

    header = yaml.safe_dump({"configs": configs_yaml({"default": ["train"]}), "license": "cc0-1.0"}, sort_keys=False)
    (output / "README.md").write_text(
        f"---\n{header}---\n\n# Seed set of the vstar demo\n\nReference answers for {len(rows) // 2} training "
        "clips, each asked directly and with the label as a hint.\n"
    )
    return output


def print_table(history: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Video-STaR cycles")
    columns = [
        "cycle",
        "generated",
        "accepted_direct",
        "accepted_rationalized",
        "yield",
        "heldout_accuracy",
        "control_heldout_accuracy",
    ]
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    for entry in history:
        table.add_row(
            *(
                "—" if entry.get(c) is None else f"{entry[c]:.3f}" if isinstance(entry[c], float) else str(entry[c])
                for c in columns
            )
        )
    Console().print(table)


def prepare_demo(demo: DemoConfig, train_config: VStarSFTConfig, task=None) -> Path:
    """The demo's shapes source, tiny base model, seed set and full-finetuned warm start, each made once, in
    `demo.output_dir` (`source/`, `base-model/`, `seed/`, `warm-start/`); returns that directory.

    The benchmarks' experiments (noise, RL) start from the same warm start.

    Args:
        demo: sizes, seed and where to write.
        train_config: the training settings the warm start starts from (it is a full finetune of them).
        task: the task whose questions and answers make the seed set (default: `shapes`).
    """
    from vstar.sources.shapes import ShapesConfig, build_shapes
    from vstar.testing.tiny_models import build_tiny_vlm

    out = Path(demo.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = RunState(out / "demo_state.json")
    task = task or load_task("shapes")
    if not state.done("source"):
        build_shapes(
            ShapesConfig(output=str(out / "source"), num_train=demo.num_train, num_test=demo.num_test, seed=demo.seed)
        )
        state.mark("source")
    if not state.done("base_model"):
        build_tiny_vlm(out / "base-model", architecture=demo.architecture, seed=demo.seed)
        state.mark("base_model")
    if not state.done("seed"):
        write_seed_dataset(out / "seed", seed_rows(out / "source", demo.seed_size, task, demo.seed))
        state.mark("seed")
    if not state.done("warm_start"):
        warm = copy.deepcopy(train_config)
        warm.model_name_or_path, warm.output_dir, warm.dataset = (
            str(out / "base-model"),
            str(out / "warm-start"),
            str(out / "seed"),
        )
        warm.finetuning, warm.init_adapter = "full", None
        warm.max_steps, warm.learning_rate = demo.warm_start_steps, demo.warm_start_learning_rate
        state.mark("warm_start", train(warm))
    return out


def run_demo(demo: DemoConfig, cycle_config: CycleConfig, train_config: VStarSFTConfig) -> list[dict[str, Any]]:
    """Build data and model, warm-start, run the cycles; returns the per-cycle metrics."""
    started = time.perf_counter()
    out = prepare_demo(demo, train_config, load_task(cycle_config.task, cycle_config.task_options))
    cycle_config.source_dataset = str(out / "source")
    cycle_config.source_offset = demo.seed_size
    cycle_config.run_dir = str(out)
    cycle_config.control_dataset = str(out / "seed")
    if demo.num_cycles is not None:
        cycle_config.num_cycles = demo.num_cycles
    if demo.hub_repo:
        cycle_config.hub_repo = demo.hub_repo
    train_config.model_name_or_path = str(out / "warm-start")
    history = CycleRunner(cycle_config, train_config).run()
    print_table(history)
    logger.info("Demo finished in %.0f s; results in %s", time.perf_counter() - started, out)
    return history


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    (demo,) = parse_configs((DemoConfig,), list(argv or []))
    recipe = Path(demo.recipe) if demo.recipe else recipe_path(DEMO_RECIPE)
    cycle_config, train_config = parse_configs((CycleConfig, VStarSFTConfig), ["--config", str(recipe)])
    return run_demo(demo, cycle_config, train_config)
