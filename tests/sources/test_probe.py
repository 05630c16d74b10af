"""Video probing from container metadata and the bounded parallel map.

Run: `python -m pytest tests/sources/test_probe.py -q`
"""

from __future__ import annotations

import os

import av
import numpy as np
import pytest

from vstar.sources.probe import parallel_map, probe_video


def _clip(path, num_frames=24, fps=12, size=(48, 64), gop=6, faststart=True) -> str:
    """An H.264 mp4 with a keyframe every `gop` frames; `faststart` puts the index before the data."""
    options = {"movflags": "faststart"} if faststart else {}
    rng = np.random.default_rng(num_frames)
    with av.open(str(path), "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt, stream.options = "yuv420p", {"g": str(gop)}
        for _ in range(num_frames):
            frame = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return str(path)


def _cut(source, target, fraction) -> str:
    data = open(source, "rb").read()
    with open(target, "wb") as handle:
        handle.write(data[: int(len(data) * fraction)])
    return str(target)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return _clip(tmp_path_factory.mktemp("probe") / "good.mp4")


def test_probe_reads_container_metadata(clip):
    probe = probe_video(clip)
    assert probe.ok, probe.error
    assert probe.columns() == {"duration": 2.0, "fps": 12.0, "width": 64, "height": 48, "codec": "h264"}
    assert probe_video(open(clip, "rb").read()).columns() == probe.columns()


@pytest.mark.parametrize("fraction", [0.3, 0.8, 0.995])
def test_truncated_files_are_detected(clip, tmp_path, fraction):
    probe = probe_video(_cut(clip, tmp_path / "cut.mp4", fraction))
    assert probe.error.startswith("truncated"), probe.error
    assert probe.duration == 2.0  # the header is intact: only the data is missing


def test_cut_before_the_index_at_the_end_is_truncated(tmp_path):
    clip = _clip(tmp_path / "moov-last.mp4", faststart=False)
    assert probe_video(clip).ok
    assert probe_video(_cut(clip, tmp_path / "cut.mp4", 0.9)).error.startswith("truncated")


def test_missing_empty_and_garbage(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(os.urandom(4000))
    assert probe_video(tmp_path / "nope.mp4").error.startswith("missing")
    assert probe_video(None).error.startswith("missing")
    assert probe_video(tmp_path / "empty.mp4").error.startswith("empty")
    assert probe_video(tmp_path / "garbage.mp4").error.startswith("undecodable")


def test_parallel_map_keeps_order_and_reads_ahead_boundedly(clip, tmp_path):
    consumed = []

    def items():
        for i in range(60):
            consumed.append(i)
            yield (i, clip if i % 7 else str(tmp_path / f"missing-{i}.mp4"))

    results = parallel_map(probe_video, items(), num_proc=2, batch_size=4, arg=lambda item: item[1])
    first = next(results)
    assert len(consumed) <= 2 * 4 * 2  # two batches of batch_size * num_proc in flight, not the whole input
    rest = list(results)
    assert [item[0] for item, _ in [first, *rest]] == list(range(60))
    assert [probe.ok for _, probe in [first, *rest]] == [bool(i % 7) for i in range(60)]
    serial = [probe for _, probe in parallel_map(probe_video, [clip, None], num_proc=1)]
    assert serial[0].ok and serial[1].error.startswith("missing")
