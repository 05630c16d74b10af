"""The embedded default data set: synthetic clips of a coloured square moving across a dark background.

Each clip is a real H.264 mp4 (64 x 64, 8 frames at 8 fps) written with PyAV, deterministic by seed. The class
label names the colour (12 hues, each clip jittered in hue, saturation and brightness) and the motion ("teal square
moving"); `direction` (left/right/up/down) and `speed` (pixels per frame, a numeric, score-like label) are further
columns. The square leaves a faint trail, as motion blur does in real footage.

A tiny VLM sees 2 x 2 merged video tokens per frame pair. Measured on the demo's 0.65M-parameter model: colour is
read from the video within a few hundred steps, while the direction of motion stays at chance even after 1,500
full-finetuning steps (linear probes on the vision features find it, the two-layer language model does not read it
out), so the class is the colour and direction is kept as a column rather than as part of the label.

```bash
vstar build shapes --output data/shapes
```
"""

from __future__ import annotations

import colorsys
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from vstar.errors import ConfigError
from vstar.schema import source_features
from vstar.sources.base import SOURCES, check_settings, write_source_dataset
from vstar.video import encode_video

logger = logging.getLogger(__name__)

# Twelve hues 30 degrees apart. Each clip jitters hue, saturation and brightness, so neighbouring classes come
# close: telling them apart takes more than a handful of examples per class, which is where the loop's extra,
# verified data pays off (a tiny model learns pure, well separated colours from a few examples).
COLORS: dict[str, float] = {
    "red": 0.0,
    "orange": 30.0,
    "yellow": 60.0,
    "lime": 90.0,
    "green": 120.0,
    "teal": 150.0,
    "cyan": 180.0,
    "azure": 210.0,
    "blue": 240.0,
    "violet": 270.0,
    "magenta": 300.0,
    "pink": 330.0,
}
HUE_JITTER = 13.0


def clip_color(rng: np.random.Generator, color: str) -> tuple[int, int, int]:
    """An RGB colour of class `color`: its hue within +-HUE_JITTER degrees, random saturation and brightness."""
    hue = (COLORS[color] + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 360.0
    red, green, blue = colorsys.hsv_to_rgb(hue / 360.0, rng.uniform(0.55, 1.0), rng.uniform(0.6, 0.95))
    return round(red * 255), round(green * 255), round(blue * 255)


DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SHAPE = "square"
SPEEDS = (3, 4, 5)
CLASSES = [f"{color} {SHAPE} moving" for color in COLORS]


@dataclass
class ShapesConfig:
    """Settings of the synthetic shapes data set."""

    output: str = field(default="data/shapes", metadata={"help": "Output directory (Hub layout)."})
    num_train: int = field(default=1000, metadata={"help": "Training clips."})
    num_validation: int = field(default=100, metadata={"help": "Validation clips."})
    num_test: int = field(default=200, metadata={"help": "Test clips (held out from every cycle)."})
    size: int = field(default=64, metadata={"help": "Frame width and height in pixels."})
    num_frames: int = field(default=8, metadata={"help": "Frames per clip."})
    fps: float = field(default=8.0, metadata={"help": "Frame rate of the clips."})
    square_size: int = field(default=20, metadata={"help": "Side of the square in pixels."})
    seed: int = field(default=0, metadata={"help": "Seed; the same seed gives byte-identical clips."})


def render_clip(
    rng: np.random.Generator, color: str, direction: str, speed: int, size: int, num_frames: int, square: int
) -> np.ndarray:
    """Frames `(T, size, size, 3)` of one square, with a fading trail, crossing a dark, slightly noisy background.

    The background is drawn from the same faint noise for every clip: a per-clip tint or strong noise would give
    each clip an identity a small model memorises instead of looking at the square.
    """
    noise = rng.integers(-6, 7, size=(size, size, 3))
    background = np.clip(24 + noise, 0, 255).astype(np.uint8)
    dx, dy = DIRECTIONS[direction]
    travel = speed * (num_frames - 1)
    span = size - square

    def start(delta: int) -> int:
        # Keep the whole path inside the frame.
        if delta > 0:
            return int(rng.integers(0, max(1, span - travel + 1)))
        if delta < 0:
            return int(rng.integers(min(travel, span), span + 1))
        return int(rng.integers(0, span + 1))

    x0, y0 = start(dx), start(dy)
    frames = np.repeat(background[None], num_frames, axis=0)
    color_value = np.array(clip_color(rng, color))
    for t in range(num_frames):
        # A faint trail where the square just was: the direction is visible inside one frame pair, as motion blur
        # makes it in real footage, so a tiny model can read it from the square's own tokens.
        for lag, strength in ((2, 0.25), (1, 0.5)):
            tx = int(np.clip(x0 + dx * speed * (t - lag), 0, span))
            ty = int(np.clip(y0 + dy * speed * (t - lag), 0, span))
            patch = frames[t, ty : ty + square, tx : tx + square]
            frames[t, ty : ty + square, tx : tx + square] = (patch * (1 - strength) + color_value * strength).astype(
                np.uint8
            )
        x = int(np.clip(x0 + dx * speed * t, 0, span))
        y = int(np.clip(y0 + dy * speed * t, 0, span))
        frames[t, y : y + square, x : x + square] = color_value
    return frames


def _rows(split: str, count: int, config: ShapesConfig, seed_offset: int):
    rng = np.random.default_rng([config.seed, seed_offset])
    for i in range(count):
        class_id = int(rng.integers(len(CLASSES)))
        color = CLASSES[class_id].split(" ")[0]
        speed = int(rng.choice(SPEEDS))
        direction = str(rng.choice(list(DIRECTIONS)))
        frames = render_clip(rng, color, direction, speed, config.size, config.num_frames, config.square_size)
        clip_id = f"shapes-{split}-{i:05d}"
        yield {
            "id": clip_id,
            "video": {"bytes": encode_video(frames, config.fps), "path": f"{clip_id}.mp4"},
            "start": None,
            "end": None,
            "source": "shapes",
            "split": split,
            "label": class_id,
            "color": color,
            "direction": direction,
            "speed": float(speed),
        }


def _validate(config: ShapesConfig) -> None:
    """Refuse settings that cannot give a usable clip, before anything is written."""
    check_settings(
        config,
        at_least={"num_train": 0, "num_validation": 0, "num_test": 0, "num_frames": 1, "square_size": 1, "size": 16},
        above={"fps": 0},
    )
    if config.num_train + config.num_validation + config.num_test == 0:
        raise ConfigError("--num_train, --num_validation and --num_test are all 0: ask for at least one clip.")
    if config.square_size >= config.size:
        raise ConfigError(
            f"--square_size ({config.square_size}) must be smaller than --size ({config.size}) for the square to move."
        )


@SOURCES.register("shapes")
def build_shapes(config: ShapesConfig | None = None, **overrides) -> Path:
    """Write the shapes source dataset (train / validation / test) to `config.output`.

    Returns the output directory, loadable with `datasets.load_dataset(dir)`.
    """
    from datasets import ClassLabel, Value

    config = config or ShapesConfig(**overrides)
    _validate(config)
    features = source_features(
        {
            "label": ClassLabel(names=CLASSES),
            "color": Value("string"),
            "direction": Value("string"),
            "speed": Value("float32"),
        }
    )
    splits = {"train": config.num_train, "validation": config.num_validation, "test": config.num_test}
    rows = {}
    for offset, (split, count) in enumerate(splits.items()):
        if count:
            rows[split] = list(tqdm(_rows(split, count, config, offset), total=count, desc=f"shapes {split}"))
    return write_source_dataset(
        rows,
        features,
        config.output,
        card={
            "pretty_name": "vstar shapes",
            "description": (
                "Synthetic H.264 clips of a coloured square (12 jittered hues) moving left, right, up or down over a "
                f"dark, slightly noisy background ({config.size}x{config.size}, {config.num_frames} frames at "
                f"{config.fps:g} fps). `label` names the colour; `direction` the motion; `speed` is the displacement "
                "in pixels per frame."
            ),
            "license": "cc0-1.0",
            "task": "shapes",
            "build_command": "vstar build shapes",
            "config": config.__dict__,
        },
    )


build_shapes.config_class = ShapesConfig
