"""Video decoding and encoding with PyAV (which bundles FFmpeg).

`sample_frames` returns N uniformly spaced frames, or F frames per second, inside an optional [start, end]
window, as uint8 RGB arrays plus the metadata a transformers video processor needs. Exact frames are found
from the container's packet index: the decoder jumps to the keyframe before a target only when that keyframe
lies ahead of where it already is, otherwise it decodes forward (seeking separately for every target costs
more than decoding everything on short clips). On the way to a target, H.264/HEVC frames that no other frame
refers to are not decoded at all, and the decoder runs frame-threaded.

```python
from vstar.video import sample_frames
clip = sample_frames("clip.mp4", num_frames=8, start=1.0, end=4.0)
clip.frames.shape  # (8, H, W, 3)
```
"""

from __future__ import annotations

import bisect
import io
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

VideoSource = str | os.PathLike | bytes | Mapping[str, Any]


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded; the message names the file."""


@dataclass
class SampledClip:
    """Frames sampled from a video window.

    Args:
        frames: uint8 array `(num_frames, height, width, 3)`.
        indices: frame indices inside the window (0 = first frame at or after `start`).
        timestamps: the frames' times in seconds from the start of the video.
        fps: the video's own frame rate.
        window_num_frames: number of frames in the window.
        width, height: frame size.
    """

    frames: np.ndarray
    indices: list[int]
    timestamps: list[float]
    fps: float
    window_num_frames: int
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.window_num_frames / self.fps

    def video_metadata(self):
        """`transformers` `VideoMetadata` for the window, so the processor computes the true sampled fps."""
        from transformers.video_utils import VideoMetadata

        return VideoMetadata(
            total_num_frames=self.window_num_frames,
            fps=self.fps,
            width=self.width,
            height=self.height,
            duration=self.duration,
            video_backend="pyav",
            frames_indices=list(self.indices),
        )


def _describe(video: VideoSource) -> str:
    if isinstance(video, Mapping):
        return str(video.get("path") or "<embedded video bytes>")
    if isinstance(video, bytes):
        return "<video bytes>"
    return str(video)


def _open_input(video: VideoSource):
    """What `av.open` or the frame-folder reader accepts: a path, or a file object over embedded bytes."""
    if isinstance(video, Mapping):
        if video.get("bytes"):
            return io.BytesIO(video["bytes"])
        if video.get("path"):
            return str(video["path"])
        raise VideoDecodeError("The video entry has neither `bytes` nor `path`.")
    if isinstance(video, bytes):
        return io.BytesIO(video)
    return str(video)


def _target_indices(window_frames: int, fps: float, num_frames: int | None, sample_fps: float | None) -> list[int]:
    if window_frames <= 0:
        return []
    if (num_frames is None) == (sample_fps is None):
        raise ValueError("Give exactly one of `num_frames` and `fps`.")
    if sample_fps is not None:
        count = max(1, int(window_frames / fps * sample_fps))
        return [min(window_frames - 1, round(i * fps / sample_fps)) for i in range(count)]
    # Centre of N equal segments: never both ends, which are often fades or cuts.
    return [min(window_frames - 1, int((i + 0.5) * window_frames / num_frames)) for i in range(num_frames)]


def _window(times: Sequence[float], start: float | None, end: float | None) -> tuple[int, int]:
    lo = 0 if start is None else bisect.bisect_left(times, start - 1e-6)
    hi = len(times) if end is None else bisect.bisect_left(times, end - 1e-6)
    return lo, max(lo, hi)


def _decode_video(
    source, num_frames: int | None, sample_fps: float | None, start: float | None, end: float | None
) -> SampledClip:
    with av.open(source) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, 1_000_000)
        # The packet index costs a demux pass (no decoding) and gives exact frame positions and keyframes.
        packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.pts is not None and p.size]
        if not packets:
            raise VideoDecodeError("no video packets")
        packets.sort()
        pts = [p for p, _ in packets]
        keyframes = [i for i, (_, key) in enumerate(packets) if key] or [0]
        first = pts[0]
        times = [float((p - first) * time_base) for p in pts]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else (len(pts) - 1) / max(times[-1], 1e-6)
        lo, hi = _window(times, start, end)
        targets = [lo + i for i in _target_indices(hi - lo, fps, num_frames, sample_fps)]
        if not targets:
            raise VideoDecodeError(f"the window [{start}, {end}] s holds no frames (video length {times[-1]:.2f} s)")
        frames = _decode_positions(container, stream, pts, keyframes, targets, reopen=_reopener(source))
        height, width = frames[0].shape[:2]
        return SampledClip(
            frames=np.stack(frames),
            indices=[t - lo for t in targets],
            timestamps=[times[t] for t in targets],
            fps=fps,
            window_num_frames=hi - lo,
            width=width,
            height=height,
        )


_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_DECODER_THREADS = min(4, _CORES + 1) if _CORES > 1 else 1
FRAME_THREADING_MIN_PIXELS = 640 * 480
# Decoders that honour `skip_frame` per packet (also under frame threading, which copies it for every packet).
# Others, such as libdav1d, read it once when opened, so skipping there could lose a target frame.
SKIP_NONREF_CODECS = frozenset({"h264", "hevc"})


def _runs(keyframes: list[int], targets: list[int]) -> list[tuple[int, list[int]]]:
    """Group sorted targets into (keyframe, targets) runs: a new run (a seek) starts only where the keyframe before a
    target lies ahead of the previous target; otherwise decoding forward costs no more than seeking."""
    runs: list[tuple[int, list[int]]] = []
    for target in targets:
        keyframe = keyframes[max(0, bisect.bisect_right(keyframes, target) - 1)]
        if not runs or keyframe > runs[-1][1][-1]:
            runs.append((keyframe, [target]))
        else:
            runs[-1][1].append(target)
    return runs


def _decode_run(
    container,
    stream,
    pts: list[int],
    position_of: dict[int, int],
    keyframe: int,
    run: list[int],
    fast: bool,
    to_rgb: VideoReformatter,
) -> tuple[dict[int, np.ndarray], bool]:
    """Decode the frames at positions `run` (sorted) starting from `keyframe`; returns them and whether each one is
    the exact frame.

    `fast` skips decoding the frames nothing refers to (most B-frames: some 40% of an x264 stream with default
    settings) except the targets themselves, and drains the decoder once the last target's packet is in instead of
    decoding further frames until the decoder's delay lets the target out. A frame the decoder dropped is replaced by
    the nearest frame after it (or the last one).
    """
    codec = stream.codec_context
    container.seek(pts[keyframe], stream=stream, backward=True, any_frame=False)
    wanted = {pts[t] for t in run}
    pending = list(run)
    decoded: dict[int, np.ndarray] = {}
    exact = True
    position = keyframe - 1
    last = None

    def take(frames) -> None:
        nonlocal position, last, exact
        for frame in frames:
            position = position_of.get(frame.pts, position + 1)
            last = frame
            while pending and position >= pending[0]:
                target = pending.pop(0)
                exact &= position == target
                decoded[target] = to_rgb.reformat(frame, format="rgb24").to_ndarray()

    sent = 0
    try:
        for packet in container.demux(stream):
            is_target = packet.pts in wanted
            if fast:
                codec.skip_frame = "DEFAULT" if is_target else "NONREF"
            take(codec.decode(packet))
            sent += is_target
            if not pending:
                break
            if fast and sent == len(wanted):
                take(codec.decode(None))
                break
    finally:
        if fast:
            codec.skip_frame = "DEFAULT"
    if pending and last is None:
        raise VideoDecodeError("no frame could be decoded")
    for target in pending:
        decoded[target] = to_rgb.reformat(last, format="rgb24").to_ndarray()
    return decoded, exact and not pending


def _reopener(source) -> Callable[[], Any] | None:
    """A way to open the same video again (for decoding parts of it in parallel), or `None` when there is none."""
    if isinstance(source, str):
        return lambda: source
    if isinstance(source, io.BytesIO):
        buffer = source.getbuffer()
        return lambda: io.BytesIO(buffer)
    return None


def _split_runs(runs: list[tuple[int, list[int]]], parts: int) -> list[list[tuple[int, list[int]]]]:
    """Spread runs over `parts` groups with about the same number of frames to decode (largest first)."""
    groups: list[list[tuple[int, list[int]]]] = [[] for _ in range(parts)]
    loads = [0] * parts
    for run in sorted(runs, key=lambda r: r[1][-1] - r[0], reverse=True):
        lightest = loads.index(min(loads))
        groups[lightest].append(run)
        loads[lightest] += run[1][-1] - run[0] + 1
    return [g for g in groups if g]


def _decode_runs(container, stream, pts: list[int], runs: list[tuple[int, list[int]]]) -> dict[int, np.ndarray]:
    position_of = {p: i for i, p in enumerate(pts)}
    fast = stream.codec_context.name in SKIP_NONREF_CODECS
    # One converter for the clip: `frame.to_ndarray` sets up a new one for every frame, which costs more than
    # converting a small frame.
    to_rgb = VideoReformatter()
    decoded: dict[int, np.ndarray] = {}
    for keyframe, run in runs:
        frames, exact = _decode_run(container, stream, pts, position_of, keyframe, run, fast, to_rgb)
        if fast and not exact:
            # A damaged stream: decode the run again frame by frame, so a missing frame is replaced as it always was.
            frames, _ = _decode_run(container, stream, pts, position_of, keyframe, run, False, to_rgb)
        decoded.update(frames)
    return decoded


def _decode_group(reopen: Callable[[], Any], pts: list[int], runs: list[tuple[int, list[int]]]):
    with av.open(reopen()) as container:
        return _decode_runs(container, container.streams.video[0], pts, runs)


def _decode_positions(
    container, stream, pts: list[int], keyframes: list[int], targets: list[int], reopen: Callable[[], Any] | None
) -> list[np.ndarray]:
    runs = _runs(keyframes, sorted(set(targets)))
    context = stream.codec_context
    large = (context.width or 0) * (context.height or 0) >= FRAME_THREADING_MIN_PIXELS
    if large and reopen is not None and len(runs) > 1 and _CORES > 1:
        # Runs start at their own keyframes, so they decode independently: one single-threaded decoder per core,
        # each on its own open file, keeps every core busy without frame threading's hand-offs.
        groups = _split_runs(runs, min(_CORES, len(runs)))
        with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="vstar-gop") as pool:
            parts = list(pool.map(lambda group: _decode_group(reopen, pts, group), groups))
        decoded = {t: frame for part in parts for t, frame in part.items()}
        return [decoded[t] for t in targets]
    # Frame threading decodes several frames at once: no more CPU time, less waiting, on large frames. On small ones
    # starting the threads costs more than it saves. A few threads are enough: data loaders already decode several
    # clips at once, and each thread holds its own frame buffers.
    if large:
        stream.thread_type = "AUTO"
        stream.thread_count = _DECODER_THREADS
    decoded = _decode_runs(container, stream, pts, runs)
    return [decoded[t] for t in targets]


def _read_frame_folder(
    folder: Path, num_frames: int | None, sample_fps: float | None, start: float | None, end: float | None, fps: float
) -> SampledClip:
    from PIL import Image

    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise VideoDecodeError("the frame folder holds no JPEG/PNG frames")
    times = [i / fps for i in range(len(files))]
    lo, hi = _window(times, start, end)
    targets = [lo + i for i in _target_indices(hi - lo, fps, num_frames, sample_fps)]
    if not targets:
        raise VideoDecodeError(f"the window [{start}, {end}] s holds no frames")
    frames = [np.asarray(Image.open(files[t]).convert("RGB")) for t in targets]
    height, width = frames[0].shape[:2]
    return SampledClip(
        np.stack(frames), [t - lo for t in targets], [times[t] for t in targets], fps, hi - lo, width, height
    )


def sample_frames(
    video: VideoSource,
    num_frames: int | None = None,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    folder_fps: float = 30.0,
) -> SampledClip:
    """Sample frames from a video file, embedded video bytes, a `datasets.Video(decode=False)` entry or a folder
    of frames.

    Args:
        video: a path, bytes, `{"path": ..., "bytes": ...}`, or a directory of `.jpg`/`.png` frames.
        num_frames: sample this many frames, uniformly spaced over the window.
        fps: sample this many frames per second instead.
        start: window start in seconds (default: the first frame).
        end: window end in seconds, exclusive (default: the last frame).
        folder_fps: the frame rate of a frame folder (folders carry no timing).

    Raises:
        VideoDecodeError: naming the video, when it is missing, empty, truncated or undecodable.
    """
    source = _open_input(video)
    try:
        if isinstance(source, str) and os.path.isdir(source):
            return _read_frame_folder(Path(source), num_frames, fps, start, end, folder_fps)
        if isinstance(source, str) and not os.path.exists(source):
            raise FileNotFoundError(source)
        return _decode_video(source, num_frames, fps, start, end)
    except VideoDecodeError as err:
        raise VideoDecodeError(f"{_describe(video)}: {err}") from None
    except (av.error.FFmpegError, FileNotFoundError, OSError, ValueError, IndexError) as err:
        if isinstance(err, ValueError) and "exactly one" in str(err):
            raise
        raise VideoDecodeError(f"{_describe(video)}: cannot decode ({type(err).__name__}: {err})") from err


def write_video(path: str | Path, frames: np.ndarray | Sequence[np.ndarray], fps: float, crf: int = 23) -> Path:
    """Encode uint8 RGB frames `(T, H, W, 3)` as an H.264 mp4 file (yuv420p, so sizes are rounded down to even)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _encode(str(path), frames, fps, crf)
    return path


def encode_video(frames: np.ndarray | Sequence[np.ndarray], fps: float, crf: int = 23) -> bytes:
    """Encode uint8 RGB frames `(T, H, W, 3)` as H.264 mp4 bytes, for embedding in a dataset."""
    buffer = io.BytesIO()
    _encode(buffer, frames, fps, crf)
    return buffer.getvalue()


def _encode(target, frames, fps: float, crf: int) -> None:
    frames = np.asarray(frames)
    height, width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    with av.open(target, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf)}
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array[:height, :width]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
