"""Any table of labeled clips (CSV, TSV, JSON Lines or Parquet) as a source dataset, mapped by column names.

One row per clip: a column with the video path (relative paths are resolved against `--video_root`, by default the
table's folder), optional `start`/`end` columns in seconds, and label columns. Label column types are inferred from
the values (integers, floats, booleans, strings, lists); string columns listed in `--class_label_columns` (default:
`label`) become `ClassLabel`s over their sorted values. A malformed row stops the build before anything is written,
naming the file and line; a mapped column the table lacks is named with the columns it has.

```bash
vstar build table --annotations clips.csv --video_column path --label_columns label camera \
    --start_column t0 --end_column t1 --output data/my_clips
```
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vstar.schema import source_features
from vstar.sources.base import (
    SOURCES,
    Clip,
    canonical_split,
    check_writable,
    command_line,
    probed_rows,
    split_from_file_name,
    split_order,
    write_source_dataset,
)
from vstar.sources.probe import MISSING, probe_features

logger = logging.getLogger(__name__)

CSV_SUFFIXES = (".csv", ".tsv")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
MAX_CLASSES = 100_000
RESERVED = ("id", "video", "start", "end", "source", "split", "duration", "fps", "width", "height", "codec")


@dataclass
class TableConfig:
    """Settings of the table source builder (column mapping, splits, probing)."""

    annotations: list[str] | None = field(
        default=None, metadata={"help": "Table files: .csv, .tsv, .jsonl or .parquet (one row per clip)."}
    )
    output: str = field(default="data/table", metadata={"help": "Output directory (Hub layout)."})
    video_column: str = field(default="video", metadata={"help": "Column holding the video path."})
    start_column: str | None = field(default=None, metadata={"help": "Column of the clip start in seconds."})
    end_column: str | None = field(default=None, metadata={"help": "Column of the clip end in seconds."})
    label_columns: list[str] = field(
        default_factory=lambda: ["label"], metadata={"help": "Columns copied as typed label columns."}
    )
    class_label_columns: list[str] | None = field(
        default=None,
        metadata={"help": "Label columns that become ClassLabel (default: `label` when it holds strings)."},
    )
    id_column: str | None = field(
        default=None, metadata={"help": "Column of unique clip ids (default: the video path and window)."}
    )
    split_column: str | None = field(default=None, metadata={"help": "Column naming each row's split."})
    split: str | None = field(
        default=None, metadata={"help": "Split of rows without a split column (default: the file name, else train)."}
    )
    video_root: str | None = field(
        default=None, metadata={"help": "Folder that relative video paths start from (default: the table's folder)."}
    )
    name: str | None = field(default=None, metadata={"help": "The `source` column (default: the first table's name)."})
    description: str | None = field(default=None, metadata={"help": "What the clips show, for the card."})
    num_proc: int = field(default=1, metadata={"help": "Processes probing the videos."})
    probe: bool = field(
        default=True, metadata={"help": "Read duration, fps, size and codec and check each video decodes."}
    )
    license: str = field(default="other", metadata={"help": "Licence field of the card."})

    def mapped_columns(self) -> dict[str, str]:
        """`{column: flag}` of every column the mapping names."""
        mapped = {self.video_column: "video_column"}
        for flag in ("start_column", "end_column", "id_column", "split_column"):
            if getattr(self, flag):
                mapped[getattr(self, flag)] = flag
        for column in self.label_columns:
            mapped.setdefault(column, "label_columns")
        return mapped


def _table_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSON_SUFFIXES:
        return "json"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise ValueError(f"{path}: unknown table format {suffix!r} (use .csv, .tsv, .jsonl or .parquet).")


def table_columns(path: str | Path) -> list[str]:
    """The column names of a table file (the CSV header, the Parquet schema, the first JSON record's keys).

    Args:
        path: the table file.
    """
    path = Path(path)
    kind = _table_format(path)
    if kind == "csv":
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return [c.strip() for c in next(csv.reader(handle, delimiter=_delimiter(path)), [])]
    if kind == "parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    for _, record in read_table(path):
        return list(record)
    return []


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def read_table(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream `(line, record)` from a CSV/TSV, JSON Lines or Parquet file (line = row number for Parquet).

    CSV cells are strings, empty cells `None`.

    Args:
        path: the table file.

    Raises:
        ValueError: naming the file and line of a malformed row.
    """
    path = Path(path)
    kind = _table_format(path)
    if kind == "csv":
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=_delimiter(path))
            header = [c.strip() for c in next(reader, [])]
            for fields in reader:
                if not fields or not any(f.strip() for f in fields):
                    continue
                if len(fields) != len(header):
                    raise ValueError(
                        f"{path}:{reader.line_num}: expected {len(header)} fields ({','.join(header)}), "
                        f"found {len(fields)}: {fields!r}."
                    )
                yield reader.line_num, {k: (v if v.strip() else None) for k, v in zip(header, fields)}
    elif kind == "json":
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{line_number}: not valid JSON ({err.msg}); one object a line.") from None
                if not isinstance(record, dict):
                    raise ValueError(f"{path}:{line_number}: expected a JSON object, found {type(record).__name__}.")
                yield line_number, record
    else:
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                number += 1
                yield number, record


def _parse_scalar(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class _ColumnType:
    """Infers a label column's type from its values: bool, int64, float64, string, or a list of those."""

    def __init__(self, from_text: bool):
        self.from_text = from_text
        self.kinds: set[str] = set()
        self.inner: _ColumnType | None = None
        self.values: set[str] = set()  # distinct scalar values as text, for ClassLabel names
        self.too_many_values = False

    def add(self, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, (list, tuple, dict)) and not self.too_many_values:
            self.values.add(str(value))
            self.too_many_values = len(self.values) > MAX_CLASSES
        if self.from_text and isinstance(value, str):
            value = _parse_scalar(value)
        if isinstance(value, (list, tuple)):
            self.kinds.add("list")
            self.inner = self.inner or _ColumnType(False)
            for item in value:
                self.inner.add(item)
            return
        kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(type(value), "str")
        self.kinds.add(kind)

    def feature(self):
        from datasets import List, Value

        if "list" in self.kinds:
            if len(self.kinds) > 1:
                raise ValueError("mixes lists and single values")
            return List(self.inner.feature())
        if not self.kinds or "str" in self.kinds or ("bool" in self.kinds and len(self.kinds) > 1):
            return Value("string")
        if self.kinds == {"bool"}:
            return Value("bool")
        return Value("int64") if self.kinds == {"int"} else Value("float64")


def _convert(value: Any, feature: Any, from_text: bool) -> Any:
    """A cell as the column's inferred type."""
    if value is None:
        return None
    dtype = getattr(feature, "dtype", None)
    if type(feature).__name__ == "List":
        return [_convert(v, feature.feature, False) for v in value]
    if type(feature).__name__ == "ClassLabel" or dtype == "string":
        return (
            value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        )
    if from_text and isinstance(value, str):
        value = _parse_scalar(value)
    if dtype == "bool":
        return bool(value)
    return int(value) if dtype == "int64" else float(value)


def _seconds(value: Any, column: str, where: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: `{column}` must be a number of seconds, not {value!r}.") from None
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{where}: `{column}` must be a non-negative number of seconds, not {value!r}.")
    return seconds


@dataclass
class _Scan:
    types: dict[str, _ColumnType]
    splits: Counter


def _row_split(config: TableConfig, record: dict, path: Path, where: str) -> str:
    if config.split_column and record.get(config.split_column) not in (None, ""):
        return canonical_split(str(record[config.split_column]), where)
    return canonical_split(config.split) if config.split else split_from_file_name(path)


def _check_columns(config: TableConfig) -> None:
    mapped = config.mapped_columns()
    for path in config.annotations:
        columns = table_columns(path)
        for column, flag in mapped.items():
            if column not in columns:
                raise KeyError(
                    f"{path}: no column {column!r} (given by --{flag}); the columns there are: "
                    f"{', '.join(columns) or 'none'}."
                )
    clashes = [c for c in config.label_columns if c in RESERVED]
    if clashes:
        raise ValueError(f"Label columns {clashes} clash with the source dataset's own columns {RESERVED}.")


def _scan(config: TableConfig) -> _Scan:
    """First pass: validate every row, infer the label types and count the rows per split."""
    types: dict[str, _ColumnType] = {}
    splits: Counter = Counter()
    for path in map(Path, config.annotations):
        from_text = _table_format(path) == "csv"
        for column in config.label_columns:
            types.setdefault(column, _ColumnType(from_text))
        for line, record in read_table(path):
            where = f"{path}:{line}"
            if record.get(config.video_column) in (None, ""):
                raise ValueError(f"{where}: the video column {config.video_column!r} is empty.")
            for flag in ("start_column", "end_column"):
                column = getattr(config, flag)
                if column:
                    _seconds(record.get(column), column, where)
            splits[_row_split(config, record, path, where)] += 1
            for column in config.label_columns:
                types[column].add(record.get(column))
    return _Scan(types, splits)


def _label_features(config: TableConfig, scan: _Scan) -> dict[str, Any]:
    from datasets import ClassLabel

    class_columns = config.class_label_columns
    if class_columns is None:
        label = scan.types.get("label")
        class_columns = ["label"] if label is not None and getattr(label.feature(), "dtype", None) == "string" else []
    features: dict[str, Any] = {}
    for column in config.label_columns:
        column_type = scan.types[column]
        try:
            feature = column_type.feature()
        except ValueError as err:
            raise ValueError(f"Label column {column!r} {err}.") from None
        if column in class_columns:
            if "list" in column_type.kinds or column_type.too_many_values:
                raise ValueError(f"Class label column {column!r} holds lists or more than {MAX_CLASSES} values.")
            names = sorted(column_type.values, key=lambda n: (0, int(n), "") if n.isdigit() else (1, 0, n))
            feature = ClassLabel(names=names)
        features[column] = feature
    unknown = set(class_columns) - set(config.label_columns)
    if unknown:
        raise KeyError(f"--class_label_columns names {sorted(unknown)}, which are not in --label_columns.")
    return features


def _clip_id(record: dict, config: TableConfig, video: str, root: Path, start, end) -> str:
    if config.id_column:
        return str(record[config.id_column])
    path = Path(video)
    try:
        base = path.relative_to(root).with_suffix("").as_posix()
    except ValueError:
        base = path.with_suffix("").as_posix()
    if start is None and end is None:
        return base
    return f"{base}_{'' if start is None else f'{start:g}'}_{'' if end is None else f'{end:g}'}"


def _clips(config: TableConfig, split: str, features: dict[str, Any], source: str) -> Iterator[Clip]:
    for path in map(Path, config.annotations):
        root = Path(config.video_root) if config.video_root else path.parent
        from_text = _table_format(path) == "csv"
        for line, record in read_table(path):
            where = f"{path}:{line}"
            if _row_split(config, record, path, where) != split:
                continue
            video = str(record[config.video_column])
            full = video if os.path.isabs(video) else str(root / video)
            start = (
                _seconds(record.get(config.start_column), config.start_column, where) if config.start_column else None
            )
            end = _seconds(record.get(config.end_column), config.end_column, where) if config.end_column else None
            row = {
                "id": _clip_id(record, config, full, root, start, end),
                "start": start,
                "end": end,
                "source": source,
                "split": split,
                **{c: _convert(record.get(c), f, from_text) for c, f in features.items()},
            }
            exists = os.path.isfile(full)
            yield Clip(
                row, full if exists else None, where, None if exists else f"{MISSING}: {full} does not exist", full
            )


@SOURCES.register("table")
def build_table(config: TableConfig | None = None, **overrides) -> Path:
    """Write the source dataset of a labeled table of clips to `config.output`; returns the directory.

    Args:
        config: the settings (or pass them as keyword arguments).
    """
    config = config or TableConfig(**overrides)
    if isinstance(config.annotations, str):
        config.annotations = [config.annotations]
    if not config.annotations:
        raise ValueError("Give the table files: --annotations clips.csv [more.jsonl ...].")
    for path in config.annotations:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Table file {path} does not exist.")
        _table_format(Path(path))
    output = check_writable(config.output)
    _check_columns(config)
    scan = _scan(config)
    label_features = _label_features(config, scan)
    features = source_features({**label_features, **probe_features()})
    source = config.name or Path(config.annotations[0]).stem
    report: dict[str, Any] = {"rows_read": 0, "skipped": []}
    rows = {
        split: probed_rows(
            _clips(config, split, label_features, source),
            report,
            num_proc=config.num_proc,
            probe=config.probe,
            desc=f"{source} {split}",
            total=scan.splits[split],
        )
        for split in split_order(scan.splits)
    }
    tables = ", ".join(f"`{p}`" for p in config.annotations)
    return write_source_dataset(
        rows,
        features,
        output,
        card={
            "pretty_name": f"{source} (vstar source dataset)",
            "description": config.description
            or (
                f"Labeled video clips listed in {tables}: label columns "
                + ", ".join(f"`{c}`" for c in label_features)
                + "; `duration`, `fps`, `width`, `height` and `codec` come from the clip's container."
            ),
            "source": f"Table(s): {tables}; videos from the `{config.video_column}` column.",
            "license": config.license,
            "build_command": command_line("table", config),
        },
        report=report,
    )


build_table.config_class = TableConfig
