"""What every source builder shares: the registry, the Hub-layout writer, the card and the build report.

A builder turns a labeled video collection into a source dataset directory (`data/<split>-*.parquet`, a
README.md card with `configs:`, `build_report.json`) that `datasets.load_dataset(dir)` loads. Rows that cannot be
used (a missing, empty, truncated or undecodable video, a window outside the video, an empty label, a bad value, an
id already used) are left out and listed in the build report with the file, the row and the reason; a build that
leaves no row at all is an error naming the report.

```bash
vstar build folder --videos clips/ --output data/my_clips
```
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from datasets import ClassLabel, Features
from tqdm.auto import tqdm

from vstar.cards import markdown_table, write_card
from vstar.curate.executors import parallel_map
from vstar.errors import ConfigError, InputError
from vstar.io import ParquetRowWriter, configs_yaml, dataset_info_yaml, split_file
from vstar.registry import Registry
from vstar.sources.probe import EMPTY, MISSING, VideoProbe, probe_video

logger = logging.getLogger(__name__)

SOURCES: Registry = Registry("source")

# Containers players open: MP4/QuickTime, Matroska/WebM, AVI, FLV, MPEG transport and program streams (camcorder
# .mts/.m2ts, DVD .vob), 3GP, Ogg, Windows Media, MXF, DV.
VIDEO_EXTENSIONS = (
    *".mp4 .m4v .mov .mkv .webm .avi .flv .f4v .3gp .3g2 .ogv .wmv .asf .mxf .dv".split(),
    *".ts .m2ts .mts .mpg .mpeg .m2v .vob".split(),
)
# Split spellings found in the wild, mapped to the names `datasets` uses.
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "validate": "validation", "dev": "validation"}
SPLIT_ORDER = ("train", "validation", "test")
_SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")
# How far a window may end past the video's last frame: the end times of tables and of the Kinetics CSVs are whole
# seconds, and a download often ends a fraction of a second before the time the annotation gives.
WINDOW_TOLERANCE_S = 1.0


def check_settings(
    config: Any, at_least: Mapping[str, float] | None = None, above: Mapping[str, float] | None = None
) -> None:
    """Refuse impossible builder settings before any work starts (`--num_frames 0` would write empty videos).

    Args:
        config: the builder's settings.
        at_least: `{field: minimum}` the value must reach.
        above: `{field: bound}` the value must exceed.

    Raises:
        ConfigError: naming the flag, the value and the bound.
    """
    for name, bound in (at_least or {}).items():
        value = getattr(config, name)
        if value is not None and not value >= bound:
            raise ConfigError(f"--{name} must be at least {bound:g}, not {value}.")
    for name, bound in (above or {}).items():
        value = getattr(config, name)
        if value is not None and not value > bound:
            raise ConfigError(f"--{name} must be greater than {bound:g}, not {value}.")


def text_lines(path: str | Path, encoding: str = "utf-8") -> Iterator[str]:
    """The lines of a text table (newlines kept, for `csv.reader`), a UTF-8 byte-order mark dropped.

    Args:
        path: the file.
        encoding: its text encoding.

    Raises:
        InputError: naming the file, the line and the fix when the bytes are not in `encoding`.
        ConfigError: for an unknown encoding name.
    """
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        handle = open(path, newline="", encoding=codec)
    except LookupError:
        raise ConfigError(f"--encoding {encoding!r} is not a known text encoding (e.g. utf-8, latin-1).") from None
    try:
        with handle:
            yield from handle
    except UnicodeDecodeError as err:
        raise InputError(_decode_message(Path(path), encoding, err)) from None


def _decode_message(path: Path, encoding: str, err: UnicodeDecodeError) -> str:
    where = str(path)
    try:
        data = path.read_bytes()
        data.decode(encoding)
    except UnicodeDecodeError as whole:  # the position in the file, not in the decoder's chunk
        line = data.count(b"\n", 0, whole.start) + 1
        where = f"{path}:{line}"
        err = whole
    except OSError:
        pass
    bad = err.object[err.start : err.start + 4]
    return (
        f"{where}: the file is not {encoding} text (bytes {bad!r}); save it as UTF-8 "
        f"(`iconv -f latin1 -t utf-8 {path} > fixed{path.suffix}`) or give its encoding with --encoding latin-1."
    )


def check_header(header: list[str], path: str | Path) -> list[str]:
    """A table's column names, refusing a name given twice (reading rows by name would lose one of the columns).

    Args:
        header: the column names as read.
        path: the table file, named in the error.

    Raises:
        InputError: naming the file and the repeated column.
    """
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InputError(
            f"{path}:1: the header names the column(s) {', '.join(map(repr, repeated))} more than once; rename or "
            "remove the extra column so each name is unique."
        )
    return header


def check_window(start: float | None, end: float | None, duration: float | None = None) -> str | None:
    """Why a clip window `[start, end]` (seconds into its video, either may be `None`) cannot be used, or `None`.

    A window that ends more than `WINDOW_TOLERANCE_S` past the video's end, or starts at or after it, names frames the
    file does not have: it is reported like a missing video (`missing: ...`); a malformed window (infinite, empty or
    reversed) as `window: ...`.

    Args:
        start: window start, seconds.
        end: window end, seconds.
        duration: the video's length, when probed.
    """
    for name, value in (("start", start), ("end", end)):
        if value is not None and not math.isfinite(value):
            return f"window: the {name} is {value}, not a finite number of seconds"
    if start is not None and end is not None and start >= end:
        return f"window: the start ({start:g} s) is not before the end ({end:g} s)"
    if duration is None:
        return None
    if start is not None and start >= duration:
        return f"missing: the window starts at {start:g} s, after the end of the video ({duration:.2f} s)"
    if end is not None and end > duration + WINDOW_TOLERANCE_S:
        return f"missing: the window ends at {end:g} s, past the end of the video ({duration:.2f} s)"
    return None


class SplitIds:
    """Remembers the split of every id written, so that a clip listed twice, or in two splits (a leak of training
    clips into the held-out split), is left out and reported instead of written again."""

    def __init__(self) -> None:
        self._splits: dict[str, str] = {}

    def claim(self, clip_id: str, split: str) -> str | None:
        """Record `clip_id` in `split`; returns why the row must be dropped when the id was already claimed."""
        first = self._splits.get(clip_id)
        if first is None:
            self._splits[clip_id] = split
            return None
        if first == split:
            return f"duplicate: the id {clip_id} is listed twice in the {split} split (the first row is kept)"
        return f"duplicate: the id {clip_id} is already in the {first} split (one clip cannot be in two splits)"


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


def canonical_split(name: str, where: str = "") -> str:
    """The `datasets` name of a split (`val`/`validate` -> `validation`); rejects names the Hub cannot use.

    Args:
        name: the split as written in the input.
        where: the input position (`file:line`) named in the error.
    """
    split = SPLIT_ALIASES.get(name.strip().lower(), name.strip())
    if not _SPLIT_NAME.match(split):
        raise ValueError(f"{where + ': ' if where else ''}invalid split name {name!r} (letters, digits, _ and .).")
    return split


def split_from_file_name(path: str | Path, default: str = "train") -> str:
    """The split a file name names (`validate.csv` -> `validation`, `k700_test.jsonl` -> `test`), else `default`.

    Args:
        path: the annotation file.
        default: the split when the name names none.
    """
    for token in re.split(r"[^a-z]+", Path(path).stem.lower()):
        if token in SPLIT_ORDER or token in SPLIT_ALIASES:
            return canonical_split(token)
    return default


def is_split_name(name: str) -> bool:
    """Whether a folder or file name is a split name (`train`, `val`, `validation`, `test`, `dev`, ...)."""
    return name.lower() in SPLIT_ORDER or name.lower() in SPLIT_ALIASES


def split_order(splits: Iterable[str]) -> list[str]:
    """Splits in the usual order: train, validation, test, then the others alphabetically."""
    rank = {name: i for i, name in enumerate(SPLIT_ORDER)}
    return sorted(set(splits), key=lambda s: (rank.get(s, len(rank)), s))


def command_line(name: str, config: Any) -> str:
    """The `vstar build NAME --field value ...` command that reproduces `config` (fields left at their default
    are omitted)."""
    parts = ["vstar", "build", name]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        if value == default or value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        parts += [f"--{f.name}", *(_quote(str(v)) for v in values)]
    return " ".join(parts)


def _quote(text: str) -> str:
    return text if re.fullmatch(r"[\w./:@=+,-]+", text) else "'" + text.replace("'", "'\\''") + "'"


class Clip(NamedTuple):
    """One input row on its way to the dataset: its columns, its video file and where it was read from.

    Args:
        row: the dataset columns except `video` and the probe columns.
        video: the video path, or `None` when it was not found (then `error` says why).
        where: the input position named in the build report (`train.csv:17`, a frame folder, ...).
        error: a reason known before probing (`missing: ...`).
        expected: the file or folder looked for, named in the report when `video` is `None`.
    """

    row: dict[str, Any]
    video: str | None
    where: str
    error: str | None = None
    expected: str | None = None


def _probe_clip_video(video: str | None) -> VideoProbe | None:
    return probe_video(video) if video is not None else None


def probed_rows(
    clips: Iterable[Clip],
    report: dict[str, Any],
    num_proc: int = 1,
    probe: bool = True,
    desc: str | None = None,
    total: int | None = None,
    ids: SplitIds | None = None,
    check: Callable[[dict[str, Any], VideoProbe], str | None] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Probe each clip's video (in `num_proc` processes) and yield the usable rows with `video` and the probe
    columns; unusable clips are counted in `report["rows_read"]` and listed in `report["skipped"]`.

    A clip is unusable when its video is missing or broken, when its `start`/`end` window is malformed or lies
    outside the probed video (see `check_window`), or when its id was already written (to this or, with a shared
    `ids`, another split).

    Args:
        clips: the input rows, consumed lazily.
        report: the build report being filled (`rows_read`, `skipped`).
        num_proc: probing processes.
        probe: read the container metadata (else only check that the file exists and is not empty).
        desc: progress bar label.
        total: number of clips, for the progress bar.
        ids: the ids written so far; pass the same one for every split of a build.
        check: `check(row, probe)` -> why the row cannot be used, or `None`; it may adjust the row from what the
            probe found (default: `check_window` on the row's window and the probed duration).
        executor: where probing runs: `local` (`num_proc` processes here) or `ray` (a Ray Data stage of `num_proc`
            actors over the cluster at `ray_address`; see `vstar.curate.executors`). Same rows either way.
        ray_address: the Ray cluster (`auto`, `ray://head:10001`; default: a local instance).
    """
    report.setdefault("rows_read", 0)
    report.setdefault("skipped", [])
    ids = ids if ids is not None else SplitIds()
    check = check or _window_check

    def work(clip: Clip) -> str | None:
        return None if clip.error else clip.video  # a row already known to be bad is not probed

    if executor == "local":
        results = parallel_map(_probe_clip_video if probe else _quick_check, clips, num_proc, arg=work)
    else:
        results = _executor_map(clips, work, probe, executor, num_proc, ray_address)
    for clip, result in tqdm(results, total=total, desc=desc, unit="clip", leave=False):
        report["rows_read"] += 1
        row = clip.row
        error = clip.error or (result.error if result is not None else "missing: no file")
        if error is None:
            error = check(row, result)
        if error is None:
            error = ids.claim(row["id"], row.get("split") or "")
        if error is not None:
            skip(report, clip.where, clip.video or clip.expected, error, row.get("id"))
            continue
        yield {**row, "video": {"path": os.path.abspath(clip.video), "bytes": None}, **result.columns()}


def _probe_batch(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"probe": _probe_clip_video(row["video"])} for row in batch]


def _quick_batch(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"probe": _quick_check(row["video"])} for row in batch]


def _executor_map(clips, work, probe: bool, executor: str, num_proc: int, address: str | None):
    """`(clip, probe)` in input order, the probing done by a `vstar.curate.executors` executor (a Ray cluster)."""
    from vstar.curate.executors import get_executor

    clips = list(clips)
    runner = get_executor(executor, address=address, concurrency=max(1, num_proc))
    rows = runner.map_batches(_probe_batch if probe else _quick_batch, [{"video": work(c)} for c in clips], 16)
    return zip(clips, (row["probe"] for row in rows))


def _window_check(row: dict[str, Any], probe: VideoProbe | None) -> str | None:
    return check_window(row.get("start"), row.get("end"), probe.duration if probe is not None else None)


def _quick_check(video: str | None) -> VideoProbe | None:
    if video is None:
        return None
    try:
        size = os.stat(video).st_size
    except OSError as err:
        return VideoProbe(error=f"{MISSING}: {video} ({err.strerror})")
    return VideoProbe(error=f"{EMPTY}: {video} has 0 bytes" if size == 0 else None)


def skip(report: dict[str, Any], where: str, file: str | None, reason: str, clip_id: str | None = None) -> None:
    """List a left-out input row in the build report.

    Args:
        report: the build report (`skipped` is created when absent).
        where: the input position (`train.csv:17`).
        file: the video file or folder looked for.
        reason: `"<kind>: <detail>"`, kind one of `missing`, `empty`, `truncated`, `undecodable`, `duplicate`,
            `window`, `label`, `value`, ...
        clip_id: the row's id, when known.
    """
    report.setdefault("skipped", []).append({"row": where, "id": clip_id, "file": file, "reason": reason})


def write_source_dataset(
    rows: Mapping[str, Iterable[Mapping[str, Any]]],
    features: Features,
    output: str | Path,
    card: Mapping[str, Any],
    report: Mapping[str, Any] | None = None,
) -> Path:
    """Stream each split's rows to Parquet, then write `build_report.json` and the dataset card.

    When a split's rows raise, the rows written so far are kept (the directory still loads), the report records
    the error with `"complete": false`, and the error is raised again. When no row at all is usable (an input
    with a header and no rows, or every row left out), only `build_report.json` is written and `InputError` names it.

    Args:
        rows: `{split: rows}`; rows are consumed lazily, one row group at a time.
        features: the dataset features (see `vstar.schema.source_features`).
        output: the dataset directory.
        card: card fields: `pretty_name`, `description`, `license`, `build_command`, optional `repo_id`,
            `source` (where the data comes from), `homepage`, `citation`.
        report: the builder's report (`rows_read`, `skipped`), filled while the rows stream; rows written are
            counted here.
    """
    output = check_writable(output)
    counts: dict[str, int] = {}
    class_counts: dict[str, Counter] = {}
    hours: dict[str, float] = {}
    label_feature = features.get("label")
    error: BaseException | None = None
    for split, split_rows in rows.items():
        class_counts[split] = Counter()
        hours[split] = 0.0
        writer = ParquetRowWriter(output / split_file(split), features, batch_size=256)
        try:
            with writer:
                for row in split_rows:
                    writer.write(row)
                    label = row.get("label")
                    if isinstance(label_feature, ClassLabel) and label is not None:
                        class_counts[split][label_feature.str2int(label) if isinstance(label, str) else label] += 1
                    hours[split] += _window_seconds(row) / 3600
        except Exception as err:  # keep what was written, say what happened, then fail
            error = err
        counts[split] = writer.rows_written
        if error is not None:
            break
    for split, count in counts.items():
        if not count:  # `load_dataset` refuses a split without rows: leave it out
            logger.warning("No usable rows for the %s split: it is left out of the dataset.", split)
            (output / split_file(split)).unlink(missing_ok=True)
    report = {"rows_read": sum(counts.values()), "skipped": [], **(report or {})}
    report["rows_written"] = sum(counts.values())
    report["rows_per_split"] = counts
    report["complete"] = error is None
    if error is not None:
        report["error"] = f"{type(error).__name__}: {error}"
    (output / "build_report.json").write_text(json.dumps(report, indent=2, default=str))
    if error is None and not report["rows_written"]:
        raise InputError(_no_rows_message(output, report))
    _write_source_card(output, features, counts, class_counts, hours, card, report)
    if error is not None:
        logger.error(
            "The build stopped: %s; the %s rows written so far are in %s", error, sum(counts.values()), output
        )
        raise error
    logger.info("Wrote %s rows (%s) to %s; %s skipped", report["rows_written"], counts, output, len(report["skipped"]))
    return output


def _window_seconds(row: Mapping[str, Any]) -> float:
    """Seconds of video a row stands for: its window when it has one, else the whole video."""
    duration = row.get("duration") or 0.0
    start, end = row.get("start"), row.get("end")
    if start is None and end is None:
        return duration
    end = min(end, duration) if end is not None and duration else (end if end is not None else duration)
    return max(0.0, end - (start or 0.0))


def _no_rows_message(output: Path, report: Mapping[str, Any]) -> str:
    path = output / "build_report.json"
    skipped = report.get("skipped") or []
    if not skipped:
        return (
            f"No rows to write: the input lists no clips (a table with only a header?); nothing was written but "
            f"{path}. Check the annotation files and the split settings."
        )
    by_reason = Counter(_reason_kind(str(entry.get("reason", ""))) for entry in skipped)
    first = skipped[0]
    return (
        f"No usable rows: all {len(skipped)} rows read were left out "
        f"({', '.join(f'{kind} {n}' for kind, n in by_reason.most_common())}), so no dataset was written; every row "
        f"and reason is in {path} (the first: {first.get('row')}: {first.get('reason')})."
    )


def _feature_type(feature: Any) -> str:
    if isinstance(feature, ClassLabel):
        return f"ClassLabel ({feature.num_classes} classes)"
    if isinstance(feature, (list, tuple)) or type(feature).__name__ in ("Sequence", "List", "LargeList"):
        inner = feature[0] if isinstance(feature, (list, tuple)) else getattr(feature, "feature", None)
        return f"list of {_feature_type(inner)}" if inner is not None else "list"
    if type(feature).__name__ == "Video":
        return "Video (path or bytes)"
    return type(feature).__name__ + (f" ({feature.dtype})" if getattr(feature, "dtype", None) else "")


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0].strip()


def _write_source_card(output, features, counts, class_counts, hours, card, report) -> None:
    metadata = {
        "pretty_name": card.get("pretty_name", output.name),
        "license": card.get("license", "other"),
        "task_categories": ["video-text-to-text"],
        "tags": ["video", "vstar", "video-star"],
        "configs": configs_yaml({"default": [split for split, count in counts.items() if count]}),
        "dataset_info": dataset_info_yaml(output, features, {"default": counts}),
    }
    label_feature = features.get("label")
    class_table = None
    if isinstance(label_feature, ClassLabel):
        class_rows = [
            {"class": name, **{split: class_counts[split].get(i, 0) for split in counts}}
            for i, name in enumerate(label_feature.names)
        ]
        class_table = markdown_table(class_rows)
    split_rows = [{"split": s, "rows": n} for s, n in counts.items()]
    if "duration" in features:
        for entry in split_rows:
            entry["hours of video"] = round(hours.get(entry["split"], 0.0), 3)
    skipped = report["skipped"]
    by_reason = Counter(_reason_kind(str(entry.get("reason", ""))) for entry in skipped)
    write_card(
        output / "README.md",
        "source_dataset.md.j2",
        metadata,
        description=card.get("description", ""),
        source=card.get("source"),
        homepage=card.get("homepage"),
        citation=card.get("citation"),
        build_command=card.get("build_command", "vstar build"),
        repo_id=card.get("repo_id", str(output)),
        revision=card.get("revision"),
        schema_table=markdown_table([{"column": k, "type": _feature_type(v)} for k, v in features.items()]),
        split_table=markdown_table(split_rows),
        class_table=class_table,
        report=report,
        reasons_table=markdown_table([{"reason": k, "rows": n} for k, n in by_reason.most_common()]),
        skipped_table=markdown_table(skipped[:50]),
        skipped_shown=min(len(skipped), 50),
    )
