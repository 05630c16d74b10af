"""Incremental Parquet writing in the `datasets` format, and the Hub layout of a dataset directory.

Rows are written in small row groups as they arrive, so a crash loses at most one batch and memory stays flat
however many rows a stage produces. The `datasets` features travel in the Parquet schema metadata, so
`load_dataset` restores `Video`, `ClassLabel` and nested types.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features


class ParquetRowWriter:
    """Append rows (dicts) to one Parquet file, flushing a row group every `batch_size` rows.

    The file is written under a temporary name and renamed on `close()`, so a file with the final name is
    always complete.
    """

    def __init__(self, path: str | Path, features: Features, batch_size: int = 64):
        self.path = Path(path)
        self.features = features
        self.batch_size = batch_size
        self.rows_written = 0
        self._pending: list[dict[str, Any]] = []
        self._tmp = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(str(self._tmp), features.arrow_schema)

    def write(self, row: Mapping[str, Any]) -> None:
        self._pending.append(self.features.encode_example(dict(row)))
        if len(self._pending) >= self.batch_size:
            self.flush()

    def write_all(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def flush(self) -> None:
        if self._pending:
            table = pa.Table.from_pylist(self._pending, schema=self.features.arrow_schema)
            self._writer.write_table(table)
            self.rows_written += len(self._pending)
            self._pending = []

    def close(self) -> Path:
        self.flush()
        self._writer.close()
        os.replace(self._tmp, self.path)
        return self.path

    def __enter__(self) -> ParquetRowWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            # Keep what was written: the rows before the failure are valid and the caller may report them.
            self.flush()
            self._writer.close()
            os.replace(self._tmp, self.path)


def write_parquet(path: str | Path, rows: Iterable[Mapping[str, Any]], features: Features) -> int:
    """Write all `rows` to one Parquet file; returns the row count."""
    with ParquetRowWriter(path, features) as writer:
        writer.write_all(rows)
    return writer.rows_written


def split_file(split: str, config: str = "default") -> str:
    """The Hub-layout path of a split's single shard, relative to the dataset directory."""
    prefix = "data" if config == "default" else f"{config}"
    return f"{prefix}/{split}-00000-of-00001.parquet"


def configs_yaml(configs: Mapping[str, Iterable[str]]) -> list[dict[str, Any]]:
    """The README `configs:` entry for `{config_name: [splits]}` in the layout of `split_file`."""
    entries = []
    for name, splits in configs.items():
        prefix = "data" if name == "default" else name
        entries.append(
            {
                "config_name": name,
                "data_files": [{"split": s, "path": f"{prefix}/{s}-*"} for s in splits],
                **({"default": True} if name == "default" else {}),
            }
        )
    return entries


def _local_data_files(directory: Path, config: str, split: str) -> list[Path]:
    prefix = "data" if config == "default" else config
    files = sorted((directory / prefix).glob(f"{split}-*.parquet"))
    if not files:
        available = dataset_splits(directory, config)
        raise FileNotFoundError(
            f"{directory} has no split {split!r} in config {config!r} (looked for {prefix}/{split}-*.parquet; "
            f"splits there: {', '.join(available) or 'none'})."
        )
    return files


def load_split(source: str | Path, split: str, config: str = "default", revision: str | None = None):
    """One split of a dataset directory written by vstar, or of a Hub dataset repo at a revision.

    Local directories are read straight from their Parquet files: `load_dataset` keys its cache on the
    directory, so a directory rebuilt in place could otherwise come back with the old rows.
    """
    from datasets import Dataset, load_dataset

    path = Path(source)
    if path.is_dir():
        return Dataset.from_file(str(_arrow_copy(_local_data_files(path, config, split))))
    return load_dataset(str(source), name=config, split=split, revision=revision)


def _arrow_copy(files: list[Path]) -> Path:
    """A memory-mapped Arrow copy of Parquet files, keyed on their paths, sizes and modification times.

    Reading Parquet decodes every row into memory, embedded video bytes included; an Arrow file is mapped, so each
    process holds only the rows it touches, and processes of one launch share the pages. The key changes whenever a
    file is rewritten, so a directory rebuilt in place never serves old rows.
    """
    import hashlib

    from datasets import config as datasets_config

    key = hashlib.sha1()
    for file in files:
        stat = file.stat()
        key.update(f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    cache = Path(datasets_config.HF_DATASETS_CACHE) / "vstar-arrow"
    target = cache / f"{key.hexdigest()}.arrow"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    file = files[0]
    try:
        schema = pq.read_schema(str(file))
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for file in files:
                # Mapped and without pre-buffering, one row group at a time: the copy costs a row group of memory.
                parquet = pq.ParquetFile(str(file), memory_map=True, pre_buffer=False)
                for group in range(parquet.num_row_groups):
                    writer.write_table(parquet.read_row_group(group))
    except (OSError, pa.ArrowException) as err:
        tmp.unlink(missing_ok=True)
        from vstar.errors import InputError

        raise InputError(
            f"{file} is not a readable Parquet file ({err}): rebuild the dataset, or copy the file again."
        ) from None
    pa.default_memory_pool().release_unused()
    os.replace(tmp, target)
    return target


def dataset_splits(directory: str | Path, config: str = "default") -> list[str]:
    """The splits a vstar dataset directory holds for `config`, from its Parquet file names."""
    prefix = "data" if config == "default" else config
    return sorted({p.name.split("-")[0] for p in (Path(directory) / prefix).glob("*.parquet")})


def dataset_info_yaml(directory: str | Path, features: Features, counts: Mapping[str, Mapping[str, int]]) -> Any:
    """The card's `dataset_info` for `{config: {split: rows}}`: features and split sizes.

    `load_dataset(dir)` keys its cache on the folder name and this metadata, so two directories with the same
    name but different rows (every cycle's `dataset/`) do not share a cache entry.
    """
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    directory = Path(directory)
    infos = {}
    for config, splits in counts.items():
        sizes = {s: (directory / split_file(s, config)).stat().st_size for s, n in splits.items() if n}
        split_dict = SplitDict({s: SplitInfo(s, num_bytes=sizes[s], num_examples=splits[s]) for s in sizes})
        total = sum(sizes.values())
        infos[config] = DatasetInfo(features=features, splits=split_dict, download_size=total, dataset_size=total)
    card_data = DatasetCardData()
    DatasetInfosDict(infos).to_dataset_card_data(card_data)
    return card_data.to_dict()["dataset_info"]


class SourceRows(Mapping):
    """The rows of a source split by id, read from Arrow one at a time, `ClassLabel` indices as class names.

    Only the ids live in Python; a row (with its video bytes, for sources that embed them) is read when it is asked
    for, so a split of a million embedded clips costs each process its id index, not its bytes.

    Args:
        dataset: the split (`datasets.Dataset`), e.g. from `load_split` and `vstar.subsets.select_subset`.
    """

    def __init__(self, dataset):
        from collections import Counter

        from datasets import ClassLabel

        self.dataset = dataset
        ids = list(dataset["id"])  # one column, read through any row selection
        self._position = {clip_id: i for i, clip_id in enumerate(ids)}
        if len(self._position) != len(ids):
            repeated = [clip_id for clip_id, n in Counter(ids).items() if n > 1]
            raise ValueError(
                f"The split has {len(repeated)} repeated ids (e.g. {repeated[:3]}): ids must be unique. "
                "Rebuild the source dataset with `vstar build`."
            )
        self._class_names = {k: f.names for k, f in dataset.features.items() if isinstance(f, ClassLabel)}
        # Column views made once: a lazy row reads only its labels, a clip only its video entry.
        has_video = "video" in dataset.column_names
        self._labels = dataset.select_columns([c for c in dataset.column_names if c != "video"])
        self._videos = dataset.select_columns(["video"]) if has_video else None

    def _named(self, row: dict[str, Any]) -> dict[str, Any]:
        for column, vocabulary in self._class_names.items():
            if isinstance(row.get(column), int):
                row[column] = vocabulary[row[column]]
        return row

    def __getitem__(self, clip_id: str) -> dict[str, Any]:
        return self._named(self.dataset[self._position[clip_id]])

    def __iter__(self):
        return iter(self._position)

    def __len__(self) -> int:
        return len(self._position)

    def __contains__(self, clip_id: object) -> bool:
        return clip_id in self._position

    def video(self, clip_id: str) -> Any:
        """The `video` entry of one row (path and/or bytes), read now."""
        if self._videos is None:
            raise KeyError(f"The split has no `video` column (columns: {', '.join(self.dataset.column_names)}).")
        return self._videos[self._position[clip_id]]["video"]

    def lazy_row(self, clip_id: str) -> dict[str, Any]:
        """A row whose `video` is a function reading the entry when the clip is decoded."""
        import functools

        row = self._named(self._labels[self._position[clip_id]])
        row["video"] = functools.partial(self.video, clip_id)
        return row

    def lazy_rows(self) -> list[dict[str, Any]]:
        """Every row in order, each with a lazily read `video` (see `lazy_row`)."""
        import functools

        rows = self._labels.to_list()
        for row in rows:
            self._named(row)
            row["video"] = functools.partial(self.video, row["id"])
        return rows


def rows_with_class_names(dataset) -> list[dict[str, Any]]:
    """Every row of a `datasets.Dataset` as a dict (videos included), `ClassLabel` indices as class names.

    Tasks verify text, so labels are read by name; the loop and the commands read rows one at a time through
    `SourceRows` instead, which names them the same way.
    """
    names = SourceRows(dataset)
    return [names._named(row) for row in dataset.to_list()]
