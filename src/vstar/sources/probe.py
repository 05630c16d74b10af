"""Video probing from container metadata, and an order-keeping parallel map with bounded memory.

`probe_video` reads duration, frame rate, size and codec from the container header, decodes one frame at the start
and demuxes (without decoding) the packets after the last keyframe, so a missing, empty, truncated or undecodable
file is found without decoding every frame. `parallel_map` runs such work in worker processes while keeping at
most two batches in flight, so memory stays flat however many clips stream through.

```python
from vstar.sources.probe import probe_video
probe_video("clip.mp4")  # VideoProbe(duration=10.0, fps=30.0, width=340, height=256, codec='h264', error=None)
```

Benchmark: `python bench/bench_sources.py`.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any, TypeVar

import av

T = TypeVar("T")
R = TypeVar("R")

# Kinds of probe failure, the first word of `VideoProbe.error` (the build report groups skipped rows by it).
MISSING, EMPTY, TRUNCATED, UNDECODABLE = "missing", "empty", "truncated", "undecodable"


@dataclass(frozen=True)
class VideoProbe:
    """What the container says about a video, or why it cannot be used.

    Args:
        duration: seconds (stream duration, else container duration).
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

    Reads the header, decodes the first frame, then seeks to the last keyframe and demuxes the remaining packets:
    a file cut short has packets flagged corrupt, none at all, or packets ending well before the stated duration.

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
    if stream.duration is not None and time_base is not None:
        duration = float(stream.duration * time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = None
    context = stream.codec_context
    context.thread_count = 1
    info = VideoProbe(duration, fps, context.width or None, context.height or None, context.name)
    if not _decodes(context, next((p for p in container.demux(stream) if p.size), None)):
        return _failed(info, f"{UNDECODABLE}: the first frame does not decode")
    if duration is None or time_base is None:
        return info
    start = stream.start_time or 0
    end_pts = start + int(duration / time_base)
    container.seek(end_pts, stream=stream, backward=True, any_frame=False)
    last_end, key_packet, count = None, None, 0
    for packet in container.demux(stream):
        if packet.pts is None or not packet.size:
            continue
        if packet.is_corrupt:
            return _failed(info, f"{TRUNCATED}: a packet at {float(packet.pts * time_base):.2f} s is cut short")
        count += 1
        if key_packet is None:
            key_packet = packet
        packet_end = packet.pts + (packet.duration or 0)
        last_end = packet_end if last_end is None else max(last_end, packet_end)
    if not count:
        return _failed(info, f"{TRUNCATED}: no video data after the last keyframe (stated duration {duration:.2f} s)")
    data_end = float((last_end - start) * time_base)
    tolerance = max(3.0 / fps if fps else 0.1, 0.25)
    if data_end < duration - tolerance:
        return _failed(info, f"{TRUNCATED}: video data ends at {data_end:.2f} s of {duration:.2f} s")
    if not _decodes(context, key_packet):
        return _failed(info, f"{UNDECODABLE}: the last keyframe does not decode")
    return info


def _decodes(context, packet) -> bool:
    """Whether one packet decodes to a frame (draining the decoder, then resetting it for the next packet)."""
    if packet is None:
        return False
    frames = list(context.decode(packet)) + list(context.decode(None))
    context.flush_buffers()
    return bool(frames)


def _failed(info: VideoProbe, error: str) -> VideoProbe:
    return VideoProbe(info.duration, info.fps, info.width, info.height, info.codec, error)


def _start_method() -> str:
    # Workers only run PyAV code; forking avoids re-importing `datasets` in every worker.
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def parallel_map(
    fn: Callable[[R], Any],
    items: Iterable[T],
    num_proc: int = 1,
    batch_size: int = 64,
    arg: Callable[[T], R] | None = None,
) -> Iterator[tuple[T, Any]]:
    """Yield `(item, fn(arg(item)))` in input order, computing `fn` in `num_proc` worker processes.

    Items are consumed lazily: at most two batches of `batch_size * num_proc` items are in flight, so memory does
    not grow with the number of items (`multiprocessing.Pool.imap` would read the whole input ahead).

    Args:
        fn: a picklable (module-level) function.
        items: any iterable, consumed once.
        num_proc: worker processes; 1 runs everything in this process.
        batch_size: items per worker task batch.
        arg: what of each item is sent to `fn` (default: the item itself); the item stays in this process.
    """
    arg = arg or (lambda item: item)
    if num_proc <= 1:
        for item in items:
            yield item, fn(arg(item))
        return
    iterator = iter(items)
    chunk = batch_size * num_proc
    with multiprocessing.get_context(_start_method()).Pool(num_proc) as pool:
        pending: deque = deque()
        while True:
            batch = list(islice(iterator, chunk))
            if batch:
                pending.append(
                    (batch, pool.map_async(fn, [arg(item) for item in batch], chunksize=max(1, batch_size // 8)))
                )
            if pending and (len(pending) > 1 or not batch):
                done_items, result = pending.popleft()
                yield from zip(done_items, result.get())
            if not batch and not pending:
                return
