"""Any table of labeled clips (CSV, TSV, JSON Lines or Parquet) as a source dataset, mapped by column names.

One row per clip: a column with the video path (relative paths are resolved against `--video_root`, by default the
table's folder), optional `start`/`end` columns in seconds, and label columns. Label column types are inferred from
the values (integers, floats, booleans, strings, lists); string columns listed in `--class_label_columns` (default:
`label`) become `ClassLabel`s over their sorted values. A column of numbers with a few cells that are not numbers
(at most one in ten) stays numeric, and the rows of those cells are left out.

Each row is validated; rows that cannot be used are left out and listed in `build_report.json` with file, line and
reason: a missing or broken video, a window that is not a number, infinite, reversed or past the video's end, an
empty label (columns in `--optional_columns` may be empty), a bad number, an id already written (to this or another
split). A malformed table (a missing or repeated column, a row with the wrong number of fields, invalid JSON, text
that is not in `--encoding`) stops the build before anything is written, naming the file and line.

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

from vstar.errors import ConfigError, InputError
from vstar.schema import source_features
from vstar.sources.base import (
    SOURCES,
    Clip,
    SplitIds,
    canonical_split,
    check_header,
    check_settings,
    check_window,
    check_writable,
    command_line,
    probed_rows,
    split_from_file_name,
    split_order,
    text_lines,
    write_source_dataset,
)
from vstar.sources.probe import MISSING, probe_features

logger = logging.getLogger(__name__)

CSV_SUFFIXES = (".csv", ".tsv")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
MAX_CLASSES = 100_000
# A column stays numeric when at most this share of its values are not numbers: those cells are typos to report,
# not a sign that the column holds text.
MAX_BAD_NUMBER_SHARE = 0.1
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
    optional_columns: list[str] = field(
        default_factory=list,
        metadata={"help": "Label columns that may be empty (rows with another label column empty are left out)."},
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
    num_proc: int = field(default=1, metadata={"help": "Processes (or Ray actors) probing the videos."})
    executor: str = field(
        default="local", metadata={"help": "Where probing runs: local (processes here) or ray (a Ray cluster)."}
    )
    ray_address: str | None = field(
        default=None, metadata={"help": "With --executor ray: the cluster (auto, ray://head:10001; default local)."}
    )
    probe: bool = field(
        default=True, metadata={"help": "Read duration, fps, size and codec and check each video decodes."}
    )
    license: str = field(default="other", metadata={"help": "Licence field of the card."})
    encoding: str = field(default="utf-8", metadata={"help": "Text encoding of CSV/TSV/JSON Lines tables."})

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


def table_columns(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """The column names of a table file (the CSV header, the Parquet schema, the first JSON record's keys).

    Args:
        path: the table file.
        encoding: the text encoding of a CSV or JSON Lines file.

    Raises:
        InputError: when a column name is given twice.
    """
    path = Path(path)
    kind = _table_format(path)
    if kind == "csv":
        header = next(csv.reader(text_lines(path, encoding), delimiter=_delimiter(path)), [])
        return check_header([c.strip() for c in header], path)
    if kind == "parquet":
        return check_header(list(_open_parquet(path).schema_arrow.names), path)
    for _, record in read_table(path, encoding):
        return list(record)
    return []


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        repeated = sorted({key for key, _ in pairs if [k for k, _ in pairs].count(key) > 1})
        raise KeyError(repeated)
    return record


def _open_parquet(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as err:
        raise InputError(
            f"{path} is not a readable Parquet file ({err}): write it again, or give a CSV or JSON Lines table."
        ) from None


def read_table(path: str | Path, encoding: str = "utf-8") -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream `(line, record)` from a CSV/TSV, JSON Lines or Parquet file (line = row number for Parquet).

    CSV cells are strings, empty cells `None`.

    Args:
        path: the table file.
        encoding: the text encoding of a CSV or JSON Lines file.

    Raises:
        ValueError: naming the file and line of a malformed row, a repeated column or text not in `encoding`.
    """
    path = Path(path)
    kind = _table_format(path)
    if kind == "csv":
        reader = csv.reader(text_lines(path, encoding), delimiter=_delimiter(path))
        header = check_header([c.strip() for c in next(reader, [])], path)
        rows = 0
        for fields in reader:
            if not fields or not any(f.strip() for f in fields):
                continue
            rows += 1
            if len(fields) != len(header):
                raise ValueError(
                    f"{path}:{reader.line_num}: expected {len(header)} fields ({','.join(header)}), "
                    f"found {len(fields)}: {fields!r}."
                )
            yield reader.line_num, {k: (v if v.strip() else None) for k, v in zip(header, fields)}
        if not rows:
            raise InputError(f"{path} has a header but no rows: add one row per clip below the header.")
    elif kind == "json":
        for line_number, line in enumerate(text_lines(path, encoding), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({err.msg}); one object a line.") from None
            except KeyError as err:
                raise InputError(
                    f"{path}:{line_number}: the object gives the key(s) {', '.join(map(repr, err.args[0]))} more "
                    "than once; keep one of each."
                ) from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_number}: expected a JSON object, found {type(record).__name__}.")
            yield line_number, record
    else:
        number = 0
        parquet = _open_parquet(path)
        check_header(list(parquet.schema_arrow.names), path)
        for batch in parquet.iter_batches(batch_size=1024):
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
        self.counts: Counter = Counter()  # scalar values per kind, to tell a typo from a text column
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
        if kind == "str" and not value.strip():
            return  # a blank cell is an empty value, not text
        self.kinds.add(kind)
        self.counts[kind] += 1

    def numeric_despite_text(self) -> bool:
        """Whether the column is numbers with a few cells of text (typos, `n/a`) to leave out row by row."""
        numbers = self.counts["int"] + self.counts["float"]
        text = self.counts["str"]
        if not text or not numbers or self.counts["bool"]:
            return False
        return text <= MAX_BAD_NUMBER_SHARE * (numbers + text)

    def feature(self):
        from datasets import List, Value

        if "list" in self.kinds:
            if len(self.kinds) > 1:
                raise ValueError("mixes lists and single values")
            return List(self.inner.feature())
        kinds = self.kinds - {"str"} if self.numeric_despite_text() else self.kinds
        if not kinds or "str" in kinds or ("bool" in kinds and len(kinds) > 1):
            return Value("string")
        if kinds == {"bool"}:
            return Value("bool")
        return Value("int64") if kinds == {"int"} else Value("float64")


def _convert(value: Any, feature: Any, from_text: bool) -> Any:
    """A cell as the column's inferred type (`None` for an empty cell or a NaN).

    Raises:
        ValueError: for a value that is not of the column's type (text in a numeric column, an infinite number).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    dtype = getattr(feature, "dtype", None)
    if type(feature).__name__ == "List":
        return [_convert(v, feature.feature, False) for v in value]
    if type(feature).__name__ == "ClassLabel" or dtype == "string":
        return (
            value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        )
    if isinstance(value, str):
        value = _parse_scalar(value)
    if dtype == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true/false")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, float) and math.isnan(value):
        return None
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    if dtype == "int64":
        if not float(value).is_integer():
            raise ValueError(f"{value!r} is not a whole number")
        return int(value)
    return float(value)


def _seconds(value: Any, column: str) -> float | None:
    """A window bound in seconds (`None` when empty).

    Raises:
        ValueError: with the reason the row is left out.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"window: `{column}` must be a number of seconds, not {value!r}") from None
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"window: `{column}` must be a non-negative number of seconds, not {value!r}")
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
        columns = table_columns(path, config.encoding)
        for column, flag in mapped.items():
            if column not in columns:
                raise KeyError(
                    f"{path}: no column {column!r} (given by --{flag}); the columns there are: "
                    f"{', '.join(columns) or 'none'}."
                )
    clashes = [c for c in config.label_columns if c in RESERVED]
    if clashes:
        raise ValueError(f"Label columns {clashes} clash with the source dataset's own columns {RESERVED}.")
    unknown = sorted(set(config.optional_columns) - set(config.label_columns))
    if unknown:
        raise ConfigError(f"--optional_columns names {unknown}, which are not in --label_columns.")


def _scan(config: TableConfig) -> _Scan:
    """First pass: check the table's structure, infer the label types and count the rows per split (bad values are
    reported row by row in the second pass)."""
    types: dict[str, _ColumnType] = {}
    splits: Counter = Counter()
    for path in map(Path, config.annotations):
        from_text = _table_format(path) == "csv"
        for column in config.label_columns:
            types.setdefault(column, _ColumnType(from_text))
        for line, record in read_table(path, config.encoding):
            where = f"{path}:{line}"
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


def _labels(record: dict, features: dict[str, Any], from_text: bool, optional: set[str]) -> tuple[dict, str | None]:
    """The row's label columns in their types, and why the row is left out (or `None`)."""
    labels: dict[str, Any] = {}
    for column, feature in features.items():
        raw = record.get(column)
        try:
            value = _convert(raw, feature, from_text)
        except (TypeError, ValueError) as err:
            kind = getattr(feature, "dtype", "list")
            return labels, f"value: `{column}` holds {kind} values, but this row's {err}; fix the cell"
        if value is None and column not in optional:
            return labels, (
                f"label: `{column}` is {'empty' if raw is None or not str(raw).strip() else 'NaN'}; fill it in, or "
                "list the column in --optional_columns to keep rows without it"
            )
        labels[column] = value
    return labels, None


def _clips(config: TableConfig, split: str, features: dict[str, Any], source: str) -> Iterator[Clip]:
    optional = set(config.optional_columns)
    for path in map(Path, config.annotations):
        root = Path(config.video_root) if config.video_root else path.parent
        from_text = _table_format(path) == "csv"
        for line, record in read_table(path, config.encoding):
            where = f"{path}:{line}"
            if _row_split(config, record, path, where) != split:
                continue
            cell = record.get(config.video_column)
            video = "" if cell is None else str(cell).strip()
            full = video if not video or os.path.isabs(video) else str(root / video)
            error = None if video else f"{MISSING}: the video column `{config.video_column}` is empty"
            start = end = None
            try:
                start = _seconds(record.get(config.start_column), config.start_column) if config.start_column else None
                end = _seconds(record.get(config.end_column), config.end_column) if config.end_column else None
            except ValueError as err:
                error = error or str(err)
            error = error or check_window(start, end)
            labels, label_error = _labels(record, features, from_text, optional)
            error = error or label_error
            row = {
                "id": _clip_id(record, config, full, root, start, end) if video else where,
                "start": start,
                "end": end,
                "source": source,
                "split": split,
                **{c: labels.get(c) for c in features},
            }
            exists = bool(video) and os.path.isfile(full)
            if error is None and not exists:
                error = f"{MISSING}: {full} does not exist"
            yield Clip(row, full if exists else None, where, error, full or None)


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
    check_settings(config, at_least={"num_proc": 1})
    output = check_writable(config.output)
    _check_columns(config)
    scan = _scan(config)
    label_features = _label_features(config, scan)
    features = source_features({**label_features, **probe_features()})
    source = config.name or Path(config.annotations[0]).stem
    report: dict[str, Any] = {"rows_read": 0, "skipped": []}
    ids = SplitIds()
    rows = {
        split: probed_rows(
            _clips(config, split, label_features, source),
            report,
            num_proc=config.num_proc,
            probe=config.probe,
            executor=config.executor,
            ray_address=config.ray_address,
            desc=f"{source} {split}",
            total=scan.splits[split],
            ids=ids,
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
