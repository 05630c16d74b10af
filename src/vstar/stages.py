"""Single stages of the loop as commands: `vstar generate` and `vstar verify`.

`vstar cycle` runs them for you; on their own they let you look at one model's answers and verdicts, or run
generation on a cluster and verification elsewhere. Under `torchrun` / `accelerate launch` every process answers
its share of the clips and the main process merges them into `<output_dir>/<attempt>.parquet`.

```bash
vstar generate --model runs/demo/warm-start --dataset runs/demo/source --split train --task shapes \
    --output_dir runs/gen --limit 64
torchrun --nproc_per_node 8 -m vstar.cli generate ...   # same arguments, one share per GPU
vstar verify --generations runs/gen --dataset runs/demo/source --split train --task shapes --output verified.parquet
```
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Features, Value

from vstar.configs import parse_configs
from vstar.distributed import is_main_process
from vstar.generate.base import (
    GenerationRequest,
    GenerationSettings,
    get_backend,
    merge_generations,
    read_generations,
    run_generation,
)
from vstar.io import load_split, rows_with_class_names, write_parquet
from vstar.schema import GENERATION_FEATURES, VERIFICATION
from vstar.tasks.base import Task, draw_questions, get_task

logger = logging.getLogger(__name__)


@dataclass
class StageData:
    """The source rows a stage works on."""

    dataset: str = field(default="", metadata={"help": "Source dataset (directory or Hub repo)."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Source dataset revision."})
    split: str = field(default="train", metadata={"help": "Split."})
    limit: int | None = field(default=None, metadata={"help": "Use at most this many rows."})
    task: str = field(default="action_recognition", metadata={"help": "Task name."})
    task_options: dict | str | None = field(default=None, metadata={"help": "Task options (mapping or JSON)."})

    def load(self) -> tuple[list[dict[str, Any]], Task]:
        options = json.loads(self.task_options) if isinstance(self.task_options, str) else self.task_options
        dataset = load_split(self.dataset, self.split, revision=self.dataset_revision)
        if self.limit is not None:
            dataset = dataset.select(range(min(self.limit, len(dataset))))
        return rows_with_class_names(dataset), get_task(self.task, **(options or {}))


@dataclass
class GenerateConfig(StageData):
    """`vstar generate`: answer the task's question about every clip."""

    model: str = field(default="", metadata={"help": "Model (directory or Hub id)."})
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter to merge."})
    output_dir: str = field(default="generations", metadata={"help": "Where answer chunks are written."})
    attempt: str = field(default="direct", metadata={"help": "`direct`, or `rationalized` (label as a hint)."})


@dataclass
class VerifyConfig(StageData):
    """`vstar verify`: judge generated answers against the labels."""

    generations: str = field(default="generations", metadata={"help": "Output directory of `vstar generate`."})
    attempt: str = field(default="direct", metadata={"help": "Which pass to verify."})
    output: str = field(default="verified.parquet", metadata={"help": "Parquet file of answers with verdicts."})


def generate_main(argv: list[str] | None = None) -> int:
    config, settings = parse_configs((GenerateConfig, GenerationSettings), argv)
    if config.attempt not in ("direct", "rationalized"):
        raise ValueError(f"attempt must be `direct` or `rationalized`, not {config.attempt!r}.")
    rows, task = config.load()
    questions = draw_questions(task, [r["id"] for r in rows], seed=settings.seed)
    requests = []
    for row, question in zip(rows, questions):
        if config.attempt == "direct":
            prompt = task.direct_prompt(question)
        else:
            prompt = task.rationalization_prompt(question, task.label(row))
        requests.append(
            GenerationRequest(
                row["id"], config.attempt, question, prompt, row["video"], row.get("start"), row.get("end")
            )
        )
    backend = get_backend(settings, config.model, config.adapter)
    answered = run_generation(requests, backend, Path(config.output_dir), config.attempt, settings)
    if is_main_process():
        merged = merge_generations(config.output_dir, config.attempt)
        logger.info("%d answers in %s", len(requests), merged)
    return answered


def verify_main(argv: list[str] | None = None) -> dict[str, Any]:
    from vstar.assemble import verify_generations

    (config,) = parse_configs((VerifyConfig,), argv)
    rows, task = config.load()
    sources = {r["id"]: r for r in rows}
    generations = [g for g in read_generations(config.generations, config.attempt) if g["id"] in sources]
    verified = verify_generations(generations, sources, task)
    features = Features({**GENERATION_FEATURES, "label": Value("string"), "verification": VERIFICATION})
    write_parquet(
        config.output,
        ({**v, "label": json.dumps(v["label"], sort_keys=True, default=str)} for v in verified),
        features,
    )
    reasons = Counter(v["verification"]["reason"] for v in verified)
    summary = {
        "answers": len(verified),
        "passed": reasons.pop("match", 0),
        "failed_by_reason": dict(reasons.most_common()),
    }
    summary["pass_rate"] = summary["passed"] / len(verified) if verified else None
    print(json.dumps(summary, indent=2))
    return summary
