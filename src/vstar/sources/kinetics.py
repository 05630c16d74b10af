"""Kinetics (400, 600, 700, 700-2020) as a source dataset, from the official CSV files and the downloaded clips.

The CSVs have the header `label,youtube_id,time_start,time_end,split` (the test CSV may lack `label`; Kinetics-400
adds `is_cc`). Videos lie flat, under `<split>/`, `<split>/<label>/` or `<label>/` (ids may start with `-` or `_`),
either as the cut clips `{youtube_id}_{time_start:06d}_{time_end:06d}.mp4` or as the uncut YouTube downloads
`{youtube_id}.mp4` (`.webm`, `.mkv`): an uncut video is not re-encoded, its row's `start`/`end` are the CSV's
`time_start`/`time_end`, and a window past the video's end is reported like a missing clip (with `--probe false` the
window is not checked). A file named `{youtube_id}` that is no longer than the window and ends before the window
starts is taken to be the cut clip under the mirror's naming, and used whole. `label` is a `ClassLabel` over the
sorted class names as spelled in the CSVs.

Rows that cannot be used are left out and listed in `build_report.json` with file, line and reason: a clip that is
missing, empty, truncated or undecodable, an empty label in a labelled CSV, a window that ends before it starts, and
a clip already listed (in the same or in another split: one clip is never in two splits). A malformed CSV (a
missing or repeated header column, a row with the wrong number of fields, a time that is not a number, text that is
not UTF-8) stops the build before anything is written, naming the file and line.

```bash
vstar build kinetics --annotations train.csv validate.csv --videos kinetics700/ --output data/k700 --num_proc 2
```
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vstar.errors import ConfigError
from vstar.schema import source_features
from vstar.sources.base import (
    SOURCES,
    SPLIT_ALIASES,
    WINDOW_TOLERANCE_S,
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

REQUIRED_COLUMNS = ("youtube_id", "time_start", "time_end")
KNOWN_VERSIONS = {400: "400", 600: "600", 700: "700"}
CITATION = """@article{kay2017kinetics,
  title   = {The Kinetics Human Action Video Dataset},
  author  = {Kay, Will and Carreira, Joao and Simonyan, Karen and Zhang, Brian and Hillier, Chloe and
             Vijayanarasimhan, Sudheendra and Viola, Fabio and Green, Tim and Back, Trevor and Natsev, Paul and
             Suleyman, Mustafa and Zisserman, Andrew},
  journal = {arXiv preprint arXiv:1705.06950},
  year    = {2017}
}"""


@dataclass
class KineticsConfig:
    """Settings of the Kinetics source builder."""

    annotations: list[str] | None = field(
        default=None, metadata={"help": "Official CSV files, e.g. `train.csv validate.csv test.csv`."}
    )
    videos: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the videos (cut clips or uncut `{youtube_id}` downloads): flat, `<split>/`, "
            "`<split>/<label>/` or `<label>/`."
        },
    )
    output: str = field(default="data/kinetics", metadata={"help": "Output directory (Hub layout)."})
    version: str | None = field(
        default=None, metadata={"help": "400, 600, 700 or 700-2020 (default: from the number of classes)."}
    )
    classes: str | None = field(
        default=None,
        metadata={"help": "Text file of class names, one a line, when the CSVs do not name them all (test only)."},
    )
    split: str | None = field(
        default=None, metadata={"help": "Split of rows whose CSV has no `split` column (default: the file name)."}
    )
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
    extensions: list[str] = field(
        default_factory=lambda: [".mp4", ".webm", ".mkv"],
        metadata={"help": "Video file extensions to look for, in order."},
    )
    encoding: str = field(default="utf-8", metadata={"help": "Text encoding of the CSV files."})
    license: str = field(default="cc-by-4.0", metadata={"help": "Licence field of the card (the annotations')."})


@dataclass
class KineticsRow:
    """One parsed CSV row."""

    file: str
    line: int
    youtube_id: str
    time_start: int
    time_end: int
    label: str | None
    raw_split: str
    split: str
    is_cc: bool | None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def clip_name(self) -> str:
        return f"{self.youtube_id}_{self.time_start:06d}_{self.time_end:06d}"


def _int_seconds(value: str, column: str, where: str) -> int:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{where}: `{column}` must be a number of seconds, not {value!r}.") from None
    if not number.is_integer() or number < 0:
        raise ValueError(f"{where}: `{column}` must be a whole, non-negative number of seconds, not {value!r}.")
    return int(number)


def _bool(value: str, column: str, where: str) -> bool | None:
    text = value.strip().lower()
    if not text:
        return None
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise ValueError(f"{where}: `{column}` must be 0/1 or true/false, not {value!r}.")


def read_kinetics_header(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """The column names of a Kinetics CSV.

    Args:
        path: the CSV file.
        encoding: its text encoding.
    """
    header = [name.strip() for name in next(csv.reader(text_lines(path, encoding)), [])]
    return check_header(header, path)


def read_kinetics_csv(
    path: str | Path, default_split: str | None = None, encoding: str = "utf-8"
) -> Iterator[KineticsRow]:
    """Parse one official Kinetics CSV, streaming.

    Args:
        path: the CSV file.
        default_split: split of the rows when the CSV has no `split` column (default: from the file name).
        encoding: the file's text encoding.

    Raises:
        ValueError: naming the file and line of a malformed row, or the missing or repeated column of a bad header.
    """
    path = Path(path)
    fallback = canonical_split(default_split) if default_split else split_from_file_name(path)
    reader = csv.reader(text_lines(path, encoding))
    header = check_header([name.strip() for name in next(reader, [])], path)
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise ValueError(
            f"{path}:1: the header lacks the column(s) {', '.join(missing)} "
            f"(found: {', '.join(header) or 'none'}); expected `label,youtube_id,time_start,time_end,split`."
        )
    for fields in reader:
        where = f"{path}:{reader.line_num}"
        if not fields or not any(value.strip() for value in fields):
            continue
        if len(fields) != len(header):
            raise ValueError(
                f"{where}: expected {len(header)} fields ({','.join(header)}), found {len(fields)}: {fields!r}."
            )
        record = dict(zip(header, fields))
        youtube_id = record["youtube_id"].strip()
        if not youtube_id:
            raise ValueError(f"{where}: empty `youtube_id`.")
        start = _int_seconds(record["time_start"], "time_start", where)
        end = _int_seconds(record["time_end"], "time_end", where)
        raw_split = (record.get("split") or "").strip()
        yield KineticsRow(
            file=str(path),
            line=reader.line_num,
            youtube_id=youtube_id,
            time_start=start,
            time_end=end,
            label=(record.get("label") or "").strip() or None,
            raw_split=raw_split,
            split=canonical_split(raw_split, where) if raw_split else fallback,
            is_cc=_bool(record["is_cc"], "is_cc", where) if "is_cc" in record else None,
        )


class ClipLocator:
    """Finds a row's video flat, under `<split>/`, `<split>/<label>/` or `<label>/`: the cut clip
    `{youtube_id}_{start:06d}_{end:06d}{ext}` first, else the uncut download `{youtube_id}{ext}`.

    A few `stat` calls per row and no listing of the folder, so memory does not grow with the collection; the layout
    that matched last is tried first.

    Args:
        root: the videos folder.
        extensions: file extensions to try, in order.
    """

    def __init__(self, root: str | Path, extensions: list[str]):
        self.root = Path(root)
        self.extensions = [e if e.startswith(".") else f".{e}" for e in extensions]
        self._last_layout = 0

    def _layouts(self, row: KineticsRow) -> list[list[str]]:
        splits = list(
            dict.fromkeys([row.raw_split, row.split, *(a for a, c in SPLIT_ALIASES.items() if c == row.split)])
        )
        splits = [s for s in splits if s]
        labels = list(dict.fromkeys([row.label, row.label.replace(" ", "_")])) if row.label else []
        return [
            [""],
            [f"{s}/" for s in splits],
            [f"{s}/{label}/" for s in splits for label in labels],
            [f"{label}/" for label in labels],
        ]

    def find(self, row: KineticsRow) -> tuple[str, bool] | None:
        """`(path, cut)` of the row's video (`cut` False for an uncut download), or `None` when none exists."""
        layouts = self._layouts(row)
        order = [self._last_layout] + [i for i in range(len(layouts)) if i != self._last_layout]
        # Cut clips first: where both exist, the cut one decodes without seeking into a long video.
        for name, cut in ((row.clip_name, True), (row.youtube_id, False)):
            for index in order:
                for prefix in layouts[index]:
                    for ext in self.extensions:
                        path = os.path.join(self.root, prefix + name + ext)
                        if os.path.isfile(path):
                            self._last_layout = index
                            return path, cut
        return None


@dataclass
class _Scan:
    labels: set[str]
    splits: Counter
    has_is_cc: bool
    labelled_files: set[str]


def _scan(config: KineticsConfig) -> _Scan:
    """First pass: validate every row and collect the class names, splits, optional columns and the CSVs that carry
    labels (in those, a row without a label is left out; a CSV without any label is a test split)."""
    labels: set[str] = set()
    splits: Counter = Counter()
    has_is_cc = False
    labelled_files: set[str] = set()
    for path in config.annotations:
        has_is_cc |= "is_cc" in read_kinetics_header(path, config.encoding)
        for row in read_kinetics_csv(path, config.split, config.encoding):
            splits[row.split] += 1
            if row.label is not None:
                labels.add(row.label)
                labelled_files.add(row.file)
    return _Scan(labels, splits, has_is_cc, labelled_files)


def _class_names(config: KineticsConfig, labels: set[str]) -> list[str]:
    if not config.classes:
        return sorted(labels)
    lines = text_lines(config.classes, config.encoding)
    names = [line.strip() for line in lines if line.strip()]
    unknown = sorted(labels - set(names))
    if unknown:
        raise ValueError(f"{config.classes} lacks {len(unknown)} class(es) used in the CSVs: {unknown[:5]}.")
    return sorted(set(names))


def _clips(config: KineticsConfig, split: str, locator: ClipLocator, source: str, scan: _Scan) -> Iterator[Clip]:
    for path in config.annotations:
        for row in read_kinetics_csv(path, config.split, config.encoding):
            if row.split != split:
                continue
            found = locator.find(row)
            video, cut = found if found else (None, True)
            columns: dict[str, Any] = {
                "id": row.clip_name,
                # A cut clip file is already [time_start, time_end]; an uncut download is read inside that window.
                "start": None if cut else float(row.time_start),
                "end": None if cut else float(row.time_end),
                "source": source,
                "split": split,
                "label": row.label,
                "youtube_id": row.youtube_id,
                "time_start": row.time_start,
                "time_end": row.time_end,
            }
            if scan.has_is_cc:
                columns["is_cc"] = row.is_cc
            error = expected = None
            if row.label is None and row.file in scan.labelled_files:
                error = f"label: the `label` cell is empty (the other rows of {Path(row.file).name} have labels)"
            elif row.time_end <= row.time_start:
                error = check_window(float(row.time_start), float(row.time_end))
            elif video is None:
                expected = os.path.join(locator.root, row.clip_name + locator.extensions[0])
                error = (
                    f"{MISSING}: neither the clip {row.clip_name}.* nor the download {row.youtube_id}.* "
                    f"({'/'.join(locator.extensions)}) flat, under split/, split/label/ or label/"
                )
            yield Clip(columns, video, row.where, error, expected or video)


def _window_or_cut_clip(row: dict[str, Any], probe: Any) -> str | None:
    """For a file named `{youtube_id}`: the download, read inside the CSV's window, unless it is a cut clip.

    Some mirrors name the cut 10-second clips `{youtube_id}.mp4`. A healthy file (truncated ones fail the probe)
    that ends before the window starts and is no longer than the window is that clip, not a download too short to
    hold the window: it is used whole (`start`/`end` null). Otherwise the window must lie inside the file.
    """
    start, end, duration = row.get("start"), row.get("end"), getattr(probe, "duration", None)
    if start is not None and end is not None and duration is not None:
        if start >= duration and duration <= end - start + WINDOW_TOLERANCE_S:
            row["start"] = row["end"] = None
            return None
    return check_window(start, end, duration)


def _validate(config: KineticsConfig) -> None:
    if not config.annotations:
        raise ValueError("Give the Kinetics CSV files: --annotations train.csv [validate.csv ...].")
    if not config.videos:
        raise ValueError("Give the folder of the clips: --videos DIR.")
    for path in config.annotations:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Annotation file {path} does not exist.")
    if not Path(config.videos).is_dir():
        raise FileNotFoundError(f"Videos folder {config.videos} does not exist.")
    check_settings(config, at_least={"num_proc": 1})
    if not config.extensions:
        raise ConfigError("--extensions is empty: give the video file extensions to look for, e.g. .mp4 .webm.")


@SOURCES.register("kinetics")
def build_kinetics(config: KineticsConfig | None = None, **overrides) -> Path:
    """Write the Kinetics source dataset to `config.output`; returns the directory (`load_dataset(dir)` loads it).

    Args:
        config: the settings (or pass them as keyword arguments).
    """
    from datasets import ClassLabel, Value

    config = config or KineticsConfig(**overrides)
    if isinstance(config.annotations, str):
        config.annotations = [config.annotations]
    _validate(config)
    output = check_writable(config.output)
    scan = _scan(config)
    names = _class_names(config, scan.labels)
    version = config.version or KNOWN_VERSIONS.get(len(names))
    source = f"kinetics-{version}" if version else "kinetics"
    label_features: dict[str, Any] = {
        "label": ClassLabel(names=names),
        "youtube_id": Value("string"),
        "time_start": Value("int32"),
        "time_end": Value("int32"),
    }
    if scan.has_is_cc:
        label_features["is_cc"] = Value("bool")
    features = source_features({**label_features, **probe_features()})
    locator = ClipLocator(config.videos, config.extensions)
    report: dict[str, Any] = {"rows_read": 0, "skipped": []}
    ids = SplitIds()
    rows = {
        split: probed_rows(
            _clips(config, split, locator, source, scan),
            report,
            num_proc=config.num_proc,
            probe=config.probe,
            executor=config.executor,
            ray_address=config.ray_address,
            desc=f"kinetics {split}",
            total=scan.splits[split],
            ids=ids,
            check=_window_or_cut_clip,
        )
        for split in split_order(scan.splits)
    }
    pretty = f"Kinetics-{version}" if version else "Kinetics"
    return write_source_dataset(
        rows,
        features,
        output,
        card={
            "pretty_name": f"{pretty} (vstar source dataset)",
            "description": (
                f"{pretty} human action clips ({len(names)} classes), one row per 10-second YouTube clip. `label` "
                "is the action class; `youtube_id`, `time_start` and `time_end` locate the clip in its YouTube "
                "video. A row whose file is the cut clip has null `start`/`end`; a row whose file is the uncut "
                "download has `start`/`end` = `time_start`/`time_end` (seconds into that file). `duration`, `fps`, "
                "`width`, `height` and `codec` come from the file's container."
            ),
            "source": (
                "Annotations: the official Kinetics CSV files ("
                + ", ".join(f"`{Path(p).name}`" for p in config.annotations)
                + f"). Videos: `{config.videos}`, cut clips `{{youtube_id}}_{{time_start:06d}}_{{time_end:06d}}.mp4` "
                "or uncut downloads `{youtube_id}.mp4`."
            ),
            "homepage": "https://github.com/cvdfoundation/kinetics-dataset",
            "citation": CITATION,
            "license": config.license,
            "build_command": command_line("kinetics", config),
        },
        report=report,
    )


build_kinetics.config_class = KineticsConfig
