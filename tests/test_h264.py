"""`vstar.h264`: slice headers of real x264 streams, and which reference pictures the wanted ones depend on.

Run: `python -m pytest tests/test_h264.py -q`
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from vstar import h264

SUPERFAST_PYRAMID = {"g": "24", "bframes": "3", "preset": "superfast", "b_strategy": "0"}


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory) -> tuple[Path, Path]:
    """An x264 superfast clip (one reference for P-frames, B-pyramid) in MP4, and its MPEG-TS copy (Annex B)."""
    root = tmp_path_factory.mktemp("h264")
    mp4, ts = root / "pyramid.mp4", root / "pyramid.ts"
    texture = np.random.default_rng(0).integers(0, 256, (48, 64 + 3 * 60, 3), dtype=np.uint8)
    with av.open(str(mp4), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25, options=SUPERFAST_PYRAMID)
        stream.height, stream.width, stream.pix_fmt = 48, 64, "yuv420p"
        for t in range(60):
            frame = av.VideoFrame.from_ndarray(texture[:, 3 * t : 3 * t + 64].copy(), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with av.open(str(mp4)) as src, av.open(str(ts), "w", format="mpegts") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.size:
                packet.stream = out
                dst.mux(packet)
    return mp4, ts


def _pictures(path: Path) -> tuple[list[h264.Picture], list[bool]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fmt = h264.NalFormat.from_extradata(stream.codec_context.extradata)
        packets = [p for p in container.demux(stream) if p.size]
        coded = [fmt.scan(p) for p in packets]
        return [c.picture() for c in coded], [p.is_keyframe for p in packets]


def test_slice_headers_of_an_x264_stream(pyramid):
    mp4, ts = pyramid
    pictures, keyframes = _pictures(mp4)
    assert all(p.problem is None for p in pictures)
    kinds = Counter((p.slices[0].kind, p.slices[0].ref) for p in pictures)
    with av.open(str(mp4)) as container:
        # AVPictureType: 1 I, 2 P, 3 B
        decoded = Counter(int(frame.pict_type) for frame in container.decode(video=0))
    assert kinds[(h264._I, True)] == decoded[1] == sum(keyframes)
    assert sum(n for (kind, _), n in kinds.items() if kind == h264._P) == decoded[2]
    assert kinds[(h264._B, True)] > 0 and kinds[(h264._B, False)] > 0  # the B-pyramid
    assert [p.slices[0].idr for p in pictures] == keyframes
    # Annex B in MPEG-TS: the same slices, the same header sizes.
    annex_b, _ = _pictures(ts)
    assert [p.slices for p in annex_b] == [p.slices for p in pictures]


def test_headers_only_keeps_every_nal_and_cuts_slices(pyramid):
    mp4, _ = pyramid
    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        fmt = h264.NalFormat.from_extradata(stream.codec_context.extradata)
        packet = [p for p in container.demux(stream) if p.size][2]
        data = bytes(packet)
    picture = fmt.scan(packet).picture()
    cut = fmt.headers_only(data, picture.header_bytes)
    before, after = fmt.nals(data), fmt.nals(cut)
    assert len(after) == len(before) and len(cut) < len(data)
    for (start, _), (cut_start, cut_end) in zip(before, after, strict=True):
        assert cut[cut_start:cut_end] == data[start : start + cut_end - cut_start]
    assert fmt.scan(cut).picture().slices == picture.slices


def _slice(kind, frame_num, poc, ref=True, idr=False, lists=((), ()), unmark=None, refs=(1, 1)) -> h264.Picture:
    s = h264.Slice(kind, frame_num, idr, ref, refs, (list(lists[0]), list(lists[1])), unmark, 8, 16, 4, 0, poc, 0, 64)
    return h264.Picture([s])


def _group(last_p_names_the_p_before: bool) -> list[h264.Picture]:
    """Decode order I0 P8 B4(ref) b2 b6 P16 (display order counts): B4 is the reference B-frame of b2 and b6."""
    # P16 (frame_num 3) names frame_num 1 (P8) with a difference of 2, or leaves the default order, which starts
    # with the most recently decoded reference picture: B4.
    commands = [(0, 1)] if last_p_names_the_p_before else []
    return [
        _slice(h264._I, 0, 0, idr=True),
        _slice(h264._P, 1, 8),
        _slice(h264._B, 2, 4),
        _slice(h264._B, 3, 2, ref=False),
        _slice(h264._B, 3, 6, ref=False),
        _slice(h264._P, 3, 16, lists=(commands, ())),
    ]


def test_a_reference_b_frame_is_removable_only_when_no_needed_picture_lists_it():
    assert h264.removable(_group(True), needed={5}) == {2}
    assert h264.removable(_group(False), needed={5}) == set()
    # b2's list 1 starts with the nearest later picture, B4: needed (P16 comes after b2: never decoded for it).
    assert h264.removable(_group(True), needed={3}) == {5}
    # P8 alone needs only the IDR picture; P16 comes after it and is not decoded either way.
    assert h264.removable(_group(True)[:2], needed={1}) == set()


def test_anything_not_modelled_removes_nothing():
    gap = _group(True)
    gap[5] = _slice(h264._P, 4, 16, lists=([(0, 2)], ()))  # frame_num jumps from 2 to 4
    assert h264.removable(gap, needed={5}) == set()
    long_term = _group(True)
    long_term[5] = _slice(h264._P, 3, 16, lists=([(2, 0)], ()))
    assert h264.removable(long_term, needed={5}) == set()
    problem = _group(True)
    problem[2] = h264.Picture([], "field pictures")
    assert h264.removable(problem, needed={5}) == set()
    not_idr = _group(True)[1:]
    assert h264.removable(not_idr, needed={4}) == set()
