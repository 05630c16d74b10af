"""`vstar export --format llava`: an instruction dataset (or a run's) as LLaVA-Video conversation JSON.

Each row becomes one record of the layout LLaVA-Video-178K released (and the official Video-STaR JSON uses):

```json
{"id": "...", "video": "relative/path.mp4", "conversations": [{"from": "human", "value": "<image>\\nQuestion"},
 {"from": "gpt", "value": "Answer"}], "data_source": "..."}
```

`video` is relative to the video root (`--video_root`, default `videos/` beside the JSON file); videos embedded in
the dataset are written there as files (one file per distinct video), and a video file outside the root is linked
(or copied, `--outside_root copy`) into it, so a LLaVA trainer given the root finds every file. `<image>\\n` starts
the first human turn only, as LLaVA's loaders expect, even for video; every turn's text is kept as it is (a later
`<image>` in the text included). A row's clip window, when it has one, is kept as `start` / `end` keys (LLaVA's own
loaders read the whole file). `vstar build llava` reads the JSON back: the round trip keeps every turn exactly.

```bash
vstar export --format llava data/qa qa_llava.json --video_root data/llava_videos
vstar export --format llava runs/demo cycle3.json --cycle 3
```
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vstar.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

FORMATS = ("llava",)
ROLES = {"user": "human", "assistant": "gpt", "system": "system"}
MEDIA_TOKEN = "<image>"


@dataclass
class ExportConfig:
    """`vstar export`: write an instruction dataset in another project's format."""

    format: str = field(default="llava", metadata={"help": "Output format: llava (LLaVA-Video conversation JSON)."})
    input: str = field(
        default="",
        metadata={"help": "Instruction dataset directory, or a `vstar cycle` run directory (also the 1st argument)."},
    )
    output: str = field(default="", metadata={"help": "The JSON file written (also the 2nd argument)."})
    video_root: str | None = field(
        default=None,
        metadata={"help": "Folder the records' `video` paths are relative to (default: `videos/` beside the JSON)."},
    )
    outside_root: str = field(
        default="link",
        metadata={"help": "A video file outside the video root is `link`ed (symbolic link) or `copy`d into it."},
    )
    split: str = field(default="train", metadata={"help": "Split of the dataset."})
    dataset_config: str = field(default="default", metadata={"help": "Config of the dataset (`rejected`, ...)."})
    cycle: int | None = field(
        default=None, metadata={"help": "For a run directory: the cycle whose dataset is written (default: the last)."}
    )
    data_source: str | None = field(
        default=None, metadata={"help": "`data_source` of every record (default: the row's, else its `source`)."}
    )
    media_token: str = field(default=MEDIA_TOKEN, metadata={"help": "Token starting the first human turn."})


def dataset_dir(path: str | Path, cycle: int | None = None) -> Path:
    """The instruction dataset of a path: the directory itself, or a run's cycle dataset (`cycle-K/dataset`).

    Args:
        path: a dataset directory or a `vstar cycle` run directory.
        cycle: the run's cycle (default: the last one with a dataset).
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path} does not exist: give an instruction dataset directory or a `vstar cycle` run.")
    cycles = sorted(
        (int(p.parent.name.removeprefix("cycle-")), p)
        for p in path.glob("cycle-*/dataset")
        if p.parent.name.removeprefix("cycle-").isdigit()
    )
    if not cycles:
        if cycle is not None:
            raise InputError(f"{path} is not a run directory (no cycle-*/dataset): leave out --cycle.")
        return path
    if cycle is None:
        return cycles[-1][1]
    found = dict(cycles)
    if cycle not in found:
        raise InputError(f"{path} has no dataset of cycle {cycle} (cycles with one: {', '.join(map(str, found))}).")
    return found[cycle]


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content or [] if part.get("type") == "text")


def conversations(messages: Iterable[Mapping[str, Any]], media_token: str = MEDIA_TOKEN) -> list[dict[str, str]]:
    """TRL messages as LLaVA turns: `from` human / gpt / system, the media token starting the first human turn.

    Args:
        messages: the row's `messages`.
        media_token: the token put before the first human turn's text (followed by a newline).
    """
    turns = []
    first_human = True
    for message in messages:
        role = message.get("role")
        if role not in ROLES:
            raise InputError(f"a message has the role {role!r}; LLaVA turns know only {', '.join(ROLES)}.")
        value = _text(message)
        if ROLES[role] == "human" and first_human:
            value, first_human = f"{media_token}\n{value}", False
        turns.append({"from": ROLES[role], "value": value})
    return turns


class _VideoFiles:
    """Puts each row's video under the root and names it relative to the root (each distinct video once)."""

    def __init__(self, root: Path, outside_root: str, base: Path):
        self.root = Path(os.path.abspath(root))
        self.outside_root = outside_root
        self.base = base
        self.written: dict[str, str] = {}
        self.counts: Counter[str] = Counter()

    def _inside(self, path: Path) -> str | None:
        # A link already under the root (a dataset built from an export) stays where it is.
        for own, root in ((Path(os.path.abspath(path)), self.root), (path.resolve(), self.root.resolve())):
            try:
                return own.relative_to(root).as_posix()
            except ValueError:
                continue
        return None

    def relative(self, video: Any) -> str:
        if isinstance(video, str):
            video = {"path": video, "bytes": None}
        data, path = video.get("bytes"), video.get("path")
        if data:
            digest = hashlib.sha256(data).hexdigest()
            if digest not in self.written:
                suffix = Path(path).suffix if path and Path(path).suffix else ".mp4"
                target = self.root / "embedded" / f"{digest[:16]}{suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    target.write_bytes(data)
                self.written[digest] = target.relative_to(self.root).as_posix()
                self.counts["embedded_written"] += 1
            return self.written[digest]
        if not path:
            raise FileNotFoundError("the row has neither a video path nor embedded bytes")
        file = Path(path)
        if not file.is_absolute() and not file.exists() and (self.base / file).exists():
            file = self.base / file
        if not file.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        inside = self._inside(file)
        if inside is not None:
            self.counts["inside_root"] += 1
            return inside
        key = str(file.resolve())
        if key not in self.written:
            name = f"{hashlib.sha1(key.encode()).hexdigest()[:12]}-{file.name}"
            target = self.root / "linked" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists() and not target.is_symlink():
                if self.outside_root == "copy":
                    shutil.copyfile(file, target)
                else:
                    os.symlink(file.resolve(), target)
            self.written[key] = target.relative_to(self.root).as_posix()
            self.counts[f"{self.outside_root}ed_into_root"] += 1
        return self.written[key]


def llava_record(
    row: Mapping[str, Any], video: str, media_token: str = MEDIA_TOKEN, data_source: str | None = None
) -> dict[str, Any]:
    """One row as a LLaVA-Video record (the video already named relative to the root).

    Args:
        row: an instruction row (`id`, `messages`, optional `data_source` / `source`, `start`, `end`).
        video: the video path relative to the root.
        media_token: the token starting the first human turn.
        data_source: the record's `data_source` (default: the row's, else its `source`).
    """
    record = {
        "id": row["id"],
        "video": video,
        "conversations": conversations(row["messages"], media_token),
        "data_source": data_source or row.get("data_source") or row.get("source") or "vstar",
    }
    for key in ("start", "end"):
        if row.get(key) is not None:
            record[key] = row[key]
    return record


def export_llava(
    source: str | Path,
    output: str | Path,
    *,
    video_root: str | Path | None = None,
    split: str = "train",
    dataset_config: str = "default",
    cycle: int | None = None,
    outside_root: str = "link",
    data_source: str | None = None,
    media_token: str = MEDIA_TOKEN,
) -> dict[str, Any]:
    """Write an instruction dataset as LLaVA-Video conversation JSON; returns what was written.

    Args:
        source: the dataset directory, or a `vstar cycle` run directory.
        output: the JSON file.
        video_root: the folder the `video` paths are relative to (default: `videos/` beside `output`).
        split, dataset_config: which rows.
        cycle: a run's cycle (default: the last).
        outside_root: `link` or `copy` a video file that lies outside the root into it.
        data_source: `data_source` of every record (default: the row's, else its `source`).
        media_token: the token starting the first human turn.

    Returns:
        `{"output", "video_root", "records", "skipped": [{"id", "reason"}], "videos": {...counts}}`.
    """
    from tqdm.auto import tqdm

    from vstar.io import load_split

    if outside_root not in ("link", "copy"):
        raise ConfigError(f"--outside_root must be `link` or `copy`, not {outside_root!r}.")
    directory = dataset_dir(source, cycle)
    output = Path(output)
    root = Path(video_root) if video_root else output.parent / "videos"
    root.mkdir(parents=True, exist_ok=True)
    try:
        dataset = load_split(directory, split, dataset_config)
    except FileNotFoundError as err:
        raise InputError(str(err)) from None
    if "messages" not in dataset.column_names or "video" not in dataset.column_names:
        raise InputError(
            f"{directory} has no `messages` and `video` columns (columns: {', '.join(dataset.column_names)}): "
            "export an instruction dataset (`vstar qa`, `vstar assemble`, a run's cycle-K/dataset)."
        )
    files = _VideoFiles(root, outside_root, directory)
    records, skipped = [], []
    for row in tqdm(dataset, total=len(dataset), desc="LLaVA records", unit="row"):
        if not row["messages"] or not any(m.get("role") == "user" for m in row["messages"]):
            # A rejected row of a malformed output has no conversation to write.
            skipped.append({"id": row["id"], "reason": "no conversation: the row has no user turn"})
            continue
        try:
            record = llava_record(row, "", media_token, data_source)
            record["video"] = files.relative(row["video"])
        except FileNotFoundError as err:
            skipped.append({"id": row["id"], "reason": f"missing video: {err}"})
            continue
        except InputError as err:
            skipped.append({"id": row["id"], "reason": f"messages: {err}"})
            continue
        records.append(record)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    tmp.replace(output)
    for entry in skipped:
        logger.warning("Row %s left out: %s", entry["id"], entry["reason"])
    windows = sum(1 for r in records if "start" in r or "end" in r)
    if windows:
        logger.warning(
            "%d records are clip windows (kept as start/end keys); LLaVA's loaders read whole files.", windows
        )
    summary = {
        "output": str(output),
        "video_root": str(root),
        "dataset": str(directory),
        "records": len(records),
        "skipped": skipped,
        "videos": dict(files.counts),
    }
    logger.info("Wrote %d LLaVA records to %s (videos under %s)", len(records), output, root)
    return summary


def _positionals(argv: list[str]) -> tuple[list[str], list[str]]:
    """(flags with their values, positional arguments): every flag takes one value."""
    flags, positionals = [], []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--") and "=" not in token and token not in ("--help", "-h"):
            flags += argv[i : i + 2]
            i += 2
        elif token.startswith("-"):
            flags.append(token)
            i += 1
        else:
            positionals.append(token)
            i += 1
    return flags, positionals


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """`vstar export --format llava RUN_OR_DATASET_DIR OUT.json [--video_root DIR]`."""
    import sys

    from vstar.configs import parse_configs

    flags, positionals = _positionals(list(sys.argv[1:] if argv is None else argv))
    if len(positionals) > 2:
        raise ConfigError(
            f"vstar export takes two arguments, RUN_OR_DATASET_DIR and OUT.json; got {len(positionals)}: "
            f"{' '.join(positionals)}"
        )
    (config,) = parse_configs((ExportConfig,), flags)
    if positionals:
        config.input = positionals[0]
    if len(positionals) > 1:
        config.output = positionals[1]
    if config.format not in FORMATS:
        raise ConfigError(f"--format {config.format!r} is not known; formats: {', '.join(FORMATS)}.")
    if not config.input or not config.output:
        raise ConfigError(
            "vstar export needs the dataset (or run) and the output: vstar export --format llava DIR OUT.json"
        )
    summary = export_llava(
        config.input,
        config.output,
        video_root=config.video_root,
        split=config.split,
        dataset_config=config.dataset_config,
        cycle=config.cycle,
        outside_root=config.outside_root,
        data_source=config.data_source,
        media_token=config.media_token,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "skipped"} | {"skipped": len(summary["skipped"])}))
    return summary


__all__ = ["ExportConfig", "conversations", "export_llava", "llava_record", "main"]
