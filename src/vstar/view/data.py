"""The data layer of `vstar view`: a run's (or a dataset's) rows, filtered and paged without loading the run.

Rows stay in their Parquet files. Counting with no filter reads only the files' footers; a filter reads only the
small columns it needs (`rationalized`, `label`, `verification`; `question_type`, `format` and `teacher` of QA and
caption datasets; `question` and `answer` for a text search), once per file, and a page reads only the row groups
that hold its rows, without the video column. A clip's video is read for the one row shown.

```python
from vstar.view.data import open_view, RowFilter
view = open_view("runs/demo")
view.count(RowFilter(cycle=1, status="rejected")), view.page(RowFilter(cycle=1, status="rejected"), 0, 20)
qa = open_view("data/qa")
qa.facets(), qa.facet_values("question_type"), qa.count(RowFilter(question_type="count", format="open"))
```
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vstar.errors import InputError

logger = logging.getLogger(__name__)

STATUS_BY_CONFIG = {"default": "accepted", "rejected": "rejected"}
# Columns a filter may need: read once per file, kept as Arrow arrays.
INDEX_COLUMNS = ("rationalized", "label", "verification")
TEXT_COLUMNS = ("question", "answer", "description")
# String columns of the second path's datasets, filtered by equality: QA datasets (`vstar.synthesize.qa_schema`) have
# all three, caption and selection datasets `teacher`. A view offers the ones its files have.
FACET_COLUMNS = ("question_type", "format", "teacher")
# Never read for the table: they are large (embedded videos, full conversations).
HEAVY_COLUMNS = ("video", "messages")


@dataclass
class RowFilter:
    """What the answers table shows; `None` (or "") is no constraint.

    Args:
        cycle: one cycle's rows.
        status: `accepted` or `rejected`.
        kind: `direct` or `rationalized`.
        label_class: the label's class (see `label_class`).
        reason: the verdict's reason (e.g. `label:mismatch`).
        text: a case-insensitive substring of the question, the answer or the description.
        question_type: a QA item's type (one of LLaVA-Video-178K's 16).
        format: a QA item's format (`open` or `multiple_choice`).
        teacher: the captioner a caption (or the description a QA item was written from) came from.
    """

    cycle: int | None = None
    status: str | None = None
    kind: str | None = None
    label_class: str | None = None
    reason: str | None = None
    text: str | None = None
    question_type: str | None = None
    format: str | None = None
    teacher: str | None = None

    def facets(self) -> dict[str, str]:
        """The constraints on `FACET_COLUMNS`, by column."""
        return {column: getattr(self, column) for column in FACET_COLUMNS if getattr(self, column)}

    def needs(self) -> set[str]:
        columns = set(self.facets())
        if self.kind:
            columns.add("rationalized")
        if self.label_class:
            columns.add("label")
        return columns


def label_class(label: str | None) -> str:
    """The class a stored label names: its `label` field (or its only field), else the label as written."""
    if label is None:
        return ""
    try:
        value = json.loads(label)
    except (TypeError, ValueError):
        return str(label)
    if isinstance(value, dict):
        if "label" in value:
            return str(value["label"])
        if len(value) == 1:
            return str(next(iter(value.values())))
        return json.dumps(value, sort_keys=True)
    return str(value)


@dataclass
class Part:
    """One Parquet file of the view, with what its rows share (cycle and status, when known from the layout)."""

    path: Path
    cycle: int | None
    status: str | None
    config: str = "default"
    _file: pq.ParquetFile | None = field(default=None, repr=False)
    _index: dict[str, pa.Array] = field(default_factory=dict, repr=False)

    @property
    def file(self) -> pq.ParquetFile:
        if self._file is None:
            self._file = pq.ParquetFile(str(self.path))
        return self._file

    @property
    def num_rows(self) -> int:
        return self.file.metadata.num_rows

    @property
    def columns(self) -> list[str]:
        return self.file.schema_arrow.names

    @property
    def reason_column(self) -> str | None:
        """Where a row's verdict reason is: the verifier's (`verification.reason`) or a stage's own `reason`."""
        return next((c for c in ("verification", "reason") if c in self.columns), None)

    def label_names(self) -> list[str] | None:
        """The class names of a `ClassLabel` label column (stored as integers), from the `datasets` metadata."""
        metadata = self.file.schema_arrow.metadata or {}
        try:
            features = json.loads(metadata[b"huggingface"])["info"]["features"]
            names = features["label"].get("names")
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        return list(names) if names else None

    def row_group_starts(self) -> np.ndarray:
        sizes = [self.file.metadata.row_group(i).num_rows for i in range(self.file.metadata.num_row_groups)]
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


class RunView:
    """Rows of a run's cycles (or of one dataset), filtered and paged lazily.

    Args:
        parts: the Parquet files, in display order.
        metrics: the run's `metrics.json` (`{"cycles": [...]}`), or `None` for a dataset.
        title: what is shown (the run directory or repo).
    """

    def __init__(self, parts: Sequence[Part], metrics: dict[str, Any] | None = None, title: str = ""):
        self.parts = list(parts)
        self.metrics = metrics
        self.title = title
        #: row groups read by `page` and `row` (the table's reads; index columns are counted in `index_reads`)
        self.row_groups_read = 0
        self.index_reads = 0

    # -- what there is -------------------------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for part in self.parts:
            seen.update(dict.fromkeys(part.columns))
        return list(seen)

    def cycles(self) -> list[int]:
        return sorted({p.cycle for p in self.parts if p.cycle is not None})

    def statuses(self) -> list[str]:
        return sorted({p.status for p in self.parts if p.status})

    def cycle_table(self) -> list[dict[str, Any]]:
        """Per cycle: the counts, yield and held-out metrics (with the control's), from `metrics.json`."""
        if not self.metrics:
            return [
                {"cycle": cycle, "rows": sum(p.num_rows for p in self.parts if p.cycle == cycle)}
                for cycle in self.cycles()
            ]
        rows = []
        for entry in self.metrics.get("cycles", []):
            rows.append(
                {
                    "cycle": entry.get("cycle"),
                    "generated": entry.get("generated"),
                    "accepted_direct": entry.get("accepted_direct"),
                    "accepted_rationalized": entry.get("accepted_rationalized"),
                    "rejected": entry.get("rejected"),
                    "yield": entry.get("yield"),
                    "heldout_accuracy": entry.get("heldout_accuracy"),
                    "control_heldout_accuracy": entry.get("control_heldout_accuracy"),
                }
            )
        return rows

    def curve(self) -> list[dict[str, Any]]:
        """Long-format points of the run's plot: held-out accuracy, its control and the yield, per cycle."""
        points = []
        for entry in (self.metrics or {}).get("cycles", []):
            for series, key in (
                ("held-out accuracy", "heldout_accuracy"),
                ("control", "control_heldout_accuracy"),
                ("yield", "yield"),
            ):
                if entry.get(key) is not None:
                    points.append({"cycle": entry["cycle"], "value": float(entry[key]), "series": series})
        return points

    def facets(self) -> list[str]:
        """The `FACET_COLUMNS` some file of the view has (known from the schemas, without reading a row)."""
        columns = set(self.columns)
        return [column for column in FACET_COLUMNS if column in columns]

    def facet_values(self, column: str, limit: int = 500) -> list[str]:
        """The distinct classes (`label`), verdict reasons (`verification`, or a stage's `reason` column) or values of
        a `FACET_COLUMNS` column (empty ones left out) of every row, for the filters."""
        values: set[str] = set()
        for part in self.parts:
            if column == "label" and "label" in part.columns:
                values.update(self._classes(part, pc.unique(self._index(part, "label")).to_pylist()))
            elif column == "verification" and part.reason_column:
                values.update(v for v in pc.unique(self._reasons(part)).to_pylist() if v)
            elif column in FACET_COLUMNS and column in part.columns:
                values.update(v for v in pc.unique(self._strings(part, column)).to_pylist() if v)
            if len(values) > limit:
                break
        return sorted(values)[:limit]

    def _classes(self, part: Part, labels: list[Any]) -> list[str]:
        names = part.label_names()
        if names is not None:
            return [names[v] if isinstance(v, int) and 0 <= v < len(names) else str(v) for v in labels]
        return [label_class(v) for v in labels]

    def _reasons(self, part: Part) -> pa.Array:
        array = self._index(part, part.reason_column)
        if part.reason_column != "verification":
            return array
        reasons = pc.struct_field(array, "reason")
        # A caption dataset's rejected rows have both: `verification` only for a failed label check, `reason` always
        # (as the table shows a row's reason: the verdict's, else the stage's).
        return pc.coalesce(reasons, self._index(part, "reason")) if "reason" in part.columns else reasons

    def class_of(self, row: dict[str, Any]) -> str:
        """The class of a row from `page` or `row`, as the class filter names it."""
        if row.get("label") is None:
            return ""
        return self._classes(self.parts[row["_part"]], [row["label"]])[0]

    # -- filtering -----------------------------------------------------------------------------------------
    def _index(self, part: Part, column: str) -> pa.Array:
        if column not in part._index:
            part._index[column] = part.file.read(columns=[column]).column(column).combine_chunks()
            self.index_reads += 1
        return part._index[column]

    def _part_matches(self, part: Part, rows: RowFilter) -> bool:
        if rows.cycle is not None and part.cycle is not None and part.cycle != rows.cycle:
            return False
        if rows.status and part.status and part.status != rows.status:
            return False
        return not (rows.needs() - set(part.columns))

    def _strings(self, part: Part, column: str) -> pa.Array:
        """A facet column as strings (the filters' values are), whatever type a dataset gave it."""
        array = self._index(part, column)
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            return array
        return array.cast(pa.string())

    def _mask(self, part: Part, rows: RowFilter) -> np.ndarray | None:
        """Which rows of `part` pass (`None`: all of them, known without reading a row)."""
        mask = None

        def both(new):
            nonlocal mask
            new = np.asarray(new, dtype=bool)
            mask = new if mask is None else mask & new

        if rows.cycle is not None and part.cycle is None and "cycle" in part.columns:
            both(pc.equal(self._index(part, "cycle"), rows.cycle).fill_null(False).to_numpy(zero_copy_only=False))
        if rows.kind:
            flags = self._index(part, "rationalized").fill_null(False).to_numpy(zero_copy_only=False)
            both(flags if rows.kind == "rationalized" else ~flags)
        if rows.label_class:
            labels = self._index(part, "label").dictionary_encode()
            classes = self._classes(part, labels.dictionary.to_pylist())
            wanted = [i for i, v in enumerate(classes) if v == rows.label_class]
            both(np.isin(labels.indices.fill_null(-1).to_numpy(zero_copy_only=False), wanted))
        for column, value in rows.facets().items():
            both(pc.equal(self._strings(part, column), value).fill_null(False).to_numpy(zero_copy_only=False))
        if rows.reason:
            if part.reason_column is None:
                return np.zeros(part.num_rows, dtype=bool)
            both(pc.equal(self._reasons(part), rows.reason).fill_null(False).to_numpy(zero_copy_only=False))
        if rows.text:
            pattern = re.escape(rows.text)
            found = np.zeros(part.num_rows, dtype=bool)
            for column in TEXT_COLUMNS:
                if column in part.columns:
                    # Text columns are scanned, not kept: a run's answers may be large.
                    values = part.file.read(columns=[column]).column(column)
                    self.index_reads += 1
                    hits = pc.match_substring_regex(values, pattern, ignore_case=True).fill_null(False)
                    found |= hits.to_numpy(zero_copy_only=False)
            both(found)
        return mask

    def _positions(self, rows: RowFilter) -> Iterable[tuple[int, Part, np.ndarray | None]]:
        for index, part in enumerate(self.parts):
            if self._part_matches(part, rows):
                yield index, part, self._mask(part, rows)

    def count(self, rows: RowFilter | None = None) -> int:
        """How many rows pass the filter."""
        rows = rows or RowFilter()
        return sum(part.num_rows if mask is None else int(mask.sum()) for _, part, mask in self._positions(rows))

    def page(self, rows: RowFilter | None, offset: int, limit: int) -> list[dict[str, Any]]:
        """Rows `offset` to `offset + limit` of those that pass the filter, without their video and messages.

        Each row carries `_part` and `_row`, its place, for `row`.
        """
        rows = rows or RowFilter()
        out: list[dict[str, Any]] = []
        skip = offset
        for index, part, mask in self._positions(rows):
            if len(out) >= limit:
                break
            positions = np.arange(part.num_rows) if mask is None else np.flatnonzero(mask)
            if skip >= len(positions):
                skip -= len(positions)
                continue
            wanted = positions[skip : skip + limit - len(out)]
            skip = 0
            out.extend(self._read_rows(index, wanted))
        return out

    def _read_rows(self, part_index: int, positions: np.ndarray, heavy: bool = False) -> list[dict[str, Any]]:
        part = self.parts[part_index]
        columns = [c for c in part.columns if heavy or c not in HEAVY_COLUMNS]
        starts = part.row_group_starts()
        groups = np.searchsorted(starts, positions, side="right") - 1
        rows = []
        for group in np.unique(groups):
            table = part.file.read_row_group(int(group), columns=columns)
            self.row_groups_read += 1
            local = positions[groups == group] - starts[group]
            for position, row in zip(positions[groups == group], table.take(pa.array(local)).to_pylist()):
                row.setdefault("cycle", part.cycle)
                rows.append({**row, "_status": part.status, "_part": part_index, "_row": int(position)})
        return rows

    def row(self, part_index: int, position: int) -> dict[str, Any]:
        """One whole row (video and messages included)."""
        return self._read_rows(part_index, np.array([position]), heavy=True)[0]


# -- opening what the user names ----------------------------------------------------------------------------


def _dataset_parts(directory: Path, cycle: int | None) -> list[Part]:
    """The Parquet files of a dataset directory in Hub layout, by config (`default` first, then the others)."""
    parts = []
    folders = sorted(p for p in directory.iterdir() if p.is_dir() and any(p.glob("*.parquet")))
    # vstar's layout (`vstar.io.split_file`): the default config in data/, every other config in its own folder.
    folders.sort(key=lambda p: p.name != "data")
    for folder in folders:
        config = "default" if folder.name == "data" else folder.name
        status = STATUS_BY_CONFIG.get(config, config)
        parts.extend(Part(path, cycle, status, config) for path in sorted(folder.glob("*.parquet")))
    return parts


def open_run(run_dir: str | Path) -> RunView:
    """A run directory of `vstar cycle`: every cycle's accepted and rejected answers and `metrics.json`."""
    run_dir = Path(run_dir)
    parts = []
    for cycle_dir in sorted(run_dir.glob("cycle-*"), key=lambda p: _cycle_number(p.name)):
        cycle = _cycle_number(cycle_dir.name)
        if cycle is not None and (cycle_dir / "dataset").is_dir():
            parts.extend(_dataset_parts(cycle_dir / "dataset", cycle))
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    return RunView(parts, metrics, title=str(run_dir))


def _cycle_number(name: str) -> int | None:
    match = re.fullmatch(r"cycle-(\d+)", name)
    return int(match.group(1)) if match else None


def open_dataset(directory: str | Path, cycle: int | None = None) -> RunView:
    """A dataset directory in Hub layout (an instruction, caption, QA or selection dataset)."""
    directory = Path(directory)
    parts = _dataset_parts(directory, cycle)
    if not parts:
        raise InputError(f"{directory} holds no Parquet files in Hub layout (data/*.parquet or <config>/*.parquet).")
    return RunView(parts, None, title=str(directory))


def open_hub(
    repo: str, revision: str | None = None, model_repo: str | None = None, cache_dir: str | Path | None = None
) -> RunView:
    """A pushed run (`ORG/NAME`: its `cycle-<k>` versions and, from its model repo, its metrics), or one version of a
    dataset (`ORG/NAME@revision`). Only the Parquet files and cards are downloaded.

    Args:
        repo: the dataset repo.
        revision: one version (a tag such as `cycle-2`, a branch or a commit); default every `cycle-<k>` tag.
        model_repo: the run's model repo, whose `vstar_run/metrics.json` has the per-cycle metrics (default: the
            model repo of the same name, as `vstar cycle --push_to_hub ORG/NAME` writes them).
        cache_dir: the Hub cache to download into.
    """
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    api = HfApi()
    patterns = ["*.parquet", "README.md"]
    if revision:
        local = snapshot_download(repo, repo_type="dataset", revision=revision, allow_patterns=patterns,
                                  cache_dir=cache_dir)  # fmt: skip
        cycle = _cycle_number(revision)
        return RunView(_dataset_parts(Path(local), cycle), None, title=f"{repo}@{revision}")
    tags = sorted(
        (t.name for t in api.list_repo_refs(repo, repo_type="dataset").tags if _cycle_number(t.name) is not None),
        key=_cycle_number,
    )
    if not tags:
        local = snapshot_download(repo, repo_type="dataset", allow_patterns=patterns, cache_dir=cache_dir)
        return RunView(_dataset_parts(Path(local), None), None, title=repo)
    parts = []
    for tag in tags:
        local = snapshot_download(repo, repo_type="dataset", revision=tag, allow_patterns=patterns,
                                  cache_dir=cache_dir)  # fmt: skip
        parts.extend(_dataset_parts(Path(local), _cycle_number(tag)))
    metrics = None
    try:
        path = hf_hub_download(model_repo or repo, "vstar_run/metrics.json", revision=tags[-1], cache_dir=cache_dir)
        metrics = json.loads(Path(path).read_text())
    except Exception as error:  # noqa: BLE001  (a run pushed without its model repo still shows its answers)
        logger.info("No run metrics for %s (%s): showing the answers only.", repo, error)
    return RunView(parts, metrics, title=repo)


def open_view(target: str, model_repo: str | None = None, cache_dir: str | Path | None = None) -> RunView:
    """What `vstar view TARGET` shows: a run directory, a dataset directory, or `ORG/NAME[@revision]` on the Hub."""
    path = Path(target)
    if path.is_dir():
        if (path / "metrics.json").is_file() or any(path.glob("cycle-*/dataset")):
            return open_run(path)
        return open_dataset(path)
    if path.exists() or target.startswith((".", "/")) or target.count("/") != 1 and "@" not in target:
        raise InputError(
            f"{target} is neither a run directory, a dataset directory nor a Hub repo (ORG/NAME[@revision])."
        )
    repo, _, revision = target.partition("@")
    return open_hub(repo, revision or None, model_repo=model_repo, cache_dir=cache_dir)
