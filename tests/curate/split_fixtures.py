"""Synthetic long videos with known cuts for the splitting tests (a module of its own, under a name no other test
folder and no installed package uses): textured, moving shots in distinct colours joined by
hard cuts, one cross-fade, a static shot and a shot longer than the tests' `max_seconds`; small frames so decoding
is fast. `LongVideo` says where every shot is, so results are checked against the script."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

FPS = 15
HEIGHT, WIDTH = 72, 128


@dataclass
class Shot:
    kind: str  # "moving" | "static"
    seconds: float
    colour: tuple[int, int, int]
    pattern: str = "stripes"


@dataclass
class LongVideo:
    path: Path
    fps: int
    shots: list[tuple[int, int, str]] = field(default_factory=list)  # (first frame, end frame, kind)
    hard_cuts: list[int] = field(default_factory=list)  # first frame of each shot after a hard cut
    dissolves: list[tuple[int, int]] = field(default_factory=list)  # frames [a, b) of each cross-fade

    @property
    def frames(self) -> int:
        return self.shots[-1][1]


def _texture(pattern: str, colour, t: int, rng_seed: int) -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.array(colour, np.float64)
    if pattern == "stripes":
        wave = 0.5 + 0.5 * np.sin((xx + 0.7 * t) / 5.0)
    elif pattern == "checker":
        wave = (((xx + t // 2) // 12 + (yy // 12)) % 2).astype(np.float64)
    elif pattern == "rings":
        wave = 0.5 + 0.5 * np.sin(np.hypot(xx - WIDTH / 2, yy - HEIGHT / 2) / 4.0 - t / 6.0)
    else:  # "noise": a fixed random texture drifting sideways
        rng = np.random.default_rng(rng_seed)
        noise = rng.random((HEIGHT, WIDTH + 400))
        wave = noise[:, t // 2 % 400 : t // 2 % 400 + WIDTH]
    image = base[None, None] * (0.55 + 0.45 * wave[..., None])
    return image


def _shot_frames(shot: Shot, seed: int) -> list[np.ndarray]:
    count = round(shot.seconds * FPS)
    if shot.kind == "static":
        frame = np.clip(_texture(shot.pattern, shot.colour, 0, seed), 0, 255).astype(np.uint8)
        return [frame] * count
    frames = []
    for t in range(count):
        image = _texture(shot.pattern, shot.colour, t, seed)
        # A bright block crossing the frame: motion the layout embedding sees.
        x = int((t / max(1, count - 1)) * (WIDTH - 28))
        y = int(HEIGHT / 2 - 12 + 10 * np.sin(t / 7))
        image[y : y + 24, x : x + 28] = 255 - np.array(shot.colour) * 0.3
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames


def write_frames(path: Path, frames, fps: int = FPS, rotation: float | None = None, faststart: bool = False) -> Path:
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=fps, options={"g": str(4 * fps), "preset": "ultrafast"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


# The script: colours far apart in RGB, so the default embedder puts different shots ~1 apart.
SCRIPT = [
    ("cut", Shot("moving", 4, (220, 40, 40), "stripes")),
    ("cut", Shot("moving", 4, (40, 60, 230), "checker")),
    ("cut", Shot("moving", 6, (40, 210, 60), "rings")),
    ("dissolve", Shot("moving", 6, (230, 220, 40), "stripes")),
    ("cut", Shot("static", 3, (150, 90, 200), "checker")),
    ("cut", Shot("moving", 12, (40, 220, 220), "noise")),
    ("cut", Shot("moving", 4, (230, 120, 30), "checker")),
]
DISSOLVE_FRAMES = 15


def make_long_video(path: Path, script=SCRIPT, **write_options) -> LongVideo:
    video = LongVideo(path, FPS)
    frames: list[np.ndarray] = []
    for number, (join, shot) in enumerate(script):
        shot_frames = _shot_frames(shot, seed=number)
        start = len(frames)
        if number and join == "dissolve":
            # The last DISSOLVE_FRAMES of the previous shot blend into the first ones of this shot.
            blend = start - DISSOLVE_FRAMES
            for k in range(DISSOLVE_FRAMES):
                alpha = (k + 1) / (DISSOLVE_FRAMES + 1)
                mixed = (1 - alpha) * frames[blend + k].astype(np.float64) + alpha * shot_frames[k]
                frames[blend + k] = mixed.astype(np.uint8)
            video.dissolves.append((blend, start))
            first, last = video.shots[-1][:2]
            video.shots[-1] = (first, blend, video.shots[-1][2])
            shot_frames = shot_frames[DISSOLVE_FRAMES:]
        elif number:
            video.hard_cuts.append(start)
        frames.extend(shot_frames)
        video.shots.append((start, len(frames), shot.kind))
    write_frames(path, frames, **write_options)
    return video


SHORT_SCRIPT = [
    ("cut", Shot("moving", 3, (220, 40, 40), "stripes")),
    ("cut", Shot("moving", 3, (40, 60, 230), "checker")),
    ("cut", Shot("moving", 3, (40, 210, 60), "rings")),
]


def script_frames(script=SHORT_SCRIPT) -> list[np.ndarray]:
    """The frames of a script of hard-cut shots (no dissolves)."""
    return [frame for number, (_, shot) in enumerate(script) for frame in _shot_frames(shot, seed=number)]


def write_timed_frames(path: Path, frames, times: list[float]) -> Path:
    """An H.264 mp4 whose frames are shown at `times` (seconds): a variable frame rate."""
    from fractions import Fraction

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30, options={"preset": "ultrafast", "bframes": "0"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
        for image, time in zip(frames, times):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = round(time * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
