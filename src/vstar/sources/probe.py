"""Video probing from container metadata.

`probe_video` reads duration, frame rate, size and codec from the container header, decodes the first shown frame
and demuxes (without decoding) the packets after the last keyframe, so a missing, empty, truncated or undecodable
file is found without decoding every frame. It agrees with `vstar.video`: the pre-roll an MP4 edit list hides is
not the first frame, a video that starts later or ends earlier than its audio is measured on its own, and a
transport stream (which states no duration) is as long as its data. Builders probe many clips at once with
`vstar.curate.executors.parallel_map`.

```python
from vstar.sources.probe import probe_video
probe_video("clip.mp4")  # VideoProbe(duration=10.0, fps=30.0, width=340, height=256, codec='h264', error=None)
```

Benchmark: `python bench/bench_sources.py`.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import av

# Kinds of probe failure, the first word of `VideoProbe.error` (the build report groups skipped rows by it).
MISSING, EMPTY, TRUNCATED, UNDECODABLE = "missing", "empty", "truncated", "undecodable"
# Packets fed to the decoder past the first one shown before concluding that nothing decodes: more than any
# decoder's reordering delay.
_DECODE_WINDOW = 32


@dataclass(frozen=True)
class VideoProbe:
    """What the container says about a video, or why it cannot be used.

    Args:
        duration: seconds of video (the stream's duration, else measured from its last packets).
        fps: average frame rate.
        width, height: frame size in pixels.
        codec: decoder name (`h264`, `vp9`, ...).
        error: `None` for a usable video, else `"<kind>: <detail>"` with kind one of `missing`, `empty`,
            `truncated`, `undecodable`.
    """

    duration: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def columns(self) -> dict[str, Any]:
        """The probe columns of a source dataset row."""
        values = asdict(self)
        values.pop("error")
        return values


def probe_features() -> dict[str, Any]:
    """The `datasets` features of the probe columns (`duration`, `fps`, `width`, `height`, `codec`)."""
    from datasets import Value

    return {
        "duration": Value("float64"),
        "fps": Value("float64"),
        "width": Value("int32"),
        "height": Value("int32"),
        "codec": Value("string"),
    }


def probe_video(video: str | os.PathLike | bytes | None) -> VideoProbe:
    """Probe one video file (or mp4 bytes) from its container metadata; never raises for a bad video.

    Reads the header, decodes the first shown frame, then seeks to the last keyframe and demuxes the remaining
    packets: a file cut short has packets flagged corrupt, none at all, or packets ending well before the stated
    duration (the video's own, else the container's, which every stream's data together must reach).

    Args:
        video: a path, the encoded bytes, or `None` (reported as missing).
    """
    if video is None:
        return VideoProbe(error=f"{MISSING}: no file")
    if isinstance(video, (bytes, bytearray)):
        if not video:
            return VideoProbe(error=f"{EMPTY}: 0 bytes")
        source: Any = io.BytesIO(video)
    else:
        source = os.fspath(video)
        try:
            size = os.stat(source).st_size
        except FileNotFoundError:
            return VideoProbe(error=f"{MISSING}: {source} does not exist")
        except OSError as err:
            return VideoProbe(error=f"{MISSING}: {source} cannot be read ({err})")
        if size == 0:
            return VideoProbe(error=f"{EMPTY}: {source} has 0 bytes")
    try:
        with av.open(source, metadata_errors="ignore") as container:
            return _probe_container(container)
    except EOFError as err:
        return VideoProbe(error=f"{TRUNCATED}: the data ends early ({err})")
    except (av.error.FFmpegError, OSError, ValueError, IndexError, StopIteration) as err:
        cut = _cut_box(source) if isinstance(source, str) else None
        if cut:
            return VideoProbe(error=f"{TRUNCATED}: {cut}")
        return VideoProbe(error=f"{UNDECODABLE}: {type(err).__name__}: {err}")


def _cut_box(path: str) -> str | None:
    """For an MP4/MOV file, the top-level box that runs past the end of the file (reads box headers only)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(8)
            if len(head) < 8 or head[4:8] not in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
                return None
            offset = 0
            while offset + 8 <= size:
                handle.seek(offset)
                header = handle.read(16)
                box_size, kind = int.from_bytes(header[:4], "big"), header[4:8].decode("latin-1")
                if box_size == 1 and len(header) == 16:
                    box_size = int.from_bytes(header[8:16], "big")
                if box_size == 0:  # the last box runs to the end of the file
                    return None
                if box_size < 8 or not all(32 <= b < 127 for b in header[4:8]):
                    return None  # not a box structure: garbage rather than a cut-short file
                if offset + box_size > size:
                    return f"the `{kind}` box needs {offset + box_size} bytes, the file has {size} (cut short)"
                offset += box_size
    except OSError:
        return None
    return None


def _probe_container(container) -> VideoProbe:
    if not container.streams.video:
        return VideoProbe(error=f"{UNDECODABLE}: no video stream")
    stream = container.streams.video[0]
    time_base = stream.time_base
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    # The video's own start: a video stream may start later than the audio (the container's start).
    if stream.start_time is not None and time_base is not None:
        video_start = float(stream.start_time * time_base)
    else:
        video_start = (container.start_time or 0) / av.time_base
    if stream.duration is not None and time_base is not None:
        duration = float(stream.duration * time_base)
        stated_end, own_duration = video_start + duration, True
    elif container.duration is not None:
        # The container's duration spans every stream: the video may end before the audio, so the end of the data
        # of all streams is what must reach it.
        stated_end = ((container.start_time or 0) + container.duration) / av.time_base
        duration, own_duration = stated_end - video_start, False
    else:
        duration, stated_end, own_duration = None, None, False
    context = stream.codec_context
    context.thread_count = 1
    info = VideoProbe(duration, fps, context.width or None, context.height or None, context.name)
    first = _decodes_from_keyframe(context, container.demux(stream))
    if first is None:
        return _failed(info, f"{UNDECODABLE}: the first frame does not decode")
    if first.pts is not None and time_base is not None and duration is not None:
        # Frames before the first keyframe (a transport stream cut mid-GOP) are never shown.
        shown_start = float(first.pts * time_base)
        if shown_start > video_start:
            duration, video_start = duration - (shown_start - video_start), shown_start
            info = VideoProbe(duration, fps, info.width, info.height, info.codec)
    if stated_end is None or time_base is None:
        return info
    tail = _read_tail(container, stream, stated_end, own_duration)
    if tail.corrupt is not None:
        return _failed(info, f"{TRUNCATED}: a packet at {tail.corrupt:.2f} s is cut short")
    if tail.video_end is None:
        return _failed(info, f"{TRUNCATED}: no video data after the last keyframe (stated duration {duration:.2f} s)")
    tolerance = max(3.0 / fps if fps else 0.1, 0.25)
    if tail.data_end < stated_end - tolerance:
        return _failed(
            info,
            f"{TRUNCATED}: the data ends at {tail.data_end - video_start:.2f} s of {stated_end - video_start:.2f} s",
        )
    # No keyframe in the tail even from the start: the search seeks of MPEG-TS/PS land after the stream's only
    # keyframe, which the first check decoded.
    if tail.from_key and _decodes_from_keyframe(context, iter(tail.from_key)) is None:
        return _failed(info, f"{UNDECODABLE}: the last keyframe does not decode")
    if not own_duration:
        info = VideoProbe(tail.video_end - video_start, fps, info.width, info.height, info.codec)
    return info


@dataclass
class _Tail:
    """What the packets after the video's last keyframe say: where the data ends (seconds), the video packets from
    the last keyframe on (a few), and the time of a packet cut short."""

    data_end: float = 0.0
    video_end: float | None = None
    from_key: list = field(default_factory=list)
    corrupt: float | None = None


def _read_tail(container, stream, stated_end: float, video_only: bool) -> _Tail:
    """Seek to the video's last keyframe and read every packet to the end of the file.

    Seeks by timestamp search (MPEG-TS/PS) can land after that keyframe: then the seek goes one second earlier,
    then twice as far each time, until the packets read start with a keyframe or the seek reaches the start.
    """
    time_base = stream.time_base
    target = int(stated_end / time_base)
    start = stream.start_time or 0
    back = 0
    streams = [stream] if video_only else list(container.streams.video[:1]) + list(container.streams.audio)
    while True:
        container.seek(max(start, target - back), stream=stream, backward=True, any_frame=False)
        tail = _Tail()
        for packet in container.demux(*streams):
            if packet.pts is None or not packet.size:
                continue
            seconds = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            is_video = packet.stream.index == stream.index
            if packet.is_corrupt and is_video:
                tail.corrupt = float(packet.pts * packet.time_base)
                return tail
            tail.data_end = max(tail.data_end, seconds)
            if not is_video or packet.is_discard:
                continue
            tail.video_end = seconds if tail.video_end is None else max(tail.video_end, seconds)
            if packet.is_keyframe:
                tail.from_key = [packet]
            elif tail.from_key and len(tail.from_key) <= _DECODE_WINDOW:
                # A bounded number of packets: enough to get a frame out of the decoder.
                tail.from_key.append(packet)
        if tail.from_key or target - back <= start:
            return tail
        back = max(2 * back, int(1 / time_base))


def _decodes_from_keyframe(context, packets):
    """The first frame that decoding from the first keyframe among `packets` gives, or `None`.

    Packets before that keyframe cannot decode; those the demuxer marks discard (the pre-roll an MP4 edit list
    hides) decode to no frame, so packets are fed until a frame comes out, up to `_DECODE_WINDOW` packets past
    the first shown one. The decoder is reset afterwards.
    """
    fed, shown = 0, None
    try:
        for packet in packets:
            if not packet.size:
                break
            if not fed and not packet.is_keyframe:
                continue
            fed += 1
            if shown is None and not packet.is_discard:
                shown = fed
            frames = context.decode(packet)
            if frames:
                return frames[0]
            if shown is not None and fed - shown >= _DECODE_WINDOW:
                break
        frames = context.decode(None) if fed else []
        return frames[0] if frames else None
    finally:
        context.flush_buffers()


def _failed(info: VideoProbe, error: str) -> VideoProbe:
    return VideoProbe(info.duration, info.fps, info.width, info.height, info.codec, error)
