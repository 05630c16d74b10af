"""The columns of a question-answer instruction dataset, and its dataset directory (Hub layout with a card).

`vstar qa` writes it from captions; `vstar build llava` writes it from LLaVA-Video conversation JSON; `vstar train`
trains on it and `vstar export --format llava` writes it back out. It is vstar's instruction dataset
(`vstar.schema.INSTRUCTION_FEATURES`) plus the columns that say what kind of item a row is.

```bash
vstar qa --captions data/captions --model Qwen/Qwen2.5-7B-Instruct --output data/qa
```
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datasets import Features, Value

from vstar.io import configs_yaml, dataset_info_yaml, split_file
from vstar.schema import INSTRUCTION_FEATURES

FORMATS = ("open", "multiple_choice")

QA_FEATURES = Features(
    {
        **INSTRUCTION_FEATURES,
        # The clip the row is about (`id` is the row's own id: one clip has many questions).
        "clip_id": Value("string"),
        "question_type": Value("string"),
        # `open` or `multiple_choice` (then `options` holds the four texts, lettered A-D in order).
        "format": Value("string"),
        "options": [Value("string")],
        # The captioner whose description the item was written from (`generator` is the model that wrote the item).
        "teacher": Value("string"),
        # The collection a row came from (LLaVA-Video's `data_source`).
        "data_source": Value("string"),
    }
)


def accepted_verdict(reason: str = "accepted", detail: str = "") -> dict[str, Any]:
    """The `verification` of a row every filter let through."""
    return {"passed": True, "reason": reason, "fields": [] if not detail else [_field(True, reason, detail)]}


def rejected_verdict(reason: str, detail: str = "", name: str = "item") -> dict[str, Any]:
    """The `verification` of a rejected row: the filter's reason and what it found."""
    return {"passed": False, "reason": reason, "fields": [_field(False, reason, detail, name)]}


def _field(passed: bool, reason: str, detail: str, name: str = "item") -> dict[str, Any]:
    return {"name": name, "passed": passed, "expected": None, "found": None, "reason": reason, "detail": detail}


def write_dataset_card(
    output: str | Path,
    counts: Mapping[str, Mapping[str, int]],
    *,
    pretty_name: str,
    description: str,
    command: str,
    license: str = "other",
) -> Path:
    """The README.md of a QA instruction dataset: `configs:` (default and rejected), features and a short text.

    Args:
        output: the dataset directory.
        counts: `{config: {split: rows}}` of the Parquet files written.
        pretty_name, description, command: what the card says: the title, what the rows are, how they were made.
        license: the card's licence field.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    output = Path(output)
    present = {config: {s: n for s, n in splits.items() if n} for config, splits in counts.items()}
    present = {config: splits for config, splits in present.items() if splits}
    data = DatasetCardData(
        pretty_name=pretty_name,
        license=license,
        task_categories=["video-text-to-text"],
        tags=["video", "vstar", "video-qa"],
        configs=configs_yaml({config: list(splits) for config, splits in present.items()}),
        dataset_info=dataset_info_yaml(output, QA_FEATURES, present),
    )
    rows = "\n".join(f"| {c} | {split} | {n} |" for c, splits in present.items() for split, n in splits.items())
    text = (
        f"---\n{data.to_yaml()}\n---\n\n# {pretty_name}\n\n{description}\n\nMade with `{command}`.\n\n"
        "| config | split | rows |\n|---|---|---|\n"
        f"{rows}\n\n"
        "`messages` is TRL's conversational format (the video is the first part of the first user turn); "
        "`format` is `open` or `multiple_choice` (then `options` are lettered A-D in order and the answer is a "
        "letter). The `rejected` config keeps every item a filter left out, with the reason in "
        "`verification.reason`.\n\n"
        '```python\nfrom datasets import load_dataset\n\nds = load_dataset(PATH, split="train")\n```\n'
    )
    DatasetCard(text).save(output / "README.md")
    return output / "README.md"


def split_path(output: str | Path, split: str, config: str = "default") -> Path:
    """Where a config's split is written in the dataset directory."""
    return Path(output) / split_file(split, config)
