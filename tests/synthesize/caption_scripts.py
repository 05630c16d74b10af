"""The caption tests' scripted video and source datasets (a plain module: test files import it by name)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import ClassLabel, Features, Value, Video

# A 72 s clip whose square changes at known times: (from second, colour, x step per frame).
EVENTS = [(0, (230, 30, 30), 1), (25, (30, 60, 230), -1), (50, (30, 200, 40), 1)]
LONG_SECONDS = 72
FILE_FPS = 2
SHAPE_CLASSES = ["red square moving", "blue square moving", "green square moving"]


def scripted_frames(seconds: int = LONG_SECONDS, fps: int = FILE_FPS) -> np.ndarray:
    """A 32x32 square over a dark background, its colour and direction switched at the `EVENTS` times."""
    frames = np.full((seconds * fps, 64, 64, 3), 12, dtype=np.uint8)
    x = 8
    for t in range(len(frames)):
        second = t / fps
        _, colour, step = [e for e in EVENTS if e[0] <= second][-1]
        x = min(max(x + step, 0), 32)
        frames[t, 16:48, x : x + 32] = colour
    return frames


def colour_at(frame: np.ndarray) -> int:
    """Which channel dominates the square's centre (0 red, 1 green, 2 blue)."""
    return int(np.argmax(frame[28:36, 28:36].reshape(-1, 3).mean(axis=0)))


def write_source(root: Path, rows: list[dict], name: str = "source") -> Path:
    """A source dataset (Hub layout, `load_dataset(dir)` works) of the given rows, labels as a `ClassLabel`."""
    from vstar.io import split_file, write_parquet

    features = Features(
        {
            "id": Value("string"),
            "video": Video(decode=False),
            "start": Value("float64"),
            "end": Value("float64"),
            "source": Value("string"),
            "label": ClassLabel(names=SHAPE_CLASSES),
        }
    )
    out = root / name
    full = [{"start": None, "end": None, "source": "scripted", "label": SHAPE_CLASSES[0], **r} for r in rows]
    write_parquet(out / split_file("train"), full, features)
    return out
