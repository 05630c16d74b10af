"""Single stages of the loop as commands: `vstar generate`, `vstar verify` and `vstar assemble`.

`vstar cycle` runs them for you; on their own they let you look at one model's answers and verdicts, or run
generation on a cluster and verification elsewhere. Under `torchrun` / `accelerate launch` every process answers
its share of the clips and the main process merges them into `<output_dir>/<attempt>.parquet`.

With the run's seed, subset and `--cycle K`, the stages ask the questions cycle K of `vstar cycle` asks and
assemble the same instruction dataset, so a cycle can be run stage by stage (on different machines):

```bash
vstar generate --model runs/demo/warm-start --dataset runs/demo/source --split train --task shapes \
    --output_dir runs/gen --limit 64
torchrun --nproc_per_node 8 -m vstar.cli generate ...   # same arguments, one share per GPU
vstar verify --generations runs/gen --dataset runs/demo/source --split train --task shapes --output verified.parquet
vstar verify --answers answers.jsonl --dataset runs/demo/source --split train --task shapes  # answers made elsewhere

# cycle 1 of a run, stage by stage (common: --dataset ... --split train --task shapes --offset 100 --limit 900)
vstar generate --model M --cycle 1 --output_dir runs/c1 $COMMON
vstar verify --generations runs/c1 --output runs/c1/direct-verified.parquet $COMMON
vstar generate --model M --cycle 1 --attempt rationalized --retry_failed runs/c1/direct-verified.parquet \
    --output_dir runs/c1 $COMMON
vstar assemble --generations runs/c1 --cycle 1 --output runs/c1/dataset $COMMON
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
from vstar.errors import InputError
from vstar.generate.base import (
    GenerationSettings,
    build_requests,
    get_backend,
    merge_generations,
    read_generations,
    run_generation,
)
from vstar.io import SourceRows, load_split, write_parquet
from vstar.schema import GENERATION_FEATURES, VERIFICATION
from vstar.subsets import select_subset
from vstar.tasks.base import Task, load_task

logger = logging.getLogger(__name__)


@dataclass
class StageData:
    """The source rows a stage works on."""

    dataset: str = field(default="", metadata={"help": "Source dataset (directory or Hub repo)."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Source dataset revision."})
    split: str = field(default="train", metadata={"help": "Split."})
    limit: int | None = field(
        default=None, metadata={"help": "Use at most this many rows: a seeded sample stratified by the label."}
    )
    subset_seed: int = field(default=0, metadata={"help": "Seed of the `limit` sample (a cycle's: the run's `seed`)."})
    offset: int = field(
        default=0, metadata={"help": "Skip this many rows of the split first (a cycle's `source_offset`)."}
    )
    task: str = field(default="action_recognition", metadata={"help": "Task name."})
    task_options: dict | str | None = field(default=None, metadata={"help": "Task options (mapping or JSON)."})

    def select(self, record: str | Path | None = None) -> tuple[SourceRows, Task]:
        """The rows by id (with `limit`, a seeded sample stratified by the label, its ids written to `record`) and
        the task. A row's `video` is read when it is looked up."""
        dataset = load_split(self.dataset, self.split, revision=self.dataset_revision)
        task = load_task(self.task, self.task_options, features=dataset.features)
        dataset = select_subset(
            dataset, self.limit, seed=self.subset_seed, task=task, offset=self.offset, record=record, split=self.split
        )
        return SourceRows(dataset), task

    def load(self, record: str | Path | None = None) -> tuple[list[dict[str, Any]], Task]:
        """The rows as `select` chooses them, each row's `video` read when its clip is decoded."""
        sources, task = self.select(record)
        return sources.lazy_rows(), task


@dataclass
class GenerateConfig(StageData):
    """`vstar generate`: answer the task's question about every clip."""

    model: str = field(default="", metadata={"help": "Model (directory or Hub id)."})
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter to merge."})
    output_dir: str = field(default="generations", metadata={"help": "Where answer chunks are written."})
    attempt: str = field(default="direct", metadata={"help": "`direct`, or `rationalized` (label as a hint)."})
    cycle: int | None = field(
        default=None,
        metadata={
            "help": "Ask the questions `vstar cycle` asks in cycle K (drawn from seed * 1000 + K, `seed` the run's); "
            "default: drawn from `seed`."
        },
    )
    num_samples: int = field(
        default=1, metadata={"help": "Answers per clip (a cycle's `num_samples_per_clip`; sample with --temperature)."}
    )
    retry_failed: str | None = field(
        default=None,
        metadata={
            "help": "With `--attempt rationalized`: ask only the clips whose answers failed in this `vstar verify` "
            "output (the loop's hinted retries); default: every clip."
        },
    )

    def question_seed(self, seed: int) -> int:
        """The seed the questions are drawn from: the loop's for `cycle`, else the sampling seed."""
        return seed if self.cycle is None else seed * 1000 + self.cycle


@dataclass
class VerifyConfig(StageData):
    """`vstar verify`: judge generated answers against the labels."""

    generations: str = field(default="generations", metadata={"help": "Output directory of `vstar generate`."})
    answers: str | None = field(
        default=None,
        metadata={
            "help": 'JSON Lines file of answers made elsewhere (rows `{"id", "answer"}`, e.g. from your own vLLM '
            "server), verified instead of `--generations`."
        },
    )
    attempt: str = field(default="direct", metadata={"help": "Which pass to verify."})
    output: str = field(default="verified.parquet", metadata={"help": "Parquet file of answers with verdicts."})


def read_answers(path: str | Path, attempt: str = "direct") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Answers made elsewhere, as generation rows: one JSON object per line with `id` and `answer`.

    Optional keys: `question`, `prompt`, `generator` (default: `answers:<file name>`). Lines that are not such an
    object, and repeated ids, are skipped and reported rather than stopping the run.

    Args:
        path: the JSON Lines file.
        attempt: the pass the answers are recorded as.

    Returns:
        `(rows, skipped)`, where each skipped entry names the line and why.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The answers file {path} does not exist; give a JSON Lines file of {{id, answer}}.")
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                skipped.append({"line": number, "reason": f"not JSON ({err.msg})"})
                continue
            if not isinstance(record, dict) or "id" not in record or "answer" not in record:
                skipped.append({"line": number, "reason": "not an object with `id` and `answer`"})
                continue
            clip_id = str(record["id"])
            if clip_id in seen:
                skipped.append({"line": number, "reason": f"repeated id {clip_id!r} (the first answer is kept)"})
                continue
            seen.add(clip_id)
            rows.append(
                {
                    "id": clip_id,
                    "attempt": attempt,
                    "sample": 0,
                    "question": str(record.get("question") or ""),
                    "prompt": str(record.get("prompt") or ""),
                    "answer": "" if record["answer"] is None else str(record["answer"]),
                    "generator": str(record.get("generator") or f"answers:{path.name}"),
                }
            )
    return rows, skipped


@dataclass
class AssembleConfig(StageData):
    """`vstar assemble`: verify a cycle's answers and write its instruction dataset, as `vstar cycle` does."""

    generations: str = field(
        default="generations",
        metadata={"help": "Output directory of `vstar generate`: its `direct` and (if any) `rationalized` answers."},
    )
    cycle: int = field(default=1, metadata={"help": "The cycle number stored in every row."})
    output: str = field(default="dataset", metadata={"help": "Instruction dataset directory (Hub layout)."})
    generator: str | None = field(
        default=None,
        metadata={
            "help": "The model that answered, stored in every row (default: the one recorded with each answer)."
        },
    )
    max_accepted_per_clip: int | None = field(
        default=None, metadata={"help": "Most distinct verified answers kept per clip (default: every one)."}
    )


def failed_ids(verified: str | Path) -> list[str]:
    """The ids whose answers failed in a `vstar verify` output (what the loop retries with the label as a hint)."""
    path = Path(verified)
    if not path.is_file():
        raise InputError(f"{path} does not exist: give the Parquet file `vstar verify --output` wrote.")
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["id", "verification"])
    verdicts = list(zip(table.column("id").to_pylist(), table.column("verification").to_pylist()))
    # With several answers per clip, a clip is retried only when none of them passed.
    return sorted({clip for clip, _ in verdicts} - {clip for clip, verdict in verdicts if verdict["passed"]})


def generate_main(argv: list[str] | None = None) -> int:
    config, settings = parse_configs((GenerateConfig, GenerationSettings), argv)
    if config.attempt not in ("direct", "rationalized"):
        raise ValueError(f"attempt must be `direct` or `rationalized`, not {config.attempt!r}.")
    if config.retry_failed and config.attempt != "rationalized":
        raise InputError("--retry_failed selects the clips of a hinted retry: use it with --attempt rationalized.")
    rows, task = config.load(record=config.output_dir if is_main_process() else None)
    if config.retry_failed:
        wanted = set(failed_ids(config.retry_failed))
        rows = [row for row in rows if row["id"] in wanted]
        logger.info("%d clips whose answers failed in %s", len(rows), config.retry_failed)
    requests = build_requests(
        task, rows, config.attempt, seed=config.question_seed(settings.seed), num_samples=config.num_samples
    )
    backend = get_backend(settings, config.model, config.adapter)
    answered = run_generation(requests, backend, Path(config.output_dir), config.attempt, settings)
    if is_main_process():
        merged = merge_generations(config.output_dir, config.attempt)
        logger.info("%d answers in %s", len(requests), merged)
    return answered


def assemble_main(argv: list[str] | None = None) -> dict[str, Any]:
    """`vstar assemble`: the verified answers of `vstar generate` as a cycle's instruction dataset, with its card."""
    from vstar.assemble import assemble_cycle, verify_generations
    from vstar.cards import write_instruction_card
    from vstar.configs import CycleConfig

    (config,) = parse_configs((AssembleConfig,), argv)
    sources, task = config.select()
    passes = {}
    for attempt in ("direct", "rationalized"):
        answered = read_generations(config.generations, attempt)
        unknown = sum(g["id"] not in sources for g in answered)
        if unknown:
            logger.warning("%d %s answers have ids not in the rows used; they are left out", unknown, attempt)
        passes[attempt] = verify_generations([g for g in answered if g["id"] in sources], sources, task)
    if not passes["direct"]:
        raise InputError(
            f"{config.generations} has no direct answers for the rows of split {config.split!r}: run "
            "`vstar generate` first, or check --generations, --dataset and --split."
        )
    # As in the loop: a hinted retry counts only for a clip whose direct answer failed.
    failed = {r["id"] for r in passes["direct"]} - {r["id"] for r in passes["direct"] if r["verification"]["passed"]}
    rationalized = [r for r in passes["rationalized"] if r["id"] in failed]
    stats = assemble_cycle(
        sources,
        passes["direct"],
        rationalized,
        task,
        config.cycle,
        config.output,
        generator=config.generator,
        max_accepted_per_clip=config.max_accepted_per_clip,
    )
    card_config = CycleConfig(
        source_dataset=config.dataset,
        source_revision=config.dataset_revision,
        task=config.task,
        task_options=config.task_options,
    )
    write_instruction_card(config.output, stats=stats, config=card_config, history=[])
    print(json.dumps(stats, indent=2, default=str))
    return stats


def verify_main(argv: list[str] | None = None) -> dict[str, Any]:
    from vstar.assemble import verify_generations

    (config,) = parse_configs((VerifyConfig,), argv)
    rows, task = config.load()
    sources = {r["id"]: r for r in rows}
    skipped: list[dict[str, Any]] = []
    if config.answers:
        answered, skipped = read_answers(config.answers, config.attempt)
        for entry in skipped:
            logger.warning("%s, line %d skipped: %s", config.answers, entry["line"], entry["reason"])
    else:
        answered = read_generations(config.generations, config.attempt)
    unknown = [g["id"] for g in answered if g["id"] not in sources]
    if unknown:
        where = f"the {len(sources)} rows used" if config.limit is not None else f"split {config.split!r}"
        logger.warning(
            "%d answers have ids not in %s of %s (e.g. %s); they are not verified",
            len(unknown),
            where,
            config.dataset,
            ", ".join(unknown[:3]),
        )
    generations = [g for g in answered if g["id"] in sources]
    if not generations:
        # An empty output would look like a finished verification: say what is missing instead.
        origin = config.answers or f"{config.generations} ({config.attempt}-rank*.parquet)"
        found = f"{len(answered)} answers, none for the rows of split {config.split!r}" if answered else "no answers"
        raise InputError(
            f"{origin} has {found}: run `vstar generate` (with the same --attempt) first, or check --split, "
            "--dataset and --attempt."
        )
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
    summary["unknown_ids"] = len(unknown)
    summary["unknown_id_examples"] = unknown[:10]
    if config.answers:
        summary["skipped_lines"] = skipped
    print(json.dumps(summary, indent=2))
    return summary
