"""Scene stitching (Panda-70M's `event_stitching.py`, reimplemented): detected scenes -> single-event clips.

Each scene carries the embeddings of its frames at 5% and 95% of its length (unit vectors, see
`vstar.curate.embed`). In order:

1. a scene whose two frames are further apart than `transition_threshold` holds a transition (a dissolve, a fade,
   a wipe): dropped;
2. a scene that starts where the previous event ends and whose first frame is within `merge_threshold` of the
   event's last frame continues that event (an over-eager cut, or the fixed pieces long shots are cut into);
3. an event shorter than `min_seconds` is dropped; one whose first and last frames are within `static_threshold`
   is static (nothing happens): dropped; one whose mean embedding is within `redundant_threshold` of an event
   already kept repeats it: dropped (0 turns this off, as Panda's script does);
4. an event longer than `max_seconds` is split into equal parts no longer than it (Panda's script cuts it at
   `max_seconds` and drops the rest; here nothing of a good event is lost); `trim_fraction` of each clip is cut off
   at both ends.

Every span that does not end in a clip is returned with its reason. Frames are indices into the video's shown
frames; `times[i]` is frame `i`'s time and `times[len]` the video's end.

```python
from vstar.curate.stitch import Scene, StitchSettings, stitch
clips, dropped = stitch(scenes, times, StitchSettings())
```
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Why a span of video is not in any clip (the build report's `reason`).
TRANSITION, SHORT, STATIC, REDUNDANT = "transition", "short", "static", "redundant"
TRIM, UNDECODED = "trim", "undecoded"


@dataclass
class StitchSettings:
    """Panda-70M's stitching thresholds (defaults: the values its released script passes, max 60 s as in the paper).

    Args:
        transition_threshold: a scene whose first and last frames are further apart holds a transition.
        merge_threshold: neighbours closer than this are one event.
        static_threshold: an event whose first and last frames are closer than this is static.
        redundant_threshold: an event closer than this to a kept one is redundant (0: off).
        min_seconds: shortest clip.
        max_seconds: longest clip; longer events are split.
        trim_fraction: fraction cut off at both ends of every clip.
        max_scene_seconds: scenes longer than this plus 2 s are cut into pieces of this length before stitching
            (Panda's detection step does, so that dissolves and unedited footage get looked at closely).
    """

    transition_threshold: float = field(
        default=1.0, metadata={"help": "A scene whose first and last frames are further apart holds a transition."}
    )
    merge_threshold: float = field(default=0.6, metadata={"help": "Neighbouring scenes closer than this are merged."})
    static_threshold: float = field(
        default=0.15, metadata={"help": "An event whose first and last frames are closer than this is static."}
    )
    redundant_threshold: float = field(
        default=0.0, metadata={"help": "An event closer than this to a kept one is dropped (0: off; paper 0.3)."}
    )
    min_seconds: float = field(default=2.0, metadata={"help": "Shortest clip, seconds."})
    max_seconds: float = field(default=60.0, metadata={"help": "Longest clip, seconds: longer events are split."})
    trim_fraction: float = field(default=0.0, metadata={"help": "Fraction cut off both ends of a clip (paper 0.1)."})
    max_scene_seconds: float = field(
        default=5.0, metadata={"help": "Scenes longer than this + 2 s are cut into pieces of it before stitching."}
    )


@dataclass
class Scene:
    """A detected scene: frames `[start, end)` and the embeddings of its frames at 5% and 95%."""

    start: int
    end: int
    first: np.ndarray
    last: np.ndarray


@dataclass
class Span:
    """Frames `[start, end)` left out, and why (`detail`: the measured distance or length)."""

    start: int
    end: int
    reason: str
    detail: str = ""


@dataclass
class ClipSpan:
    """A kept clip: frames `[start, end)`; `reason` is `scene` (a whole event) or `max_seconds` (a part of one)."""

    start: int
    end: int
    reason: str
    scenes: int = 1


def probe_frames(start: int, end: int) -> tuple[int, int]:
    """The frames of scene `[start, end)` whose embeddings stand for it (Panda: 5% and 95% of its length)."""
    return int(0.95 * start + 0.05 * (end - 1)), int(0.05 * start + 0.95 * (end - 1))


def pieces(start: int, end: int, times: Sequence[float], end_time: float, settings: StitchSettings) -> list[int]:
    """The boundaries Panda's detection step adds inside scene `[start, end)`: while more than
    `max_scene_seconds + 2` s remain, a piece of `max_scene_seconds` is cut off."""
    cuts = []
    last = start
    limit = settings.max_scene_seconds
    stop = times[end] if end < len(times) else end_time
    while stop - times[last] > limit + 2:
        nxt = bisect.bisect_left(times, times[last] + limit - 1e-9, lo=last + 1)
        if nxt >= end:
            break
        cuts.append(nxt)
        last = nxt
    return cuts


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def stitch(
    scenes: Sequence[Scene], times: Sequence[float], end_time: float, settings: StitchSettings
) -> tuple[list[ClipSpan], list[Span]]:
    """Stitch detected scenes into clips (see the module docstring).

    Args:
        scenes: the detected scenes in order (they may leave gaps: frames a detector called a transition).
        times: the time of every frame, seconds.
        end_time: the time the last frame ends.
        settings: the thresholds.

    Returns:
        The clips and the dropped spans, both in frame indices.
    """

    def at(frame: int) -> float:
        return times[frame] if frame < len(times) else end_time

    dropped: list[Span] = []
    events: list[list[Scene]] = []
    for scene in scenes:
        inside = _distance(scene.first, scene.last)
        if inside > settings.transition_threshold:
            dropped.append(Span(scene.start, scene.end, TRANSITION, f"first-last distance {inside:.3f}"))
            continue
        if events and events[-1][-1].end == scene.start:
            across = _distance(events[-1][-1].last, scene.first)
            if across <= settings.merge_threshold:
                events[-1].append(scene)
                continue
        events.append([scene])

    clips: list[ClipSpan] = []
    kept_means: list[np.ndarray] = []
    for event in events:
        start, end = event[0].start, event[-1].end
        seconds = at(end) - at(start)
        if seconds < settings.min_seconds:
            dropped.append(Span(start, end, SHORT, f"{seconds:.2f} s"))
            continue
        change = _distance(event[0].first, event[-1].last)
        if change < settings.static_threshold:
            dropped.append(Span(start, end, STATIC, f"first-last distance {change:.3f}"))
            continue
        mean = np.mean([v for scene in event for v in (scene.first, scene.last)], axis=0)
        if settings.redundant_threshold > 0 and kept_means:
            nearest = min(_distance(mean, other) for other in kept_means)
            if nearest < settings.redundant_threshold:
                dropped.append(Span(start, end, REDUNDANT, f"distance {nearest:.3f} to a kept clip"))
                continue
        kept_means.append(mean)
        parts = max(1, math.ceil(seconds / settings.max_seconds - 1e-9))
        bounds = [start] + [_frame_at(times, at(start) + seconds * k / parts, start, end) for k in range(1, parts)]
        bounds.append(end)
        for lo, hi in zip(bounds, bounds[1:]):
            reason = "scene" if parts == 1 else "max_seconds"
            trim = int(settings.trim_fraction * (hi - lo))
            if trim:
                dropped.append(Span(lo, lo + trim, TRIM, f"{settings.trim_fraction:g} of the clip"))
                dropped.append(Span(hi - trim, hi, TRIM, f"{settings.trim_fraction:g} of the clip"))
            clips.append(ClipSpan(lo + trim, hi - trim, reason, len(event)))
    dropped.sort(key=lambda span: span.start)
    return clips, dropped


def _frame_at(times: Sequence[float], time: float, lo: int, hi: int) -> int:
    return min(hi - 1, max(lo + 1, bisect.bisect_left(times, time - 1e-9, lo=lo, hi=min(hi, len(times)))))
