"""Any folder of labeled clips as a source dataset: one sub-folder per class, optionally inside split folders.

```
clips/                        clips/
  abseiling/a.mp4      or       train/abseiling/a.mp4
  yoga/b.mp4                    test/yoga/c.mp4
```

`label` is a `ClassLabel` over the sorted class folder names; `id` is the clip's path inside the folder without its
extension. Every file under a class folder is either built or listed in `build_report.json` with the reason: clips
that are empty, truncated or undecodable, and files whose extension is not a video extension (`--extensions` adds
one); so are videos lying outside a class folder. Hidden files and folders are ignored.

```bash
vstar build folder --videos clips/ --output data/clips --num_proc 2
```
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vstar.schema import source_features
from vstar.sources.base import (
    SOURCES,
    VIDEO_EXTENSIONS,
    Clip,
    canonical_split,
    check_writable,
    command_line,
    is_split_name,
    probed_rows,
    skip,
    split_order,
    write_source_dataset,
)
from vstar.sources.probe import probe_features

logger = logging.getLogger(__name__)


@dataclass
class FolderConfig:
    """Settings of the class-folder source builder."""

    videos: str | None = field(
        default=None, metadata={"help": "Folder with one sub-folder per class (optionally inside split folders)."}
    )
    output: str = field(default="data/folder", metadata={"help": "Output directory (Hub layout)."})
    split: str = field(default="train", metadata={"help": "Split of the clips when there are no split folders."})
    name: str | None = field(default=None, metadata={"help": "The `source` column (default: the folder's name)."})
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
    extensions: list[str] = field(
        default_factory=lambda: list(VIDEO_EXTENSIONS), metadata={"help": "Video file extensions."}
    )
    license: str = field(default="other", metadata={"help": "Licence field of the card."})


def _subdirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _files_in(directory: Path) -> Iterator[Path]:
    """Files under `directory`, recursively, in sorted order (one directory listed at a time); hidden files and
    folders (`.DS_Store`, `.cache/`) are not part of a collection."""
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def _not_a_video(path: Path, extensions: tuple[str, ...]) -> str:
    suffix = path.suffix.lower()
    named = f"the extension {suffix}" if suffix else "no extension"
    return (
        f"unknown extension: {path.name} has {named}, not one of the video extensions ({' '.join(extensions)}); "
        f"if it is a video, add its extension with --extensions"
    )


def folder_layout(root: str | Path) -> dict[str, Path]:
    """`{split: folder holding the class folders}`: the split folders when every top folder is a split name
    (`train`, `validation`/`val`, `test`, ...), else `{"": root}`.

    Args:
        root: the videos folder.
    """
    root = Path(root)
    top = _subdirs(root)
    if top and all(is_split_name(name) for name in top):
        return {canonical_split(name): root / name for name in top}
    return {"": root}


def _clips(root: Path, split: str, split_dir: Path, config: FolderConfig, source: str, report: dict) -> Iterator[Clip]:
    extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in config.extensions)
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if entry.is_file() and entry.name.lower().endswith(extensions):
            report["rows_read"] += 1
            skip(report, entry.name, entry.path, "no class: the video is not inside a class folder")
    for label in _subdirs(split_dir):
        for path in _files_in(split_dir / label):
            relative = path.relative_to(root)
            if not path.name.lower().endswith(extensions):
                # Every file under a class folder is built or reported: a clip with an unexpected extension must
                # not vanish silently.
                report["rows_read"] += 1
                skip(report, relative.as_posix(), str(path), _not_a_video(path, extensions))
                continue
            row = {
                "id": relative.with_suffix("").as_posix(),
                "start": None,
                "end": None,
                "source": source,
                "split": split,
                "label": label,
            }
            yield Clip(row, str(path), relative.as_posix())


@SOURCES.register("folder")
def build_folder(config: FolderConfig | None = None, **overrides) -> Path:
    """Write the source dataset of a class-folder collection to `config.output`; returns the directory.

    Args:
        config: the settings (or pass them as keyword arguments).
    """
    from datasets import ClassLabel

    config = config or FolderConfig(**overrides)
    if not config.videos:
        raise ValueError("Give the folder of the clips: --videos DIR.")
    root = Path(config.videos)
    if not root.is_dir():
        raise FileNotFoundError(f"Videos folder {root} does not exist.")
    output = check_writable(config.output)
    layout = folder_layout(root)
    if "" in layout:
        layout = {canonical_split(config.split): layout[""]}
    classes = sorted({label for split_dir in layout.values() for label in _subdirs(split_dir)})
    if not classes:
        raise ValueError(f"{root} has no class folders: put each class's clips in a sub-folder named after it.")
    source = config.name or root.resolve().name
    features = source_features({"label": ClassLabel(names=classes), **probe_features()})
    report: dict[str, Any] = {"rows_read": 0, "skipped": []}
    rows = {
        split: probed_rows(
            _clips(root, split, layout[split], config, source, report),
            report,
            num_proc=config.num_proc,
            probe=config.probe,
            executor=config.executor,
            ray_address=config.ray_address,
            desc=f"{source} {split}",
        )
        for split in split_order(layout)
    }
    return write_source_dataset(
        rows,
        features,
        output,
        card={
            "pretty_name": f"{source} (vstar source dataset)",
            "description": config.description
            or (
                f"Labeled video clips from `{root}`, {len(classes)} classes: `label` is the name of the folder "
                "holding the clip; `duration`, `fps`, `width`, `height` and `codec` come from the clip's container."
            ),
            "source": f"Clips: `{root}`, one sub-folder per class"
            + (" inside split folders." if len(layout) > 1 else "."),
            "license": config.license,
            "build_command": command_line("folder", config),
        },
        report=report,
    )


build_folder.config_class = FolderConfig
