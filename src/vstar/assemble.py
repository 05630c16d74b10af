"""Verify generated answers against the labels and assemble a cycle's instruction dataset.

Accepted rows (direct answers that pass, and rationalized answers that pass after a direct failure) form the
`default` config; every failed attempt goes to the `rejected` config with its verdict, so nothing generated is
lost. A rationalized row is stored with the question WITHOUT the hint: the model must learn to reach the label
from the video alone.

The answers of one cycle, verified and assembled (`task.direct_prompt` / `task.rationalization_prompt` made the
prompts; `generator` pins the model that answered, see `vstar.lineage.generator_name`):

>>> import tempfile
>>> out = tempfile.TemporaryDirectory()
>>> from vstar.tasks import get_task
>>> task = get_task("shapes")
>>> sources = {
...     clip: {"id": clip, "video": {"path": f"{clip}.mp4", "bytes": None}, "label": label}
...     for clip, label in [("a", "red square moving"), ("b", "blue square moving")]
... }
>>> def answer(clip, attempt, text):
...     return {"id": clip, "attempt": attempt, "question": "What colour is the square?", "answer": text}
>>> answers = [answer("a", "direct", "It is red. Answer: red square moving"), answer("b", "direct", "Answer: red")]
>>> direct = verify_generations(answers, sources, task)
>>> [row["verification"]["passed"] for row in direct]
[True, False]
>>> hinted = verify_generations([answer("b", "rationalized", "It is blue. Answer: blue square moving")], sources, task)
>>> stats = assemble_cycle(
...     sources, direct, hinted, task, cycle=1, output_dir=out.name, generator="tiny-model@sha256:0123"
... )
>>> stats["accepted_direct"], stats["accepted_rationalized"], stats["rejected"], stats["yield"]
(1, 1, 1, 1.0)
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vstar.io import ParquetRowWriter, configs_yaml, split_file
from vstar.schema import INSTRUCTION_FEATURES, conversation
from vstar.tasks.base import Task

logger = logging.getLogger(__name__)


def verify_generations(
    generations: Sequence[Mapping[str, Any]], sources: Mapping[str, Mapping[str, Any]], task: Task
) -> list[dict[str, Any]]:
    """Attach the label and the verdict to each generated answer."""
    verified = []
    for row in generations:
        label = task.label(sources[row["id"]])
        verdict = task.verify(row["answer"], label)
        verified.append({**row, "label": label, "verification": verdict.to_dict()})
    return verified


def _json_label(label: Mapping[str, Any]) -> str:
    return json.dumps(label, sort_keys=True, default=str)


def instruction_row(source: Mapping[str, Any], verified: Mapping[str, Any], task: Task, cycle: int) -> dict[str, Any]:
    """The instruction-dataset row of one verified answer; the user turn is the direct prompt (no hint)."""
    return {
        "id": source["id"],
        "video": source["video"],
        "start": source.get("start"),
        "end": source.get("end"),
        "source": source.get("source"),
        "task": task.name,
        "label": _json_label(verified["label"]),
        "question": verified["question"],
        "answer": verified["answer"],
        "messages": conversation(task.direct_prompt(verified["question"]), verified["answer"]),
        "rationalized": verified["attempt"] == "rationalized",
        "cycle": cycle,
        "verification": verified["verification"],
        "generator": verified["generator"],
    }


def assemble_cycle(
    sources: Mapping[str, Mapping[str, Any]],
    direct: Sequence[Mapping[str, Any]],
    rationalized: Sequence[Mapping[str, Any]],
    task: Task,
    cycle: int,
    output_dir: str | Path,
    split: str = "train",
    generator: str | None = None,
    max_accepted_per_clip: int | None = None,
) -> dict[str, Any]:
    """Write `default` (accepted) and `rejected` Parquet files for one cycle; return the counts.

    With several answers per clip (`GenerationRequest.sample`), every distinct verified answer of a clip is kept,
    up to `max_accepted_per_clip`; an answer repeated word for word within a clip is stored once (accepted or
    rejected, per attempt). A clip's hinted retries count only when none of its direct answers passed.

    Args:
        sources: source rows by id.
        direct, rationalized: verified generation rows (see `verify_generations`).
        task: the task (for prompts and its name).
        cycle: the cycle number stored in each row.
        output_dir: the dataset directory (Hub layout).
        split: the split name the rows are written under.
        generator: the model that answered, pinned (`base@revision+adapter@revision`), stored in every row's
            `generator` column; default the `generator` each generation row carries.
        max_accepted_per_clip: most accepted answers per clip (`None`: every distinct one).
    """
    if generator is not None:
        direct = [{**r, "generator": generator} for r in direct]
        rationalized = [{**r, "generator": generator} for r in rationalized]
    output_dir = Path(output_dir)
    passed_direct = {r["id"] for r in direct if r["verification"]["passed"]}
    accepted_direct = accepted_rationalized = duplicates = over_limit = 0
    rejected_reasons: Counter[str] = Counter()
    # (clip, attempt, passed, answer): an answer repeated by the samples of one prompt is stored once
    seen: set[tuple[str, str, bool, str]] = set()
    accepted_per_clip: Counter[str] = Counter()
    with (
        ParquetRowWriter(output_dir / split_file(split), INSTRUCTION_FEATURES) as accepted,
        ParquetRowWriter(output_dir / split_file(split, "rejected"), INSTRUCTION_FEATURES) as rejected,
    ):
        for row in [*direct, *rationalized]:
            if row["attempt"] == "rationalized" and row["id"] in passed_direct:
                continue  # a hinted retry of a clip that already passed is not a training example
            passed = row["verification"]["passed"]
            answer_key = (row["id"], row["attempt"], passed, " ".join(str(row["answer"]).split()))
            if answer_key in seen:
                duplicates += 1
                continue
            seen.add(answer_key)
            if passed and max_accepted_per_clip is not None and accepted_per_clip[row["id"]] >= max_accepted_per_clip:
                over_limit += 1
                continue
            out = instruction_row(sources[row["id"]], row, task, cycle)
            if passed:
                accepted.write(out)
                accepted_per_clip[row["id"]] += 1
                if row["attempt"] == "rationalized":
                    accepted_rationalized += 1
                else:
                    accepted_direct += 1
            else:
                rejected.write(out)
                rejected_reasons[f"{row['attempt']}/{row['verification']['reason']}"] += 1
    generated = len({r["id"] for r in direct})
    hinted = len({r["id"] for r in rationalized if r["id"] not in passed_direct})
    rejected_direct = sum(n for k, n in rejected_reasons.items() if k.startswith("direct/"))
    accepted = accepted_direct + accepted_rationalized
    clips_accepted = len(accepted_per_clip)
    stats = {
        "cycle": cycle,
        # Clips asked directly; `hinted` of them were asked again with the label as a hint.
        "generated": generated,
        "hinted": hinted,
        # Answers: one per clip and attempt, or `num_samples_per_clip`.
        "answers_direct": len(direct),
        "answers_hinted": sum(1 for r in rationalized if r["id"] not in passed_direct),
        "accepted_direct": accepted_direct,
        "accepted_rationalized": accepted_rationalized,
        "accepted": accepted,
        # Answers rejected, direct and hinted: up to `generated + hinted`, never counted per clip.
        "rejected": sum(rejected_reasons.values()),
        "rejected_direct": rejected_direct,
        "rejected_hinted": sum(rejected_reasons.values()) - rejected_direct,
        "duplicate_answers": duplicates,
        "accepted_over_limit": over_limit,
        "clips_with_accepted_answer": clips_accepted,
        "clips_without_accepted_answer": generated - clips_accepted,
        "rejected_by_reason": dict(rejected_reasons.most_common()),
        # Share of the clips with at least one accepted answer.
        "yield": clips_accepted / generated if generated else None,
        "direct_yield": len(passed_direct) / generated if generated else None,
        "generator": ", ".join(sorted({r["generator"] for r in direct})),
    }
    (output_dir / "assemble_stats.json").write_text(json.dumps(stats, indent=2))
    logger.info(
        "cycle %d: %d clips answered directly, %d accepted; %d hinted retries, %d accepted; %d clips without an "
        "accepted answer (yield %.1f%%)",
        cycle,
        generated,
        accepted_direct,
        hinted,
        accepted_rationalized,
        stats["clips_without_accepted_answer"],
        100 * (stats["yield"] or 0),
    )
    return stats


def instruction_configs(split: str = "train") -> list[dict[str, Any]]:
    """The README `configs:` of an instruction dataset directory."""
    return configs_yaml({"default": [split], "rejected": [split]})
