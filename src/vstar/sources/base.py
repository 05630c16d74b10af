"""What every source builder shares: the registry, the Hub-layout writer, the card and the build report.

A builder turns a labeled video collection into a source dataset directory (`data/<split>-*.parquet`, a
README.md card with `configs:`, `build_report.json`) that `datasets.load_dataset(dir)` loads.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Features

from vstar.cards import markdown_table, write_card
from vstar.io import ParquetRowWriter, configs_yaml, split_file
from vstar.registry import Registry

logger = logging.getLogger(__name__)

SOURCES: Registry = Registry("source")


def check_writable(output: str | Path) -> Path:
    """Fail before any work starts when the output directory cannot be written."""
    output = Path(output)
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / ".vstar-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"Cannot write to the output directory {output}: {err}. Choose another --output."
        ) from err
    return output


def _feature_type(feature: Any) -> str:
    if isinstance(feature, ClassLabel):
        return f"ClassLabel ({feature.num_classes} classes)"
    return type(feature).__name__ + (f" ({feature.dtype})" if getattr(feature, "dtype", None) else "")


def write_source_dataset(
    rows: Mapping[str, Iterable[Mapping[str, Any]]],
    features: Features,
    output: str | Path,
    card: Mapping[str, Any],
    report: Mapping[str, Any] | None = None,
) -> Path:
    """Stream each split's rows to Parquet, then write `build_report.json` and the dataset card.

    Args:
        rows: `{split: rows}`; rows are consumed lazily, one row group at a time.
        features: the dataset features (see `vstar.schema.source_features`).
        output: the dataset directory.
        card: card fields: `pretty_name`, `description`, `license`, `build_command`, optional `repo_id`.
        report: `{"rows_read": ..., "skipped": [...]}` from the builder; rows written are counted here.
    """
    output = check_writable(output)
    counts: dict[str, int] = {}
    class_counts: dict[str, Counter] = {}
    label_feature = features.get("label")
    for split, split_rows in rows.items():
        class_counts[split] = Counter()
        with ParquetRowWriter(output / split_file(split), features, batch_size=256) as writer:
            for row in split_rows:
                writer.write(row)
                if isinstance(label_feature, ClassLabel) and row.get("label") is not None:
                    class_counts[split][row["label"]] += 1
        counts[split] = writer.rows_written
    report = {"rows_read": sum(counts.values()), "skipped": [], **(report or {})}
    report["rows_written"] = sum(counts.values())
    (output / "build_report.json").write_text(json.dumps(report, indent=2))
    _write_source_card(output, features, counts, class_counts, card, report)
    logger.info("Wrote %s rows (%s) to %s", report["rows_written"], counts, output)
    return output


def _write_source_card(output, features, counts, class_counts, card, report) -> None:
    metadata = {
        "pretty_name": card.get("pretty_name", output.name),
        "license": card.get("license", "other"),
        "task_categories": ["video-text-to-text"],
        "tags": ["video", "vstar", "video-star"],
        "configs": configs_yaml({"default": list(counts)}),
    }
    label_feature = features.get("label")
    class_table = None
    if isinstance(label_feature, ClassLabel):
        class_rows = [
            {"class": name, **{split: class_counts[split].get(i, 0) for split in counts}}
            for i, name in enumerate(label_feature.names)
        ]
        class_table = markdown_table(class_rows)
    write_card(
        output / "README.md",
        "source_dataset.md.j2",
        metadata,
        description=card.get("description", ""),
        build_command=card.get("build_command", "vstar build"),
        repo_id=card.get("repo_id", str(output)),
        revision=card.get("revision"),
        schema_table=markdown_table([{"column": k, "type": _feature_type(v)} for k, v in features.items()]),
        split_table=markdown_table([{"split": s, "rows": n} for s, n in counts.items()]),
        class_table=class_table,
        report=report,
        skipped_table=markdown_table(report["skipped"][:50]),
    )
