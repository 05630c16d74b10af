"""Subsets that represent the data: a seeded sample stratified by the label, never the first N rows.

Annotation files are often sorted by label (the Kinetics CSVs are), so "the first 7,000 rows" is a handful of
classes. Every `limit` in vstar (`source_limit`, `eval_limit`, the stage commands' `--limit`) goes through
`choose_indices`: rows are grouped into strata (the class for categorical labels, quantile bins for scores) and
drawn round-robin over the strata in a seeded order, so a limit of 10 x the number of classes gives 10 rows of
every class that has them, and a quality task's sample spans the whole score range. The chosen ids are written
next to the output (`subset-<split>.json`) so the run says exactly which rows it used.

```python
from vstar.subsets import choose_indices
choose_indices(["a", "a", "a", "b", "b", "c"], limit=3, seed=0)  # one row of each class
```
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import defaultdict
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SCORE_BINS = 10
# Label columns that carry a task's main score: a quality task is stratified by these, in score bins.
_SCORE_COLUMNS = ("dive_score", "score", "final_score", "rating")


def choose_indices(
    strata: Sequence[Hashable | None] | None, limit: int | None, seed: int, total: int | None = None
) -> list[int]:
    """Positions of a seeded sample of at most `limit` rows, as equal a number per stratum as the strata allow.

    Args:
        strata: each row's stratum (class name, score bin, ...); `None` or no strata: one stratum.
        limit: the sample size; `None` or at least the number of rows: every row.
        seed: the sample's seed (the same seed always gives the same rows).
        total: the number of rows when `strata` is None.

    Returns:
        Sorted row positions.
    """
    count = len(strata) if strata is not None else int(total or 0)
    if limit is not None and limit < 0:
        raise ValueError(f"A limit must be 0 or more, not {limit}.")
    if limit is None or limit >= count:
        return list(range(count))
    rng = random.Random(f"vstar-subset:{seed}")
    groups: dict[Any, list[int]] = defaultdict(list)
    for position in range(count):
        groups[strata[position] if strata is not None else None].append(position)
    order = sorted(groups, key=lambda k: (k is None, str(k)))
    rng.shuffle(order)
    queues = []
    for key in order:
        members = groups[key]
        rng.shuffle(members)
        queues.append(members)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit:
        for members in queues:
            if depth < len(members):
                chosen.append(members[depth])
                if len(chosen) == limit:
                    break
        depth += 1
    return sorted(chosen)


def score_bins(values: Sequence[float | None], bins: int = SCORE_BINS) -> list[int | None]:
    """The quantile bin (0 .. bins-1) of each value; `None` (or NaN) stays `None`."""
    known = sorted(float(v) for v in values if v is not None and not math.isnan(float(v)))
    if not known:
        return [None for _ in values]
    edges = [known[min(len(known) - 1, (len(known) * i) // bins)] for i in range(1, bins)]
    out: list[int | None] = []
    for value in values:
        if value is None or math.isnan(float(value)):
            out.append(None)
            continue
        out.append(sum(float(value) >= edge for edge in edges))
    return out


def stratum_column(task: Any, column_names: Sequence[str]) -> str | None:
    """The label column a task's subsets are stratified by.

    A task may name it (`stratify_by`); else a score column among its labels (quality tasks: score bins); else its
    first label column (the class).
    """
    explicit = getattr(task, "stratify_by", None)
    if explicit:
        return explicit if explicit in column_names else None
    fields = [f for f in getattr(task, "label_fields", ()) if f in column_names]
    for name in _SCORE_COLUMNS:
        if name in fields:
            return name
    return fields[0] if fields else None


def dataset_strata(dataset, column: str | None) -> list[Hashable | None] | None:
    """Each row's stratum for a `datasets.Dataset`: the class, or the score bin for numeric columns."""
    if column is None or column not in dataset.column_names:
        return None
    values = list(dataset[column])  # one column, through any row selection: no video bytes are read
    numeric = [v for v in values if v is not None]
    if numeric and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numeric):
        from datasets import ClassLabel

        if not isinstance(dataset.features.get(column), ClassLabel):
            return score_bins(values)
    return [json.dumps(v, sort_keys=True, default=str) if isinstance(v, (list, dict)) else v for v in values]


def select_subset(
    dataset,
    limit: int | None,
    seed: int,
    task: Any = None,
    offset: int = 0,
    record: str | Path | None = None,
    split: str = "",
):
    """A representative subset of a `datasets.Dataset`: rows after `offset`, sampled by `choose_indices`.

    Args:
        dataset: the split.
        limit: at most this many rows (`None`: all).
        seed: the sample's seed.
        task: the task whose label column gives the strata (see `stratum_column`); `None`: a plain seeded sample.
        offset: rows skipped first (in file order), e.g. seed clips kept out of the loop.
        record: a directory where `subset-<split>.json` lists the chosen ids, the seed and the strata counts.
        split: the split's name, for the record.
    """
    if offset < 0 or offset > len(dataset):
        raise ValueError(
            f"The offset {offset} is outside the split {split or ''} of {len(dataset)} rows: use 0 to {len(dataset)}."
        )
    if offset:
        dataset = dataset.select(range(offset, len(dataset)))
    if limit is None or limit >= len(dataset):
        subset = dataset
        strata = None
        column = None
    else:
        column = stratum_column(task, dataset.column_names) if task is not None else None
        strata = dataset_strata(dataset, column)
        subset = dataset.select(choose_indices(strata, limit, seed, total=len(dataset)))
    if record is not None:
        _record_subset(Path(record), subset, column, split, seed, limit, offset, len(dataset))
    return subset


def _record_subset(directory: Path, subset, column, split, seed, limit, offset, available) -> Path:
    from collections import Counter

    ids = list(subset["id"]) if "id" in subset.column_names else list(range(len(subset)))
    counts = None
    if column is not None:
        values = dataset_strata(subset, column) or []
        counts = {str(k): v for k, v in sorted(Counter(values).items(), key=lambda kv: str(kv[0]))}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"subset-{split or 'rows'}.json"
    payload = {
        "split": split,
        "seed": seed,
        "limit": limit,
        "offset": offset,
        "available_rows": available,
        "chosen_rows": len(ids),
        "stratified_by": column,
        "strata": counts,
        "ids": ids,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(path)
    if limit is not None and limit < available:
        logger.info(
            "%s: %d of %d rows, stratified by %s over %d strata (ids in %s)",
            split or "rows",
            len(ids),
            available,
            column or "nothing",
            len(counts or {}) or 1,
            path,
        )
    return path
