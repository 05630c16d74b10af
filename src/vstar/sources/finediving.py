"""FineDiving as a source dataset: the official annotation pickles plus the released JPEG frame folders.

The pickles are read by a restricted unpickler that accepts only the numpy arrays, dtypes and scalars they contain
(and maps `numpy.core` to `numpy._core` under NumPy 2); anything else is refused. Each clip's frame folder
`<frames>/<video_name>/<clip_idx>/<frame:05d>.jpg` is encoded to an H.264 mp4 with PyAV (kept under
`<output>/videos/`, or embedded in the Parquet files with `--embed_videos`). Label columns: `action_type` (the dive
code, `407c`), `dive_name` (the code in words), `difficulty`, `dive_score`, `judge_scores`, `sub_actions` (names
in temporal order) and the frame range. Clips without frames, without a coarse annotation, with a missing or NaN
score, difficulty or judge score, or listed in both splits are left out and listed in `build_report.json`; a damaged
or cut-short pickle is one error naming the file.

```bash
vstar build finediving --annotations FineDiving/Annotations --frames FineDiving/FINADiving_MTL_256s \
    --output data/finediving --num_proc 2
```
"""

from __future__ import annotations

import importlib
import io
import logging
import math
import os
import pickle
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from vstar.curate.executors import parallel_map
from vstar.errors import ConfigError, InputError
from vstar.schema import source_features
from vstar.sources.base import (
    SOURCES,
    SplitIds,
    check_settings,
    check_writable,
    command_line,
    skip,
    write_source_dataset,
)
from vstar.sources.probe import MISSING, UNDECODABLE, VideoProbe, probe_features, probe_video

logger = logging.getLogger(__name__)

COARSE_FILE = "FineDiving_coarse_annotation.pkl"
FINE_FILE = "FineDiving_fine-grained_annotation.pkl"
SUB_ACTIONS_FILE = "Sub_action_Types_Table.pkl"
SPLIT_FILES = {"train": "train_split.pkl", "test": "test_split.pkl"}
COARSE_FIELDS = ("action_type", "start_frame", "end_frame", "dive_score", "difficulty", "judge_scores")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
CITATION = """@inproceedings{xu2022finediving,
  title     = {FineDiving: A Fine-grained Dataset for Procedure-aware Action Quality Assessment},
  author    = {Xu, Jinglin and Rao, Yongming and Yu, Xumin and Chen, Guangyi and Zhou, Jie and Lu, Jiwen},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2022}
}"""

# What the annotation pickles reference, and nothing else: arrays, dtypes and scalars.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    # What NumPy writes for arrays under pickle protocol 5 (a copy of the annotations re-saved by NumPy 2).
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    # Pickle protocol 2 stores the bytes inside numpy scalars as `_codecs.encode(text, "latin1")`.
    ("_codecs", "encode"),
}


class UnsafePickleError(InputError, pickle.UnpicklingError):
    """An annotation pickle references something other than the numpy objects FineDiving needs."""


class AnnotationUnpickler(pickle.Unpickler):
    """Loads FineDiving annotation pickles, refusing every global except numpy arrays, dtypes and scalars.

    Args:
        file: the open pickle file.
        name: the file name used in errors.
    """

    def __init__(self, file, name: str = "<pickle>"):
        super().__init__(file)
        self.name = name

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            allowed = ", ".join(sorted(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS))
            raise UnsafePickleError(
                f"{self.name}: refusing to load `{module}.{name}`: FineDiving annotations only need numpy arrays, "
                f"dtypes and scalars (allowed: {allowed}). Not a FineDiving annotation file, or it was altered."
            )
        if module.startswith("numpy.core") or module.startswith("numpy._core"):
            module = _numpy_core() + module.split("core", 1)[1]
        return getattr(importlib.import_module(module), name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.name}: refusing a persistent reference ({pid!r}).")


def _numpy_core() -> str:
    return "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"


def load_annotation_pickle(path: str | Path) -> Any:
    """Load one FineDiving annotation pickle with `AnnotationUnpickler`.

    Args:
        path: the `.pkl` file.

    Raises:
        UnsafePickleError: when the file references anything but numpy arrays, dtypes and scalars.
        InputError: when the file is cut short, damaged or not a pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FineDiving annotation file {path} does not exist.")
    with open(path, "rb") as handle:
        try:
            return AnnotationUnpickler(handle, str(path)).load()
        except UnsafePickleError:
            raise
        except EOFError:
            raise InputError(
                f"{path}: the pickle ends early ({path.stat().st_size} bytes): the file is cut short; download the "
                "FineDiving annotations again."
            ) from None
        except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
            raise InputError(
                f"{path}: not a readable FineDiving annotation pickle ({type(err).__name__}: "
                f"{' '.join(str(err).split())}): the file is damaged or is another file; download the FineDiving "
                "annotations again."
            ) from None


@dataclass
class FineDivingAnnotations:
    """The five annotation files, loaded.

    Args:
        coarse: `{(video_name, clip_idx): {action_type, start_frame, end_frame, dive_score, difficulty,
            judge_scores}}`.
        fine: `{(video_name, clip_idx): {frames_labels, steps_transit_frames, sub-action_types, ...}}`.
        sub_action_types: `{id: name}` (42 sub-actions).
        splits: `{"train": [keys], "test": [keys]}`.
    """

    coarse: dict
    fine: dict
    sub_action_types: dict[int, str]
    splits: dict[str, list]


def _is_key(key: Any) -> bool:
    try:
        str(key[0]), int(key[1])
    except (TypeError, ValueError, IndexError):
        return False
    return True


def _check_keys(mapping: Any, name: str) -> None:
    if not isinstance(mapping, dict):
        raise ValueError(f"{name}: expected a dict keyed by (video_name, clip_idx), found {type(mapping).__name__}.")
    for key in list(mapping)[:5]:
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str)):
            raise ValueError(f"{name}: expected keys (video_name, clip_idx), found {key!r}.")


def load_finediving_annotations(directory: str | Path) -> FineDivingAnnotations:
    """Load the coarse and fine-grained annotations, the sub-action table and the split lists.

    Args:
        directory: the folder holding the FineDiving `.pkl` files.
    """
    directory = Path(directory)
    coarse = load_annotation_pickle(directory / COARSE_FILE)
    fine = load_annotation_pickle(directory / FINE_FILE)
    _check_keys(coarse, str(directory / COARSE_FILE))
    _check_keys(fine, str(directory / FINE_FILE))
    table = load_annotation_pickle(directory / SUB_ACTIONS_FILE)
    if not isinstance(table, dict):
        raise InputError(
            f"{directory / SUB_ACTIONS_FILE}: expected a dict of sub-action id -> name, found {type(table).__name__}."
        )
    splits = {}
    for split, name in SPLIT_FILES.items():
        keys = load_annotation_pickle(directory / name)
        if not isinstance(keys, (list, tuple)):
            raise InputError(
                f"{directory / name}: expected a list of (video_name, clip_idx), found {type(keys).__name__}."
            )
        try:
            splits[split] = [(str(k[0]), int(k[1])) for k in keys]
        except (TypeError, ValueError, IndexError):
            bad = next(k for k in keys if not _is_key(k))
            raise InputError(f"{directory / name}: expected (video_name, clip_idx) entries, found {bad!r}.") from None
    return FineDivingAnnotations(coarse, fine, {int(k): str(v) for k, v in table.items()}, splits)


GROUPS = {1: "forward", 2: "back", 3: "reverse", 4: "inward", 5: "twisting", 6: "armstand"}
POSITIONS = {"a": "straight", "b": "pike", "c": "tuck", "d": "free"}


def _halves(count: int, one: str, many: str, code: str) -> str:
    if count <= 0:
        raise ValueError(f"{code!r}: no {many} is not a dive.")
    whole, half = divmod(count, 2)
    if not whole:
        return f"1/2 {one}"
    number = f"{whole} 1/2" if half else str(whole)
    return f"{number} {one if number == '1' else many}"


def dive_name(code: str) -> str:
    """The dive code in words: `407c` -> `inward 3 1/2 somersaults tuck`, `5253b` -> `back 2 1/2 somersaults
    1 1/2 twists pike`, `6243d` -> `armstand back 2 somersaults 1 1/2 twists free`.

    The first digit is the group (forward, back, reverse, inward, twisting, armstand); groups 1-4 then give a flying
    flag and the number of half somersaults; twisting dives give their direction group, half somersaults and half
    twists; armstand dives give their direction, half somersaults and optionally half twists. The letter is the
    position (a straight, b pike, c tuck, d free).

    Args:
        code: a FINA dive code such as `107b`.

    Raises:
        ValueError: for a code that does not follow these rules.
    """
    text = str(code).strip().lower()
    match = re.fullmatch(r"([1-6])(\d+)([a-d])", text)
    if not match:
        raise ValueError(f"{code!r} is not a dive code (group digit 1-6, digits, position letter a-d).")
    group, digits, position = int(match[1]), match[2], POSITIONS[match[3]]
    if group in (1, 2, 3, 4):
        # 107 = 3 1/2 somersaults; 1011 = 5 1/2 (two digits of half somersaults); a leading 1 means flying.
        if len(digits) not in (2, 3) or digits[0] not in "01":
            raise ValueError(f"{code!r}: a {GROUPS[group]} dive code is the group, 0 or 1 (flying), half somersaults.")
        halves = int(digits[1:])
        words = [GROUPS[group]] + (["flying"] if digits[0] == "1" else [])
        words.append("dive" if halves == 1 else _halves(halves, "somersault", "somersaults", code))
    elif group == 5:
        if len(digits) != 3 or digits[0] not in "1234":
            raise ValueError(
                f"{code!r}: a twisting dive code is 5, the direction group 1-4, half somersaults, half twists."
            )
        halves, twists = int(digits[1]), int(digits[2])
        words = [GROUPS[int(digits[0])], "dive" if halves == 1 else _halves(halves, "somersault", "somersaults", code)]
        words.append(_halves(twists, "twist", "twists", code))
    else:
        if len(digits) not in (2, 3) or digits[0] not in "0123":
            raise ValueError(
                f"{code!r}: an armstand dive code is 6, the direction 1-3, half somersaults[, half twists]."
            )
        words = ["armstand"] + ([GROUPS[int(digits[0])]] if digits[0] != "0" else [])
        halves = int(digits[1])
        words.append("dive" if halves == 0 else _halves(halves, "somersault", "somersaults", code))
        if len(digits) == 3:
            words.append(_halves(int(digits[2]), "twist", "twists", code))
    return " ".join(words + [position])


def sub_action_sequence(frames_labels: Any, names: Mapping[Any, str], table: Mapping[int, str]) -> tuple[list, list]:
    """Sub-action ids and names in the temporal order of `frames_labels`, consecutive repeats collapsed.

    Args:
        frames_labels: one sub-action id per frame.
        names: the clip's own `{id: name}` (`sub-action_types`).
        table: the global `{id: name}` table, used for ids the clip does not name.
    """
    clip_names = {int(k): str(v) for k, v in names.items()}
    ids: list[int] = []
    for value in np.asarray(frames_labels).reshape(-1).tolist():
        if not ids or ids[-1] != int(value):
            ids.append(int(value))
    return ids, [clip_names.get(i) or table.get(i, f"sub-action {i}") for i in ids]


@dataclass
class FineDivingConfig:
    """Settings of the FineDiving source builder."""

    annotations: str | None = field(
        default=None, metadata={"help": "Folder of the FineDiving annotation pickles (coarse, fine-grained, splits)."}
    )
    frames: str | None = field(
        default=None, metadata={"help": "Folder of the frame folders `<video_name>/<clip_idx>/<frame:05d>.jpg`."}
    )
    output: str = field(default="data/finediving", metadata={"help": "Output directory (Hub layout)."})
    fps: float = field(default=25.0, metadata={"help": "Frame rate of the encoded clips."})
    crf: int = field(default=23, metadata={"help": "H.264 quality (lower is better and larger)."})
    embed_videos: bool = field(
        default=False, metadata={"help": "Embed the mp4 bytes in the Parquet files instead of `<output>/videos/`."}
    )
    overwrite_videos: bool = field(
        default=False, metadata={"help": "Re-encode clips whose mp4 already exists (default: reuse it)."}
    )
    num_proc: int = field(default=1, metadata={"help": "Processes encoding the clips."})
    max_clips: int | None = field(default=None, metadata={"help": "Use at most this many clips per split."})
    license: str = field(default="other", metadata={"help": "Licence field of the card (non-commercial research)."})


@dataclass(frozen=True)
class _EncodeTask:
    frame_dir: str
    out_path: str | None  # None: return the bytes
    fps: float
    crf: int
    overwrite: bool


@dataclass
class _Encoded:
    probe: VideoProbe
    data: bytes | None = None
    num_frames: int = 0


def _frame_files(frame_dir: str) -> list[str]:
    names = [entry.name for entry in os.scandir(frame_dir) if entry.name.lower().endswith(FRAME_SUFFIXES)]
    numeric = all(Path(n).stem.isdigit() for n in names)
    names.sort(key=(lambda n: int(Path(n).stem)) if numeric else None)
    return [os.path.join(frame_dir, n) for n in names]


def encode_frame_folder(files: list[str], target: Any, fps: float, crf: int = 23) -> None:
    """Encode JPEG/PNG frames, read one at a time, as an H.264 mp4 (sizes rounded down to even; every frame is
    resized to the first frame's size).

    Args:
        files: frame files in temporal order.
        target: an output path or a writable binary file object.
        fps: frame rate.
        crf: H.264 quality.
    """
    from PIL import Image

    with av.open(target, mode="w", format="mp4") as container:
        stream = None
        for path in files:
            with Image.open(path) as image:
                image = image.convert("RGB")
                if stream is None:
                    width, height = image.width // 2 * 2, image.height // 2 * 2
                    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                    stream.options = {"crf": str(crf)}
                    stream.codec_context.thread_count = 1
                if image.size != (width, height):
                    odd = 0 <= image.width - width <= 1 and 0 <= image.height - height <= 1
                    image = image.crop((0, 0, width, height)) if odd else image.resize((width, height))
                frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
            container.mux(stream.encode(frame))
        if stream is not None:
            container.mux(stream.encode())


def _encode_clip(task: _EncodeTask) -> _Encoded:
    if not os.path.isdir(task.frame_dir):
        return _Encoded(VideoProbe(error=f"{MISSING}: no frame folder {task.frame_dir}"))
    files = _frame_files(task.frame_dir)
    if not files:
        return _Encoded(VideoProbe(error=f"{MISSING}: the frame folder {task.frame_dir} holds no frames"))
    if task.out_path and not task.overwrite and os.path.isfile(task.out_path):
        probe = probe_video(task.out_path)
        if probe.ok:
            return _Encoded(probe, None, len(files))
    try:
        if task.out_path is None:
            buffer = io.BytesIO()
            encode_frame_folder(files, buffer, task.fps, task.crf)
            data = buffer.getvalue()
            return _Encoded(probe_video(data), data, len(files))
        partial = task.out_path + ".partial"
        os.makedirs(os.path.dirname(task.out_path), exist_ok=True)
        encode_frame_folder(files, partial, task.fps, task.crf)
        os.replace(partial, task.out_path)
        return _Encoded(probe_video(task.out_path), None, len(files))
    except (OSError, ValueError, av.error.FFmpegError) as err:  # PIL raises OSError subclasses for bad JPEGs
        return _Encoded(VideoProbe(error=f"{UNDECODABLE}: a frame in {task.frame_dir} cannot be read ({err})"))


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _annotation_problem(coarse: Any) -> str | None:
    """Why a clip's coarse annotation cannot label a row (a missing field, a NaN score), or `None`."""
    if coarse is None:
        return f"{MISSING}: no coarse annotation for this clip"
    if not isinstance(coarse, Mapping):
        return f"label: the coarse annotation is a {type(coarse).__name__}, not a dict of fields"
    absent = [key for key in COARSE_FIELDS if key not in coarse]
    if absent:
        return f"label: the coarse annotation has no {', '.join(absent)}"
    if not str(coarse["action_type"]).strip():
        return "label: the dive code (`action_type`) is empty"
    for key in ("dive_score", "difficulty", "start_frame", "end_frame"):
        if not _finite(coarse[key]):
            return f"label: `{key}` is {coarse[key]!r}, not a number"
    judges = coarse["judge_scores"]
    try:
        judges = list(np.asarray(judges, dtype=float).reshape(-1))
    except (TypeError, ValueError):
        return f"label: `judge_scores` is {judges!r}, not a list of numbers"
    if not judges or not all(math.isfinite(x) for x in judges):
        return f"label: `judge_scores` {[float(x) for x in judges]} is empty or holds a NaN"
    return None


def _encode_or_nothing(task: _EncodeTask | None) -> _Encoded:
    return _Encoded(VideoProbe()) if task is None else _encode_clip(task)


def _rows(
    config: FineDivingConfig,
    annotations: FineDivingAnnotations,
    split: str,
    output: Path,
    report: dict,
    ids: SplitIds,
) -> Iterator[dict[str, Any]]:
    keys = annotations.splits[split][: config.max_clips]

    def tasks():
        for video_name, clip_idx in keys:
            clip_id = f"{video_name}_{clip_idx}"
            out_path = None if config.embed_videos else str(output / "videos" / f"{clip_id}.mp4")
            frame_dir = os.path.join(config.frames, video_name, str(clip_idx))
            # A row that will be left out anyway is not encoded.
            error = _annotation_problem(annotations.coarse.get((video_name, clip_idx))) or ids.claim(clip_id, split)
            yield (
                (video_name, clip_idx, clip_id, error),
                _EncodeTask(frame_dir, out_path, config.fps, config.crf, config.overwrite_videos),
            )

    from tqdm.auto import tqdm

    results = parallel_map(
        _encode_or_nothing, tasks(), config.num_proc, batch_size=8, arg=lambda item: None if item[0][3] else item[1]
    )
    for ((video_name, clip_idx, clip_id, error), task), encoded in tqdm(
        results, total=len(keys), desc=f"finediving {split}", unit="clip", leave=False
    ):
        report["rows_read"] += 1
        where = f"{video_name}/{clip_idx}"
        coarse = annotations.coarse.get((video_name, clip_idx))
        fine = annotations.fine.get((video_name, clip_idx)) or {}
        if error is not None:
            skip(report, where, task.frame_dir, error, clip_id)
            continue
        if not encoded.probe.ok:
            skip(report, where, task.frame_dir, encoded.probe.error, clip_id)
            continue
        yield _row(config, annotations, split, clip_id, video_name, clip_idx, coarse, fine, task, encoded)


def _row(config, annotations, split, clip_id, video_name, clip_idx, coarse, fine, task, encoded) -> dict[str, Any]:
    code = str(coarse["action_type"])
    try:
        name = dive_name(code)
    except ValueError as err:
        logger.warning("%s/%s: %s", video_name, clip_idx, err)
        name = None
    ids, names = sub_action_sequence(
        fine.get("frames_labels", []), fine.get("sub-action_types", {}), annotations.sub_action_types
    )
    if config.embed_videos:
        video = {"bytes": encoded.data, "path": f"{clip_id}.mp4"}
    else:
        video = {"path": os.path.abspath(task.out_path), "bytes": None}
    return {
        "id": clip_id,
        "video": video,
        "start": None,  # the encoded clip is the dive itself
        "end": None,
        "source": "finediving",
        "split": split,
        "video_name": video_name,
        "clip_idx": clip_idx,
        "action_type": code,
        "dive_name": name,
        "difficulty": float(coarse["difficulty"]),
        "dive_score": float(coarse["dive_score"]),
        "judge_scores": [float(s) for s in coarse["judge_scores"]],
        "sub_actions": names,
        "sub_action_ids": ids,
        "steps_transit_frames": [int(f) for f in np.asarray(fine.get("steps_transit_frames", [])).reshape(-1)],
        "start_frame": int(coarse["start_frame"]),
        "end_frame": int(coarse["end_frame"]),
        "num_frames": encoded.num_frames,
        **encoded.probe.columns(),
    }


def finediving_features():
    """The features of the FineDiving source dataset."""
    from datasets import List, Value

    return source_features(
        {
            "video_name": Value("string"),
            "clip_idx": Value("int32"),
            "action_type": Value("string"),
            "dive_name": Value("string"),
            "difficulty": Value("float64"),
            "dive_score": Value("float64"),
            "judge_scores": List(Value("float64")),
            "sub_actions": List(Value("string")),
            "sub_action_ids": List(Value("int32")),
            "steps_transit_frames": List(Value("int32")),
            "start_frame": Value("int32"),
            "end_frame": Value("int32"),
            "num_frames": Value("int32"),
            **probe_features(),
        }
    )


@SOURCES.register("finediving")
def build_finediving(config: FineDivingConfig | None = None, **overrides) -> Path:
    """Write the FineDiving source dataset (train / test) to `config.output`; returns the directory.

    Args:
        config: the settings (or pass them as keyword arguments).
    """
    config = config or FineDivingConfig(**overrides)
    if not config.annotations or not config.frames:
        raise ValueError("Give the annotation folder and the frames folder: --annotations DIR --frames DIR.")
    if not Path(config.frames).is_dir():
        raise FileNotFoundError(f"Frames folder {config.frames} does not exist.")
    check_settings(config, at_least={"num_proc": 1, "crf": 0, "max_clips": 1}, above={"fps": 0})
    if config.crf > 51:
        raise ConfigError(f"--crf must be at most 51 (the H.264 range is 0-51), not {config.crf}.")
    output = check_writable(config.output)
    annotations = load_finediving_annotations(config.annotations)
    report: dict[str, Any] = {"rows_read": 0, "skipped": []}
    ids = SplitIds()
    rows = {split: _rows(config, annotations, split, output, report, ids) for split in annotations.splits}
    return write_source_dataset(
        rows,
        finediving_features(),
        output,
        card={
            "pretty_name": "FineDiving (vstar source dataset)",
            "description": (
                "Olympic, World Cup and World Championship diving clips with procedure-aware quality labels, one "
                "row per dive: `action_type` is the FINA dive code and `dive_name` the code in words; "
                "`difficulty`, `dive_score` and the individual `judge_scores` (3, 5 or 7 judges); `sub_actions` "
                "lists the annotated steps (take-off group, somersaults, twists, entry) in temporal order, from the "
                f"per-frame labels. Each clip is the released frame folder encoded as H.264 at {config.fps:g} fps."
            ),
            "source": (
                f"Annotations: the FineDiving pickles in `{config.annotations}` (coarse, fine-grained, sub-action "
                f"table, train/test splits). Frames: `{config.frames}`."
            ),
            "homepage": "https://github.com/xujinglin/FineDiving",
            "citation": CITATION,
            "license": config.license,
            "build_command": command_line("finediving", config),
        },
        report=report,
    )


build_finediving.config_class = FineDivingConfig
