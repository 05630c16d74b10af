"""Video probing from container metadata.

Run: `python -m pytest tests/sources/test_probe.py -q`
"""

from __future__ import annotations

import os

import av
import numpy as np
import pytest

from vstar.sources.probe import probe_video


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
