"""Video decoding and encoding with PyAV (which bundles FFmpeg).

`sample_frames` returns N uniformly spaced frames, or F frames per second, inside an optional [start, end]
window, as uint8 RGB arrays plus the metadata a transformers video processor needs. The frames are the ones a
player shows, as FFmpeg's demuxers present them: packets marked discard (the pre-roll an MP4 edit list hides, as in
`ffmpeg -ss A -c copy` cuts) are not frames, frames before a transport stream's first keyframe that cannot decode are
not either, times count from the first shown frame, and the display rotation (phone videos) is applied.

Exact frames are found from a packet index (one demux pass, no decoding): the decoder jumps to the keyframe before a
target only when that keyframe lies ahead of where it already is, otherwise it decodes forward (seeking separately
for every target costs more than decoding everything on short clips). No seek is trusted: the packets read after
it must be the ones the index has there, starting at or before the keyframe, and the first frame must not lie past
the target; else the seek goes earlier, down to decoding from the start. What the demuxer can do decides the rest,
per file: where it seeks through an index of the stream (MP4, Matroska with cues, AVI, FLV with keyframe metadata),
keyframe runs of large frames decode in parallel, one decoder per core; a timestamp search (MPEG-TS/PS) decodes them
in turn in one decoder. On the way to a target, H.264/HEVC frames that no other frame refers to are not decoded, nor
are H.264 reference frames that no target depends on (x264's reference B-frames, found from the slice headers by
`vstar.h264`): they reach the decoder as slice headers only, which keeps its reference bookkeeping exact.

```python
from vstar.video import sample_frames
clip = sample_frames("clip.mp4", num_frames=8, start=1.0, end=4.0)
clip.frames.shape  # (8, H, W, 3)
```
"""

from __future__ import annotations

import bisect
import io
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from vstar import h264

logger = logging.getLogger(__name__)

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
        timestamps: the frames' times in seconds from the video's first shown frame.
        fps: the video's own frame rate.
        window_num_frames: number of frames in the window.
        width, height: frame size, as shown (after `rotation`).
        rotation: degrees the frames were turned clockwise to come upright as a player shows them, from the
            stream's display matrix (0, 90, 180 or 270; 90 for a phone video tagged `rotate=90`).
    """

    frames: np.ndarray
    indices: list[int]
    timestamps: list[float]
    fps: float
    window_num_frames: int
    width: int
    height: int
    rotation: int = 0

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


def _targets(
    name: str, window_frames: int, fps: float, num_frames: int | None, sample_fps: float | None, window: str
) -> list[int]:
    """`_target_indices`, saying so when the window holds fewer frames than asked for (some then repeat)."""
    targets = _target_indices(window_frames, fps, num_frames, sample_fps)
    if targets and len(targets) > window_frames:
        asked = f"{num_frames} frames" if num_frames is not None else f"{sample_fps} fps ({len(targets)} frames)"
        logger.warning(
            "%s: %s asked for but the window %s holds only %d frames: %d of the returned frames are repeats.",
            name,
            asked,
            window,
            window_frames,
            len(targets) - window_frames,
        )
    return targets


def _window(times: Sequence[float], start: float | None, end: float | None) -> tuple[int, int]:
    lo = 0 if start is None else bisect.bisect_left(times, start - 1e-6)
    hi = len(times) if end is None else bisect.bisect_left(times, end - 1e-6)
    return lo, max(lo, hi)


_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_DECODER_THREADS = min(4, _CORES + 1) if _CORES > 1 else 1
FRAME_THREADING_MIN_PIXELS = 640 * 480
# Decoders that honour `skip_frame` per packet (also under frame threading, which copies it for every packet).
# Others, such as libdav1d, read it once when opened, so skipping there could lose a target frame.
SKIP_NONREF_CODECS = frozenset({"h264", "hevc"})
# Packets this far past the stream's first keyframe (in decode order) are enough for every frame shown before it
# to come out of the decoder's reordering delay.
_REORDER_WINDOW = 32
_DECODER_SIDE_DATA = ("new_extradata", "param_change")
_SEEK_TO_PTS = av.format.Flags.seek_to_pts.value
_TS_DISCONT = av.format.Flags.ts_discont.value


@dataclass
class _Index:
    """The frames of a video stream as FFmpeg presents them, from one demux pass (no decoding).

    Args:
        pts: presentation timestamps of the shown frames, sorted: frame `i` is `pts[i]`. Packets the demuxer marks
            discard (the pre-roll an MP4 edit list hides) are not frames.
        keys: `(pts, seek timestamp, decode position)` of every keyframe packet, sorted by pts; discarded
            pre-roll keyframes included, since the first shown frames decode from them.
        order: packet pts -> its position in decode (demux) order.
        stamps: `(pts, dts)` of every packet in decode order, to check that packets read after a seek are the ones
            the demux pass saw (MPEG-PS demuxers guess the times of packets without their own differently after a
            seek).
        exact_seeks: the demuxer seeks through an index of the stream's keyframes (MP4, Matroska with cues, AVI,
            FLV with keyframe metadata), not by a search over timestamps that can land elsewhere (MPEG-TS/PS).
        second: one second in the stream's time base.
        earliest: the smallest timestamp of the stream; seeking before it means decoding from the start.
        nal_format, coded: for H.264, how packets hold NAL units and the start of every packet's slices (decode
            order), to find the reference pictures no wanted frame depends on (`vstar.h264`).
    """

    pts: list[int]
    keys: list[tuple[int, int, int]]
    order: dict[int, int]
    stamps: list[tuple[int | None, int | None]]
    exact_seeks: bool
    second: int
    earliest: int
    nal_format: h264.NalFormat | None = None
    coded: list[h264.Coded] | None = None

    @property
    def key_pts(self) -> list[int]:
        return [key[0] for key in self.keys]


def _build_index(container, stream, reopen: Callable[[], Any]) -> _Index | None:
    """The stream's frame index, or `None` when some shown packet has no (or a repeated) presentation timestamp:
    then only decoding every frame in order tells where each frame is."""
    time_base = stream.time_base or Fraction(1, 1_000_000)
    flags = container.format.flags
    # Whether seeks are exact is known before the demux pass: TS/PS demuxers add index entries while reading.
    exact = len(stream.index_entries) > 0 and not flags & _TS_DISCONT
    nal_format = (
        h264.NalFormat.from_extradata(stream.codec_context.extradata) if stream.codec_context.name == "h264" else None
    )
    packets, coded = [], []
    for p in container.demux(stream):
        if p.size:
            packets.append((p.pts, p.dts, p.is_keyframe, p.is_discard))
            if nal_format is not None:
                coded.append(nal_format.scan(p))
    if not packets:
        raise VideoDecodeError("no video packets")
    shown = [pts for pts, _, _, discard in packets if not discard]
    if not shown or None in shown or len(set(shown)) != len(shown):
        return None
    order = {pts: i for i, (pts, _, _, _) in enumerate(packets) if pts is not None}
    # Index-based demuxers seek by presentation time; timestamp searches (MPEG-TS/PS) compare decode times.
    by_pts = exact or bool(flags & _SEEK_TO_PTS)
    keys = sorted(
        (pts, pts if by_pts or dts is None else dts, i)
        for i, (pts, dts, key, _) in enumerate(packets)
        if key and pts is not None and (nal_format is None or h264.is_intra(coded[i]))
    )
    stamps = [t for pts, dts, _, _ in packets for t in (pts, dts) if t is not None]
    index = _Index(
        sorted(shown),
        keys,
        order,
        [(pts, dts) for pts, dts, _, _ in packets],
        exact,
        max(1, round(1 / time_base)),
        min(stamps),
        nal_format,
        coded if nal_format is not None else None,
    )
    if keys:
        _drop_undecodable_lead(index, packets, reopen)
    return index


def _drop_undecodable_lead(index: _Index, packets: list[tuple], reopen: Callable[[], Any]) -> None:
    """Frames shown before the stream's first keyframe (a transport stream cut mid-GOP, open-GOP leading frames)
    reference frames the file does not hold: the decoder drops those it cannot make, so they are not frames."""
    first_key = min(key[2] for key in index.keys)
    first_key_pts = packets[first_key][0]
    lead = {
        pts for i, (pts, _, _, discard) in enumerate(packets) if not discard and (i < first_key or pts < first_key_pts)
    }
    if not lead:
        return
    out: set[int] = set()
    with av.open(reopen()) as container:
        stream = container.streams.video[0]
        for i, packet in enumerate(container.demux(stream)):
            out.update(frame.pts for frame in stream.codec_context.decode(packet if packet.size else None))
            if i > first_key + _REORDER_WINDOW:
                break
        out.update(frame.pts for frame in stream.codec_context.decode(None))
    missing = lead - out
    if missing:
        index.pts = [pts for pts in index.pts if pts not in missing]


def _runs(keyframes: list[int], targets: list[int]) -> list[tuple[int | None, list[int]]]:
    """Group sorted targets into (keyframe, targets) runs: a new run (a seek) starts only where the keyframe before a
    target lies ahead of the previous target; otherwise decoding forward costs no more than seeking. Targets before
    every keyframe get the keyframe `None`: decoding from the start. Keyframes and targets are in the same unit."""
    runs: list[tuple[int | None, list[int]]] = []
    for target in targets:
        before = bisect.bisect_right(keyframes, target) - 1
        keyframe = keyframes[before] if before >= 0 else None
        if not runs or (keyframe is not None and keyframe > runs[-1][1][-1]):
            runs.append((keyframe, [target]))
        else:
            runs[-1][1].append(target)
    return runs


def _split_runs(runs: list[tuple[int | None, list[int]]], parts: int) -> list[list[tuple[int | None, list[int]]]]:
    """Spread runs over `parts` groups with about the same number of frames to decode (largest first)."""

    def load(run) -> int:
        keyframe, targets = run
        return targets[-1] - (targets[0] if keyframe is None else keyframe) + 1

    groups: list[list[tuple[int | None, list[int]]]] = [[] for _ in range(parts)]
    loads = [0] * parts
    for run in sorted(runs, key=load, reverse=True):
        lightest = loads.index(min(loads))
        groups[lightest].append(run)
        loads[lightest] += load(run)
    return [g for g in groups if g]


def _to_rgb(to_rgb: VideoReformatter, frame) -> np.ndarray:
    """The frame as a player shows it: RGB, turned by the stream's display matrix (a phone video comes upright)."""
    array = to_rgb.reformat(frame, format="rgb24").to_ndarray()
    # `rotation` is the counterclockwise angle of the display matrix; np.rot90 turns counterclockwise too.
    turns = round(frame.rotation / 90) % 4
    return np.rot90(array, turns) if turns else array


class _SeekFailed(Exception):
    """The first frame decoded after a seek lies after the target: the seek point was no real keyframe."""


class _SeeksUntrusted(Exception):
    """Packets read after a seek differ from those the demux pass saw: only reading from the start is exact."""


class _Reader:
    """Decodes runs of frames from one open file, checking every seek against the frame index."""

    def __init__(self, reopen: Callable[[], Any], index: _Index, threaded: bool, container=None):
        self.reopen = reopen
        self.index = index
        self.threaded = threaded
        self.container = None
        if container is not None:
            self._use(container)
        self.position_of = {pts: i for i, pts in enumerate(index.pts)}
        # One converter per reader: `frame.to_ndarray` sets up a new one for every frame, which costs more than
        # converting a small frame.
        self.to_rgb = VideoReformatter()
        self.rotation = 0

    def _use(self, container) -> None:
        self.container = container
        self.stream = container.streams.video[0]
        if self.threaded:
            # Frame threading decodes several frames at once: no more CPU time, less waiting, on large frames.
            self.stream.thread_type = "AUTO"
            self.stream.thread_count = _DECODER_THREADS

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None

    def _from_start(self):
        """Packets from the first one (the file opened anew: no seek to trust)."""
        self.close()
        self._use(av.open(self.reopen()))
        return self.container.demux(self.stream)

    def _seek(self, key: int | None) -> tuple[Iterator, int | None]:
        """Packets from the keyframe `index.keys[key]` or earlier in decode order (`None`: from the start).

        A seek is never trusted: the first packet after it must lie at or before the keyframe in decode order,
        else the seek goes earlier (one second, then twice as far each time), down to decoding from the start.
        """
        if key is None:
            return self._from_start(), None
        if self.container is None:
            self._use(av.open(self.reopen()))
        _, timestamp, position = self.index.keys[key]
        back = 0
        while timestamp - back >= self.index.earliest or back == 0:
            self.container.seek(timestamp - back, stream=self.stream, backward=True, any_frame=False)
            packets = self.container.demux(self.stream)
            held, landed = [], None
            for packet in packets:
                held.append(packet)
                landed = self.index.order.get(packet.pts) if packet.pts is not None else None
                if landed is not None or not packet.size or len(held) > _REORDER_WINDOW:
                    break
            if landed is not None and landed <= position:
                return itertools.chain(held, packets), landed - sum(1 for p in held[:-1] if p.size)
            back = max(2 * back, self.index.second)
        return self._from_start(), None

    def decode(self, key: int | None, run: list[int], fast: bool) -> tuple[dict[int, np.ndarray], bool]:
        """Decode the frames at positions `run` (sorted), starting from keyframe `key`; returns them and whether
        each one is the exact frame. A seek after which the first target does not come out goes to the keyframe
        before, down to the start."""
        while True:
            packets, landed = self._seek(key)
            cut = self._headers_only_plan(key, run) if fast else {}
            try:
                return self._decode_from(packets, run, fast, landed, cut)
            except _SeekFailed:
                key = key - 1 if key else None

    def _headers_only_plan(self, key: int | None, run: list[int]) -> dict[int, list[int]]:
        """pts -> slice header sizes of the H.264 reference pictures between keyframe `key` and the run's last
        target that no target depends on: sent as headers only (see `vstar.h264`)."""
        index = self.index
        if index.coded is None or key is None:
            return {}
        start = index.keys[key][2]
        needed = {index.order[index.pts[t]] - start for t in run}
        if min(needed) < 0:
            return {}
        pictures = [coded.picture() for coded in index.coded[start : start + max(needed) + 1]]
        return {index.stamps[start + i][0]: pictures[i].header_bytes for i in h264.removable(pictures, needed)}

    def _decode_from(
        self, packets: Iterator, run: list[int], fast: bool, landed: int | None, cut: dict[int, list[int]]
    ) -> tuple[dict[int, np.ndarray], bool]:
        """`fast` skips decoding the frames nothing refers to (most B-frames: some 40% of an x264 stream with
        default settings) except the targets themselves, sends the H.264 pictures in `cut` (pts -> slice header
        sizes) as headers only, and drains the decoder once the last target's packet is in instead of decoding
        further frames until the decoder's delay lets the target out. A frame the decoder dropped is replaced by the
        nearest frame after it (or the last one).

        `landed` is the decode position of the first packet after a seek (`None` when reading from the start):
        then every packet must be the one the demux pass saw there, and the first frame must not lie after the
        first target."""
        check = landed is not None
        expect = landed if check else 0
        stamps = self.index.stamps
        codec = self.stream.codec_context
        wanted = {self.index.pts[t] for t in run}
        pending = list(run)
        decoded: dict[int, np.ndarray] = {}
        exact = True
        position = -1
        last = None

        def take(frames) -> None:
            nonlocal position, last, exact
            for frame in frames:
                known = self.position_of.get(frame.pts) if frame.pts is not None else None
                position = known if known is not None else position + 1
                if last is None and check and position > pending[0]:
                    raise _SeekFailed
                last = frame
                while pending and position >= pending[0]:
                    target = pending.pop(0)
                    exact &= position == target
                    decoded[target] = self._rgb(frame)

        sent = 0
        try:
            for packet in packets:
                if check and packet.size:
                    if expect >= len(stamps) or stamps[expect] != (packet.pts, packet.dts):
                        raise _SeeksUntrusted
                    expect += 1
                is_target = packet.pts in wanted
                if fast:
                    codec.skip_frame = "DEFAULT" if is_target else "NONREF"
                    # A new packet keeps no flags or side data: pre-roll (discard), keyframes and packets that change
                    # the decoder's parameters go whole (other side data only describes the picture not shown).
                    if (
                        packet.pts in cut
                        and not (packet.is_discard or packet.is_keyframe)
                        and not any(packet.has_sidedata(kind) for kind in _DECODER_SIDE_DATA)
                    ):
                        packet = self._headers_only(packet, cut[packet.pts])
                take(codec.decode(packet if packet.size else None))
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
            if check:
                raise _SeekFailed
            raise VideoDecodeError("no frame could be decoded")
        for target in pending:
            decoded[target] = self._rgb(last)
        return decoded, exact and not pending

    def _headers_only(self, packet, header_bytes: list[int]):
        cut = av.Packet(self.index.nal_format.headers_only(bytes(packet), header_bytes))
        cut.pts, cut.dts, cut.time_base = packet.pts, packet.dts, packet.time_base
        return cut

    def _rgb(self, frame) -> np.ndarray:
        self.rotation = (-round(frame.rotation / 90) * 90) % 360
        return _to_rgb(self.to_rgb, frame)


def _reopener(source) -> Callable[[], Any]:
    """A way to open the same video again (for decoding parts of it in parallel, or from the start)."""
    if isinstance(source, io.BytesIO):
        buffer = source.getbuffer()
        return lambda: io.BytesIO(buffer)
    return lambda: source


def _decode_runs(reader: _Reader, runs: list[tuple[int | None, list[int]]], fast: bool) -> dict[int, np.ndarray]:
    key_pts = reader.index.key_pts
    decoded: dict[int, np.ndarray] = {}
    for number, (keyframe, run) in enumerate(runs):
        key = None if keyframe is None else bisect.bisect_left(key_pts, keyframe)
        positions = [reader.position_of[t] for t in run]
        try:
            frames, exact = reader.decode(key, positions, fast)
            if fast and not exact:
                # A damaged stream: decode the run again frame by frame, so a missing frame is replaced as it
                # always was.
                frames, _ = reader.decode(key, positions, False)
        except _SeeksUntrusted:
            # This file's seeks cannot be checked: decode every remaining target in one pass from the start.
            rest = sorted(reader.position_of[t] for _, later in runs[number:] for t in later)
            frames, _ = reader.decode(None, rest, fast)
            decoded.update(frames)
            break
        decoded.update(frames)
    return decoded


def _decode_group(reopen: Callable[[], Any], index: _Index, runs, fast: bool) -> tuple[dict[int, np.ndarray], int]:
    reader = _Reader(reopen, index, threaded=False)
    try:
        return _decode_runs(reader, runs, fast), reader.rotation
    finally:
        reader.close()


def _decode_video(
    source, name: str, num_frames: int | None, sample_fps: float | None, start: float | None, end: float | None
) -> SampledClip:
    reopen = _reopener(source)
    with av.open(source) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, 1_000_000)
        # The packet index costs a demux pass (no decoding) and gives exact frame positions and keyframes.
        index = _build_index(container, stream, reopen)
        if index is None:
            return _decode_in_order(reopen, name, num_frames, sample_fps, start, end)
        pts = index.pts
        first = pts[0]
        times = [float((p - first) * time_base) for p in pts]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else (len(pts) - 1) / max(times[-1], 1e-6)
        lo, hi = _window(times, start, end)
        targets = [lo + i for i in _targets(name, hi - lo, fps, num_frames, sample_fps, f"[{start}, {end}] s")]
        if not targets:
            raise VideoDecodeError(f"the window [{start}, {end}] s holds no frames (video length {times[-1]:.2f} s)")
        frames, rotation = _decode_positions(container, stream, index, targets, reopen)
    return _clip(frames, [t - lo for t in targets], [times[t] for t in targets], fps, hi - lo, rotation)


def _clip(
    frames: list[np.ndarray], indices: list[int], timestamps: list[float], fps: float, window: int, rotation: int = 0
) -> SampledClip:
    height, width = frames[0].shape[:2]
    return SampledClip(np.stack(frames), indices, timestamps, fps, window, width, height, rotation)


def _decode_positions(
    container, stream, index: _Index, targets: list[int], reopen: Callable[[], Any]
) -> tuple[list[np.ndarray], int]:
    runs = _runs(index.key_pts, sorted({index.pts[t] for t in targets}))
    context = stream.codec_context
    fast = context.name in SKIP_NONREF_CODECS
    large = (context.width or 0) * (context.height or 0) >= FRAME_THREADING_MIN_PIXELS
    if large and index.exact_seeks and len(runs) > 1 and _CORES > 1:
        # Runs start at their own keyframes, so they decode independently: one single-threaded decoder per core,
        # each on its own open file, keeps every core busy without frame threading's hand-offs. Only where the
        # demuxer seeks through an index: timestamp searches may need several tries per seek.
        groups = _split_runs(runs, min(_CORES, len(runs)))
        with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="vstar-gop") as pool:
            parts = list(pool.map(lambda group: _decode_group(reopen, index, group, fast), groups))
        decoded = {t: frame for part, _ in parts for t, frame in part.items()}
        rotation = parts[0][1]
    else:
        # On small frames starting threads costs more than it saves. A few threads are enough: data loaders
        # already decode several clips at once, and each thread holds its own frame buffers.
        reader = _Reader(reopen, index, threaded=large, container=container)
        try:
            decoded = _decode_runs(reader, runs, fast)
            rotation = reader.rotation
        finally:
            if reader.container is not container:
                reader.close()
    return [decoded[t] for t in targets], rotation


def _decode_in_order(
    reopen: Callable[[], Any],
    name: str,
    num_frames: int | None,
    sample_fps: float | None,
    start: float | None,
    end: float | None,
) -> SampledClip:
    """For streams whose packets do not all carry a presentation time: decode every frame in order, twice (once
    for the frames' times, once for the wanted frames), which is what a player shows by definition."""
    with av.open(reopen()) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        times: list[float] = []
        for frame in container.decode(stream):
            # A raw elementary stream has no times at all: its frames are evenly spaced at the stated rate.
            times.append(frame.time if frame.time is not None else len(times) / float(rate or 25))
    if not times:
        raise VideoDecodeError("no frame could be decoded")
    times = [t - times[0] for t in times]
    fps = float(rate) if rate else (len(times) - 1) / max(times[-1], 1e-6)
    lo, hi = _window(times, start, end)
    targets = [lo + i for i in _targets(name, hi - lo, fps, num_frames, sample_fps, f"[{start}, {end}] s")]
    if not targets:
        raise VideoDecodeError(f"the window [{start}, {end}] s holds no frames (video length {times[-1]:.2f} s)")
    wanted, last = set(targets), max(targets)
    to_rgb = VideoReformatter()
    decoded: dict[int, np.ndarray] = {}
    rotation = 0
    with av.open(reopen()) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                decoded[i] = _to_rgb(to_rgb, frame)
                rotation = (-round(frame.rotation / 90) * 90) % 360
            if i >= last:
                break
    frames = [decoded.get(t, decoded[max(decoded)]) for t in targets]
    return _clip(frames, [t - lo for t in targets], [times[t] for t in targets], fps, hi - lo, rotation)


def _read_frame_folder(
    folder: Path,
    name: str,
    num_frames: int | None,
    sample_fps: float | None,
    start: float | None,
    end: float | None,
    fps: float,
) -> SampledClip:
    from PIL import Image

    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise VideoDecodeError("the frame folder holds no JPEG/PNG frames")
    times = [i / fps for i in range(len(files))]
    lo, hi = _window(times, start, end)
    targets = [lo + i for i in _targets(name, hi - lo, fps, num_frames, sample_fps, f"[{start}, {end}] s")]
    if not targets:
        raise VideoDecodeError(f"the window [{start}, {end}] s holds no frames")
    frames = [np.asarray(Image.open(files[t]).convert("RGB")) for t in targets]
    return _clip(frames, [t - lo for t in targets], [times[t] for t in targets], fps, hi - lo)


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

    Frames are the ones a player shows, counted and timed as FFmpeg presents them: the pre-roll an MP4 edit list
    hides is not counted, times start at the first shown frame, and a display rotation is applied. Asking for more
    frames than the window holds logs a warning (some frames then repeat).

    Raises:
        VideoDecodeError: naming the video, when it is missing, empty, truncated or undecodable.
    """
    source = _open_input(video)
    try:
        if isinstance(source, str) and os.path.isdir(source):
            return _read_frame_folder(Path(source), _describe(video), num_frames, fps, start, end, folder_fps)
        if isinstance(source, str) and not os.path.exists(source):
            raise FileNotFoundError(source)
        return _decode_video(source, _describe(video), num_frames, fps, start, end)
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
