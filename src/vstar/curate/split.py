"""`vstar split`: long, uncut videos -> a source dataset of single-scene clips (Panda-70M's splitting).

Each video is decoded once, frame by frame (memory stays flat however long it is): a shot-boundary detector
(PySceneDetect's content detector, or TransNetV2) finds the cuts on downscaled frames, scenes longer than
`max_scene_seconds + 2` s are cut into pieces, the frames at 5% and 95% of every scene are embedded, and stitching
(`vstar.curate.stitch`) merges neighbours that show one event and drops transitions, static, short and redundant
scenes. The output is a normal vstar source dataset (`vstar cycle`, `vstar caption` and `load_dataset` read it):
one row per clip with `id`, `video` (the original file: clips are windows `start`-`end` into it, nothing is
re-encoded unless `--reencode true`), `start`, `end`, `source`, `split`, `parent_id`, `split_reason` (`scene`, or
`max_seconds` for a part of a longer event), the parent's probe and label columns. `build_report.json` lists every
video that could not be split (`skipped`, with the reason), every dropped span with its reason (`dropped`), and
per video what was found (`videos`). Work runs through `vstar.curate.executors` (`--executor local|ray`).

```bash
vstar split --videos raw/ --output data/clips
vstar split --dataset data/my_source --output data/clips --detector transnetv2 --num_proc 2
vstar split --videos 'raw/*.mp4' --output data/clips --executor ray --ray_address auto
```
"""

from __future__ import annotations

import glob
import logging
import os
from array import array
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from vstar.curate.detect import frames_needed, get_detector, read_frames
from vstar.curate.embed import PIXELS, get_embedder
from vstar.curate.executors import get_executor
from vstar.curate.stitch import TRANSITION, UNDECODED, Scene, StitchSettings, pieces, probe_frames, stitch
from vstar.errors import ConfigError, InputError
from vstar.video import VideoDecodeError, _describe

logger = logging.getLogger(__name__)

DETECTORS = ("content", "transnetv2")
# Columns every split row gets from the split itself, not from the parent.
OWN_COLUMNS = ("id", "video", "start", "end", "source", "split", "parent_id", "split_reason")
PROBE_COLUMNS = ("duration", "fps", "width", "height", "codec")


@dataclass
class SplitConfig(StitchSettings):
    """Settings of `vstar split` (the stitching thresholds are Panda-70M's; see `vstar.curate.stitch`)."""

    videos: str | None = field(
        default=None, metadata={"help": "A folder of videos (searched recursively) or a glob such as 'raw/*.mp4'."}
    )
    dataset: str | None = field(
        default=None,
        metadata={"help": "A source dataset (directory or Hub id) to split; its label columns carry over."},
    )
    output: str = field(default="data/clips", metadata={"help": "Output directory (a source dataset, Hub layout)."})
    detector: str = field(
        default="content", metadata={"help": "Shot detector: content (PySceneDetect) or transnetv2 (pretrained)."}
    )
    threshold: float | None = field(
        default=None, metadata={"help": "Detector threshold (default: 25 for content, 0.5 for transnetv2)."}
    )
    min_scene_len: int = field(default=15, metadata={"help": "Content detector: fewest frames between two cuts."})
    detect_width: int = field(default=256, metadata={"help": "Width of the downscaled frames the detector sees."})
    embedder: str = field(
        default=PIXELS,
        metadata={"help": "Frame embedder for stitching: pixels (colour histogram + layout) or an image model path."},
    )
    device: str = field(
        default="cpu",
        metadata={"help": "Where TransNetV2 and a model embedder run: cpu or cuda (decoding stays on CPUs)."},
    )
    reencode: bool = field(
        default=False, metadata={"help": "Write every clip as its own H.264 file (else windows into the original)."}
    )
    executor: str = field(default="local", metadata={"help": "Where the videos are split: local or ray."})
    num_proc: int = field(default=1, metadata={"help": "Local executor: processes (one video at a time each)."})
    ray_address: str | None = field(default=None, metadata={"help": "Ray executor: the cluster (auto, ray://...)."})
    ray_num_cpus: float = field(default=1.0, metadata={"help": "Ray executor: CPUs per actor."})
    ray_num_gpus: float = field(default=0.0, metadata={"help": "Ray executor: GPUs per actor (with --device cuda)."})
    ray_concurrency: int | None = field(default=None, metadata={"help": "Ray executor: actors (default: all CPUs)."})
    split: str = field(default="train", metadata={"help": "Split of the clips of --videos."})
    name: str | None = field(default=None, metadata={"help": "The `source` column of --videos clips."})
    description: str | None = field(default=None, metadata={"help": "What the videos show, for the card."})
    license: str = field(default="other", metadata={"help": "Licence field of the card."})

    def stitch_settings(self) -> StitchSettings:
        return StitchSettings(**{f.name: getattr(self, f.name) for f in fields(StitchSettings)})

    def check(self) -> None:
        if (self.videos is None) == (self.dataset is None):
            raise ConfigError("Give exactly one of --videos DIR_OR_GLOB and --dataset SOURCE_DATASET.")
        if self.detector not in DETECTORS:
            raise ConfigError(f"--detector must be one of {', '.join(DETECTORS)}, not {self.detector!r}.")
        if self.min_seconds <= 0 or self.max_seconds < self.min_seconds:
            raise ConfigError(
                f"--min_seconds ({self.min_seconds:g}) must be positive and at most --max_seconds "
                f"({self.max_seconds:g})."
            )
        if not 0 <= self.trim_fraction < 0.5:
            raise ConfigError(f"--trim_fraction must be in [0, 0.5), not {self.trim_fraction:g}.")
        if self.max_scene_seconds <= 0 or self.detect_width < 16 or self.min_scene_len < 0:
            raise ConfigError(
                "--max_scene_seconds must be positive, --detect_width at least 16 and --min_scene_len at least 0."
            )


@dataclass
class VideoSplit:
    """What splitting one video found, in seconds.

    Args:
        clips: `(start, end, split_reason)` of each kept clip.
        dropped: `(start, end, reason, detail)` of each span left out.
        stats: frames, seconds, cuts, scenes, the decoder's note.
        error: why the video could not be split at all (then nothing else is set).
    """

    clips: list[tuple[float, float, str]] = field(default_factory=list)
    dropped: list[tuple[float, float, str, str]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def split_video(
    video: Any,
    config: SplitConfig,
    embedder=None,
    start: float | None = None,
    end: float | None = None,
) -> VideoSplit:
    """Split one video into clips (one decoding pass; see the module docstring).

    Args:
        video: a path, bytes or a `datasets.Video(decode=False)` entry.
        config: detector and stitching settings.
        embedder: a frame embedder (default: `get_embedder(config.embedder)`).
        start: only frames at or after this time (seconds) are split.
        end: only frames before this time.
    """
    embedder = embedder or get_embedder(config.embedder, config.device)
    try:
        stream = read_frames(video, config.detect_width, start=start)
    except VideoDecodeError as err:
        return VideoSplit(error=f"undecodable: {err}")
    settings = config.stitch_settings()
    detector = get_detector(config.detector, stream.fps, config.threshold, config.min_scene_len, config.device)
    ring: deque = deque(maxlen=frames_needed(stream.fps, settings.max_scene_seconds + 2.5, detector.delay))
    times = array("d")
    scenes: list[Scene] = []
    gaps: list[tuple[int, int]] = []
    cuts: list[int] = []
    state = {"open": 0}

    def image_at(index: int) -> np.ndarray:
        first = ring[0][0]
        position = min(max(index - first, 0), len(ring) - 1)
        return ring[position][1]

    def emit(lo: int, hi: int) -> None:
        a, b = probe_frames(lo, hi)
        vectors = embedder([image_at(a)[..., ::-1], image_at(b)[..., ::-1]])
        scenes.append(Scene(lo, hi, vectors[0], vectors[1]))

    def close(hi: int, end_time: float) -> None:
        lo = state["open"]
        if hi <= lo:
            return
        for cut in pieces(lo, hi, times, end_time, settings):
            emit(lo, cut)
            lo = cut
        emit(lo, hi)
        state["open"] = hi

    def boundaries(found, end_time: float) -> None:
        for scene_end, scene_start in found:
            close(scene_end, end_time)
            # A transition longer than the detector's delay may begin inside a piece already emitted: the gap
            # starts where that piece ends, so clips and dropped spans never overlap.
            gap_start = max(scene_end, state["open"])
            if scene_start > gap_start:
                gaps.append((gap_start, scene_start))
            state["open"] = max(state["open"], scene_start)
            cuts.append(scene_start)

    local = 0
    for frame in stream.frames:
        if start is not None and frame.time < start - 1e-6:
            continue
        if end is not None and frame.time >= end - 1e-6:
            break
        times.append(frame.time)
        ring.append((local, frame.image))
        boundaries(detector.feed(local, frame.image), float("inf"))
        # A piece Panda's detection step would cut is final once no late cut can come before its end.
        settled = local - detector.delay
        open_at = state["open"]
        if settled > open_at and times[settled] - times[open_at] > settings.max_scene_seconds + 2:
            cut = pieces(open_at, settled + 1, times, times[settled], settings)
            if cut:
                emit(open_at, cut[0])
                state["open"] = cut[0]
        local += 1
    count = len(times)
    if count == 0:
        reason = stream.stopped or "the window holds no frames"
        return VideoSplit(error=f"empty: {_describe(video)}: {reason}")
    frame_seconds = 1 / stream.fps if stream.fps else (times[-1] - times[0]) / max(1, count - 1)
    end_time = times[-1] + frame_seconds
    boundaries(detector.finish(count), end_time)
    close(count, end_time)
    clips, dropped = stitch(scenes, times, end_time, settings)

    def at(index: int) -> float:
        return round(times[index] if index < count else end_time, 6)

    out = VideoSplit(
        clips=[(at(c.start), at(c.end), c.reason) for c in clips],
        dropped=[(at(s.start), at(s.end), s.reason, s.detail) for s in dropped]
        + [(at(lo), at(hi), TRANSITION, f"{config.detector} transition frames") for lo, hi in gaps],
        stats={
            "frames": count,
            "seconds": round(end_time - times[0], 3),
            "fps": stream.fps,
            "cuts": len(cuts),
            "cut_times": [at(cut) for cut in cuts],
            "scenes": len(scenes),
            "clips": len(clips),
            "stopped": stream.stopped,
        },
    )
    if stream.stopped and stream.stated_frames and stream.fps and stream.stated_frames > count:
        out.dropped.append((at(count), round(stream.stated_frames / stream.fps, 6), UNDECODED, stream.stopped))
    out.dropped.sort()
    out.stats.update(width=stream.width, height=stream.height, codec=stream.codec, rotation=stream.rotation)
    # The file's length (a parent with a window is split inside it, but its video is the whole file).
    out.stats["duration"] = round(max(stream.duration or 0.0, end_time), 6)
    return out


class Splitter:
    """The batch function the executors run: one result row per parent video (built once per worker, so the
    embedder and TransNetV2 load once)."""

    def __init__(self, config: dict[str, Any], driver_pid: int | None = None):
        if driver_pid is not None and os.getpid() != driver_pid:
            import torch

            # A worker process (or Ray actor) is one of several on the machine: one thread each.
            torch.set_num_threads(1)
        self.config = SplitConfig(**config)
        self.embedder = get_embedder(self.config.embedder, self.config.device)

    def __call__(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for parent in batch:
            result = split_video(parent["video"], self.config, self.embedder, parent.get("start"), parent.get("end"))
            row = {"parent": parent, **asdict(result)}
            if self.config.reencode and result.error is None:
                row["files"] = [
                    _reencode(parent["video"], lo, hi, _clip_file(self.config.output, parent["id"], k))
                    for k, (lo, hi, _) in enumerate(result.clips)
                ]
            out.append(row)
        return out


def _clip_id(parent_id: str, k: int) -> str:
    return f"{parent_id}_{k:04d}"


def _clip_file(output: str, parent_id: str, k: int) -> str:
    return str(Path(output).resolve() / "clips" / f"{_clip_id(parent_id, k).replace('/', '__')}.mp4")


def _reencode(video: Any, start: float, end: float, path: str) -> str:
    """Write frames `[start, end)` of `video` as an H.264 file, streaming (upright; the frame rate kept)."""
    import av

    from vstar.video import _open_input

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(_open_input(video)) as source, av.open(path, "w", format="mp4") as target:
        stream = source.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or 25
        out = None
        first = None
        for frame in source.decode(stream):
            time = frame.time if frame.time is not None else 0.0
            first = time if first is None else first
            if time - first < start - 1e-6:
                continue
            if time - first >= end - 1e-6:
                break
            image = frame.to_ndarray(format="rgb24")
            turns = round(frame.rotation / 90) % 4
            image = np.ascontiguousarray(np.rot90(image, turns)) if turns else image
            if out is None:
                out = target.add_stream("libx264", rate=rate)
                out.height, out.width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
                out.pix_fmt = "yuv420p"
            image = image[: out.height, : out.width]
            target.mux(out.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        if out is not None:
            target.mux(out.encode())
    return path


def _video_files(pattern: str) -> list[tuple[Path, str]]:
    """The video files a folder or glob names, each with its parent id: the path below the folder without its
    suffix (with it where two files differ only in their suffix)."""
    from vstar.sources.base import VIDEO_EXTENSIONS

    path = Path(pattern)
    if path.is_dir():
        files = [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS]
        root = path
    else:
        files = [Path(p) for p in sorted(glob.glob(pattern, recursive=True)) if Path(p).is_file()]
        root = Path(os.path.commonpath([str(p.parent) for p in files])) if files else Path(".")
    if not files:
        raise InputError(
            f"--videos {pattern}: no video files there ({' '.join(VIDEO_EXTENSIONS[:6])} ...); give a folder of "
            "videos or a glob such as 'raw/*.mp4'."
        )
    stems = [p.relative_to(root).with_suffix("").as_posix() for p in files]
    counts = Counter(stems)
    return [(p, stem if counts[stem] == 1 else p.relative_to(root).as_posix()) for p, stem in zip(files, stems)]


def _parents(config: SplitConfig) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """The parent rows by split, and the label features they carry."""
    if config.videos is not None:
        source = config.name or Path(config.videos.split("*")[0].rstrip("/") or ".").name or "videos"
        rows = [
            {
                "id": clip_id,
                "video": {"path": str(path.resolve()), "bytes": None},
                "start": None,
                "end": None,
                "source": source,
                "split": config.split,
                "where": str(path),
                "labels": {},
            }
            for path, clip_id in _video_files(config.videos)
        ]
        return {config.split: rows}, {}
    from vstar.io import dataset_splits, load_split

    path = Path(config.dataset)
    if path.is_dir():
        splits = dataset_splits(path)
    else:
        from datasets import get_dataset_split_names

        splits = get_dataset_split_names(config.dataset)
    if not splits:
        raise InputError(f"--dataset {config.dataset}: no data/<split>-*.parquet files; give a vstar source dataset.")
    by_split: dict[str, list[dict[str, Any]]] = {}
    labels: dict[str, Any] = {}
    for split in splits:
        dataset = load_split(config.dataset, split)
        if "video" not in dataset.column_names or "id" not in dataset.column_names:
            raise InputError(f"--dataset {config.dataset}: split {split} has no `id` and `video` columns.")
        dataset = dataset.cast_column("video", _video_feature())
        carried = [c for c in dataset.column_names if c not in OWN_COLUMNS and c not in PROBE_COLUMNS]
        labels.update({c: dataset.features[c] for c in carried})
        by_split[split] = [
            {
                "id": row["id"],
                "video": row["video"],
                "start": row.get("start"),
                "end": row.get("end"),
                "source": row.get("source") or path.name,
                "split": row.get("split") or split,
                "where": f"{config.dataset}:{split}:{i}",
                "labels": {c: row[c] for c in carried},
            }
            for i, row in enumerate(dataset)
        ]
    return by_split, labels


def _video_feature():
    from datasets import Video

    return Video(decode=False)


def _features(labels: dict[str, Any]):
    from datasets import Value

    from vstar.schema import source_features
    from vstar.sources.probe import probe_features

    return source_features(
        {**labels, "parent_id": Value("string"), "split_reason": Value("string"), **probe_features()}
    )


def _clip_rows(result: dict[str, Any], config: SplitConfig, report: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The dataset rows of one parent's result; its failure or dropped spans go to the report."""
    from vstar.sources.base import skip

    parent = result["parent"]
    video_name = parent["video"].get("path") or "<embedded video>"
    report["rows_read"] += 1
    if result["error"]:
        skip(report, parent["where"], video_name, result["error"], parent["id"])
        return
    stats = result["stats"]
    report["videos"].append({"id": parent["id"], "video": video_name, **stats})
    for lo, hi, reason, detail in result["dropped"]:
        report["dropped"].append(
            {"parent_id": parent["id"], "video": video_name, "start": lo, "end": hi, "reason": reason}
            | {"detail": detail}
        )
    files = result.get("files")
    for k, (lo, hi, reason) in enumerate(result["clips"]):
        video, start, end = parent["video"], lo, hi
        if files:
            video, start, end = {"path": files[k], "bytes": None}, None, None
        yield {
            "id": _clip_id(parent["id"], k),
            "video": video,
            "start": start,
            "end": end,
            "source": parent["source"],
            "split": parent["split"],
            **parent["labels"],
            "parent_id": parent["id"],
            "split_reason": reason,
            "duration": hi - lo if files else stats["duration"],
            "fps": stats["fps"],
            "width": stats["width"],
            "height": stats["height"],
            "codec": "h264" if files else stats["codec"],
        }


def _executor(config: SplitConfig):
    if config.executor == "ray":
        return get_executor(
            "ray",
            address=config.ray_address,
            num_cpus=config.ray_num_cpus,
            num_gpus=config.ray_num_gpus,
            concurrency=config.ray_concurrency,
        )
    return get_executor(config.executor, num_proc=config.num_proc)


def split_videos(config: SplitConfig | None = None, **overrides: Any) -> Path:
    """Split long videos into single-scene clips and write them as a source dataset.

    Args:
        config: the settings (`SplitConfig`); keyword arguments override its fields.

    Returns:
        The output directory (`data/<split>-*.parquet`, README.md, `build_report.json`).

    Raises:
        ConfigError: for impossible settings.
        InputError: when no video is found, or when no clip at all comes out (the report says why).
    """
    from vstar.sources.base import check_writable, write_source_dataset

    config = config or SplitConfig()
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ConfigError(f"split_videos got an unknown setting {key!r}.")
        setattr(config, key, value)
    config.check()
    output = check_writable(config.output)
    by_split, labels = _parents(config)
    settings = {f.name: getattr(config, f.name) for f in fields(SplitConfig)}
    report: dict[str, Any] = {
        "rows_read": 0,
        "skipped": [],
        "dropped": [],
        "videos": [],
        "settings": settings,
    }
    executor = _executor(config)

    def rows(split: str) -> Iterator[dict[str, Any]]:
        parents = by_split[split]
        options = {"config": settings, "driver_pid": os.getpid()}
        results = executor.map_batches(Splitter, parents, batch_size=1, fn_constructor_kwargs=options)
        for result in tqdm(results, total=len(parents), desc=f"split {split}", unit="video", leave=False):
            yield from _clip_rows(result, config, report)

    source_name = config.dataset or config.videos
    card = {
        "pretty_name": f"{Path(str(source_name)).name} clips",
        "description": config.description
        or f"Single-scene clips of the videos in {source_name}, cut by `vstar split` ({config.detector} detector, "
        f"{config.embedder} stitching embedder, Panda-70M thresholds).",
        "license": config.license,
        "build_command": _command(config),
        "source": str(source_name),
    }
    write_source_dataset({split: rows(split) for split in by_split}, _features(labels), output, card, report)
    return output


def _command(config: SplitConfig) -> str:
    parts = ["vstar", "split"]
    for f in fields(SplitConfig):
        value = getattr(config, f.name)
        if value != f.default and value is not None:
            parts += [f"--{f.name}", str(value)]
    return " ".join(parts)


def main(argv: list[str] | None = None) -> None:
    """`vstar split`: see the module docstring."""
    from vstar.configs import parse_configs

    (config,) = parse_configs((SplitConfig,), argv)
    output = split_videos(config)
    logger.info("Clips in %s (build_report.json lists every dropped span)", output)
