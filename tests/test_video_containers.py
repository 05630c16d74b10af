"""Exact frames on the containers and cuts found in real datasets, against FFmpeg's own presentation.

Every file is made here with PyAV: H.264 stream copies into MP4, Matroska, FLV, MPEG-TS and M2TS; MPEG-4 in AVI, VP9
in WebM; MPEG-2 in program and transport streams; stream-copy cuts like `ffmpeg -ss A -i in.mp4 -c copy out.mp4` (the
MP4 muxer writes an edit list that hides the pre-roll packets); a transport stream starting mid-GOP; phone-style
rotated MP4 and MOV files; a video that starts a second after its audio; a raw H.264 stream without times; x264's
B-pyramid (superfast preset) in MP4, MPEG-TS, with three slices per frame, and cut. The
reference is PyAV decoding every frame in order (what a player shows), turned by the display rotation; every sampled
frame must equal it exactly, at the claimed index and time.

Run: `python -m pytest tests/test_video_containers.py -q`
"""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vstar import video
from vstar.sources.folder import build_folder
from vstar.sources.probe import probe_video
from vstar.video import sample_frames

FPS = 25
SIZE = (48, 64)  # height, width


def _texture_frames(count: int, seed: int = 0, size: tuple[int, int] = SIZE) -> list[np.ndarray]:
    """A moving random texture: every frame differs, so a wrong frame cannot pass for the right one."""
    height, width = size
    texture = np.random.default_rng(seed).integers(0, 256, (height, width + 3 * count, 3), dtype=np.uint8)
    return [texture[:, 3 * t : 3 * t + width].copy() for t in range(count)]


# x264's fast presets: one reference for P-frames and the B-pyramid (a reference B-frame in every group of B-frames),
# B-frames in every group (the moving texture would otherwise get none); `vstar.h264` then finds reference B-frames
# that no target depends on.
B_PYRAMID = {"g": "24", "bframes": "3", "preset": "superfast", "b_strategy": "0"}


def _encode(
    path: Path,
    fmt: str,
    codec: str = "libx264",
    count: int = 90,
    rotation: float | None = None,
    options: dict[str, str] | None = None,
    size: tuple[int, int] = SIZE,
) -> Path:
    with av.open(str(path), "w", format=fmt) as container:
        if codec == "libx264":
            # B-frames and a keyframe every 24 frames: several keyframe intervals, reordered frames.
            stream = container.add_stream(codec, rate=FPS, options=options or {"g": "24", "bframes": "3"})
        elif codec != "mpeg2video":
            stream = container.add_stream(codec, rate=FPS, options={"g": "24"})
        else:
            # MPEG-2 with I-frames every 12 and two B-frames between anchors; no scene-cut I-frames.
            stream = container.add_stream(
                codec, rate=FPS, options={"g": "12", "bf": "2", "sc_threshold": "1000000000"}
            )
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for array in _texture_frames(count, size=size):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    return path


def _remux(source: Path, path: Path, fmt: str, cut: float | None = None, first_packet: int = 0, **options) -> Path:
    """Stream copy into another container. `cut` (seconds) cuts like `ffmpeg -ss cut -c copy`: packets from the
    keyframe before `cut`, timestamps shifted so `cut` becomes 0 (the pre-roll gets negative times). `first_packet`
    drops the packets before it in decode order instead, as a capture that starts mid-GOP."""
    with av.open(str(source)) as src, av.open(str(path), "w", format=fmt, options=options) as dst:
        inp = src.streams.video[0]
        out = dst.add_stream_from_template(inp)
        packets = [p for p in src.demux(inp) if p.size][first_packet:]
        shift = 0
        if cut is not None:
            shift = int(cut / inp.time_base)
            key_dts = max(p.dts for p in packets if p.is_keyframe and p.pts <= shift)
            packets = [p for p in packets if p.dts >= key_dts]
        for packet in packets:
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = out
            dst.mux(packet)
    return path


def _late_video(path: Path, fmt: str, offset: float = 1.0, seconds: float = 3.0) -> Path:
    """A video stream starting `offset` seconds after its (silent AAC) audio, both ending together."""
    with av.open(str(path), "w", format=fmt) as container:
        vstream = container.add_stream("libx264", rate=FPS, options={"g": "24"})
        vstream.height, vstream.width = SIZE
        vstream.pix_fmt = "yuv420p"
        astream = container.add_stream("aac", rate=48000)
        frames = _texture_frames(int(seconds * FPS))
        shown = 0
        for k in range(int((seconds + offset) * 48000 / 1024)):
            audio = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            audio.sample_rate, audio.pts = 48000, k * 1024
            container.mux(astream.encode(audio))
            while shown < len(frames) and shown / FPS + offset <= (k + 1) * 1024 / 48000:
                frame = av.VideoFrame.from_ndarray(frames[shown], format="rgb24")
                frame.pts, frame.time_base = shown + round(offset * FPS), Fraction(1, FPS)
                container.mux(vstream.encode(frame))
                shown += 1
        container.mux(vstream.encode())
        container.mux(astream.encode())
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("containers")
    mp4 = _encode(root / "h264.mp4", "mp4")
    ts = _remux(mp4, root / "h264.ts", "mpegts")
    pyramid = _encode(root / "pyramid.mp4", "mp4", options=B_PYRAMID)
    return {
        "mp4": mp4,
        "mkv": _remux(mp4, root / "h264.mkv", "matroska"),
        "flv": _remux(mp4, root / "h264.flv", "flv"),
        "ts": ts,
        "m2ts": _remux(mp4, root / "h264.m2ts", "mpegts", mpegts_m2ts_mode="1"),
        "ts mid-GOP start": _remux(ts, root / "midgop.ts", "mpegts", first_packet=10),
        "avi mpeg4": _encode(root / "mpeg4.avi", "avi", codec="mpeg4"),
        "webm vp9": _encode(root / "vp9.webm", "webm", codec="libvpx-vp9"),
        "mov rotate 90": _encode(root / "rot90.mov", "mov", rotation=-90),
        "mpeg2 ps": _encode(root / "mpeg2.mpg", "mpeg", codec="mpeg2video"),
        "mpeg2 ts": _encode(root / "mpeg2.ts", "mpegts", codec="mpeg2video"),
        # Cut 9 frames after a keyframe (0.96 s, 1.92 s, ...): 9 pre-roll packets plus reordered B-frames.
        "mp4 cut, long pre-roll": _remux(mp4, root / "cut.mp4", "mp4", cut=1.32),
        # Cut one frame after a keyframe: one pre-roll packet.
        "mp4 cut, one pre-roll packet": _remux(mp4, root / "cut1.mp4", "mp4", cut=1.0),
        "mkv video after audio": _late_video(root / "late.mkv", "matroska"),
        "ts video after audio": _late_video(root / "late.ts", "mpegts"),
        "mp4 rotate 90": _encode(root / "rot90.mp4", "mp4", rotation=-90),
        "mp4 rotate 180": _encode(root / "rot180.mp4", "mp4", rotation=180),
        "mp4 rotate 270": _encode(root / "rot270.mp4", "mp4", rotation=90),
        "mp4 B-pyramid": pyramid,
        "ts B-pyramid": _remux(pyramid, root / "pyramid.ts", "mpegts"),
        "mp4 B-pyramid, 3 slices": _encode(root / "slices.mp4", "mp4", options={**B_PYRAMID, "slices": "3"}),
        "mp4 B-pyramid cut": _remux(pyramid, root / "pyramid-cut.mp4", "mp4", cut=1.32),
        # No IDR after the first frame: P-frames with a recovery point are flagged keyframes (low-latency streams);
        # wide enough that the refresh takes several frames.
        "mp4 intra refresh": _encode(
            root / "refresh.mp4",
            "mp4",
            options={"x264-params": "intra-refresh=1:keyint=24", "bframes": "3"},
            size=(96, 160),
        ),
    }


def _reference(path: Path) -> tuple[list[float], list[np.ndarray]]:
    """Every frame FFmpeg presents, in order, turned by the display rotation, and its time from the first."""
    times, frames = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            array = frame.to_ndarray(format="rgb24")
            times.append(frame.time)
            frames.append(np.rot90(array, round(frame.rotation / 90) % 4))
    return [t - times[0] for t in times], frames


@pytest.fixture(scope="module")
def references(files) -> dict[str, tuple[list[float], list[np.ndarray]]]:
    return {name: _reference(path) for name, path in files.items()}


REQUESTS = [{"num_frames": 8}, {"num_frames": None}, {"fps": 3}, {"num_frames": 3, "start": 1.0, "end": 2.5}]
MODES = ["one thread", "frame threads", "parallel runs", "bytes"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "name",
    [
        "mp4", "mkv", "flv", "avi mpeg4", "webm vp9", "ts", "m2ts", "ts mid-GOP start", "mpeg2 ps", "mpeg2 ts",
        "mp4 cut, long pre-roll", "mp4 cut, one pre-roll packet", "mkv video after audio", "ts video after audio",
        "mp4 rotate 90", "mp4 rotate 180", "mp4 rotate 270", "mov rotate 90", "mp4 B-pyramid", "ts B-pyramid",
        "mp4 B-pyramid, 3 slices", "mp4 B-pyramid cut", "mp4 intra refresh",
    ],
)  # fmt: skip
def test_frames_are_the_ones_a_player_shows(files, references, name, mode, monkeypatch):
    monkeypatch.setattr(video, "FRAME_THREADING_MIN_PIXELS", 10**9 if mode == "one thread" else 0)
    monkeypatch.setattr(video, "_CORES", 2 if mode == "parallel runs" else 1)
    times, frames = references[name]
    source = {"bytes": files[name].read_bytes(), "path": None} if mode == "bytes" else files[name]
    for request in REQUESTS:
        if request.get("num_frames", 1) is None:
            request = {"num_frames": len(frames)}  # every frame
        clip = sample_frames(source, **request)
        start, end = request.get("start") or 0.0, request.get("end") or float("inf")
        window = [i for i, t in enumerate(times) if start - 1e-6 <= t < end - 1e-6]
        assert clip.window_num_frames == len(window), (name, request)
        for index, timestamp, frame in zip(clip.indices, clip.timestamps, clip.frames, strict=True):
            expected = frames[window[index]]
            assert frame.shape == expected.shape, (name, request, index)
            difference = int(np.abs(frame.astype(np.int16) - expected).max())
            assert difference == 0, f"{name} {request}: frame {index} differs by up to {difference}"
            assert timestamp == pytest.approx(times[window[index]], abs=1e-6), (name, request, index)


def test_cuts_count_only_the_shown_frames(files, references):
    # The cut at 1.32 s starts 9 frames after the keyframe at 0.96 s: 90 - 33 = 57 frames are shown, the first one
    # is the frame at 1.32 s of the original, and the pre-roll packets are not frames.
    clip = sample_frames(files["mp4 cut, long pre-roll"], num_frames=57)
    assert clip.window_num_frames == 57 and clip.indices == list(range(57))
    _, original = references["mp4"]
    np.testing.assert_array_equal(clip.frames[0], original[33])
    assert clip.timestamps[:2] == pytest.approx([0.0, 0.04])
    one = sample_frames(files["mp4 cut, one pre-roll packet"], num_frames=3)
    assert one.window_num_frames == 65
    with av.open(str(files["mp4 cut, one pre-roll packet"])) as container:
        discarded = sum(p.is_discard for p in container.demux(video=0) if p.size)
    assert discarded == 1  # the fixture is the case it claims to be


def test_rotation_turns_frames_upright_as_players_do(tmp_path):
    # A phone held upright records landscape frames tagged "rotate 90": players turn them 90 degrees clockwise, so
    # the stored top-left corner ends up top-right.
    frames = np.zeros((4, *SIZE, 3), dtype=np.uint8)
    frames[:, :8, :8] = 255
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "0"})
        stream.height, stream.width = SIZE
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(-90)
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    clip = sample_frames(path, num_frames=2)
    assert clip.rotation == 90 and clip.frames.shape == (2, SIZE[1], SIZE[0], 3)
    assert (clip.width, clip.height) == (SIZE[0], SIZE[1])
    corner = clip.frames[0][:8, -8:].mean()
    assert corner > 200 and clip.frames[0][:8, :8].mean() < 50


def test_more_frames_than_the_window_holds_warns(files, caplog):
    with caplog.at_level(logging.WARNING, logger="vstar.video"):
        clip = sample_frames(files["mp4"], num_frames=20, start=1.0, end=1.4)
    assert clip.window_num_frames == 10 and len(clip.frames) == 20
    assert "20 frames asked for but the window [1.0, 1.4] s holds only 10 frames" in caplog.text
    assert "h264.mp4" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vstar.video"):
        sample_frames(files["mp4"], num_frames=8)
    assert not caplog.text


def test_seeks_in_transport_streams_are_checked(files, references, monkeypatch):
    # A timestamp search in MPEG-TS lands after the keyframe asked for; each seek is checked and goes earlier.
    seeks = []
    original = video._Reader._seek

    def counting(self, key):
        packets, landed = original(self, key)
        seeks.append((key, landed))
        return packets, landed

    monkeypatch.setattr(video._Reader, "_seek", counting)
    times, frames = references["ts"]
    clip = sample_frames(files["ts"], num_frames=4)
    assert clip.indices == [11, 33, 56, 78]
    for index, frame in zip(clip.indices, clip.frames):
        np.testing.assert_array_equal(frame, frames[index])
    assert len(seeks) == 4 and all(landed is not None for _, landed in seeks[1:])


@pytest.mark.parametrize("name", ["mp4 B-pyramid", "ts B-pyramid", "mp4 B-pyramid, 3 slices", "mp4 B-pyramid cut"])
def test_reference_b_frames_no_target_needs_are_not_decoded(files, references, name, monkeypatch):
    # On the way to a target, x264's reference B-frames that nothing decoded refers to go to the decoder as slice
    # headers only (its reference bookkeeping stays exact); the frames are still the player's.
    cut = []
    original = video._Reader._headers_only

    def counting(self, packet, header_bytes):
        cut.append(packet.pts)
        return original(self, packet, header_bytes)

    monkeypatch.setattr(video._Reader, "_headers_only", counting)
    times, frames = references[name]
    for request in ({"num_frames": 2}, {"num_frames": 5}, {"num_frames": 1, "start": 2.0}):
        clip = sample_frames(files[name], **request)
        window = [i for i, t in enumerate(times) if t >= (request.get("start") or 0.0) - 1e-6]
        for index, frame in zip(clip.indices, clip.frames, strict=True):
            np.testing.assert_array_equal(frame, frames[window[index]])
    assert len(cut) >= 3, cut


def test_other_streams_decode_every_reference_frame(files, monkeypatch):
    # x264's default preset (three references, B-frames chosen per frame) and other codecs: nothing is cut.
    monkeypatch.setattr(video._Reader, "_headers_only", lambda *args: pytest.fail("a picture was cut"))
    for name in ("mp4", "ts", "mpeg2 ps", "webm vp9"):
        sample_frames(files[name], num_frames=2)


@pytest.mark.parametrize(
    "name",
    ["mp4", "mkv", "flv", "ts", "m2ts", "ts mid-GOP start", "mpeg2 ps", "mpeg2 ts", "mp4 cut, long pre-roll",
     "mp4 cut, one pre-roll packet", "mkv video after audio", "ts video after audio", "mp4 rotate 90",
     "mp4 rotate 270"],
)  # fmt: skip
def test_probe_accepts_what_decodes(files, references, name):
    probe = probe_video(files[name])
    assert probe.ok, probe.error
    times, _ = references[name]
    assert probe.duration == pytest.approx(times[-1] + 1 / FPS, abs=0.05)


def test_probe_of_an_audio_longer_than_the_video(tmp_path):
    # Matroska states one duration for the file: a video ending 2 s before its audio is not truncated.
    path = tmp_path / "long-audio.mkv"
    with av.open(str(path), "w", format="matroska") as container:
        vstream = container.add_stream("libx264", rate=FPS)
        vstream.height, vstream.width = SIZE
        vstream.pix_fmt = "yuv420p"
        astream = container.add_stream("aac", rate=48000)
        for k in range(int(4 * 48000 / 1024)):
            audio = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            audio.sample_rate, audio.pts = 48000, k * 1024
            container.mux(astream.encode(audio))
            if k < 2 * 48000 / 1024:
                for array in _texture_frames(1, seed=k):
                    container.mux(vstream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(vstream.encode())
        container.mux(astream.encode())
    probe = probe_video(path)
    assert probe.ok, probe.error
    clip = sample_frames(path, num_frames=4)
    assert probe.duration == pytest.approx(clip.window_num_frames / FPS, abs=0.05)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert probe_video(cut).error.startswith("truncated")


def test_folder_builds_every_container_and_reports_the_rest(files, tmp_path):
    root = tmp_path / "clips"
    names = {"a.ts": "ts", "b.m2ts": "m2ts", "c.mpg": "mpeg2 ps", "d.flv": "flv", "e.mp4": "mp4 cut, long pre-roll"}
    for target, name in names.items():
        (root / "walking").mkdir(parents=True, exist_ok=True)
        (root / "walking" / target).write_bytes(files[name].read_bytes())
    (root / "walking" / "f.xyz").write_bytes(files["mp4"].read_bytes())
    (root / "walking" / ".DS_Store").write_bytes(b"\x00")
    out = build_folder(videos=str(root), output=str(tmp_path / "out"))
    report = json.loads((out / "build_report.json").read_text())
    assert report["rows_written"] == 5 and report["rows_read"] == 6
    (skipped,) = report["skipped"]
    assert skipped["row"] == "walking/f.xyz" and skipped["reason"].startswith("unknown extension")
    assert "--extensions" in skipped["reason"]


def test_raw_stream_without_times_is_decoded_in_order(files, references, tmp_path):
    # An H.264 elementary stream (`.h264`) carries no timestamps: frames are counted in decode output order.
    raw = _remux(files["mp4"], tmp_path / "raw.h264", "h264")
    _, frames = references["mp4"]
    clip = sample_frames(raw, num_frames=8)
    assert clip.window_num_frames == 90 and clip.indices == [5, 16, 28, 39, 50, 61, 73, 84]
    assert clip.timestamps == pytest.approx([i / FPS for i in clip.indices])
    for index, frame in zip(clip.indices, clip.frames):
        np.testing.assert_array_equal(frame, frames[index])
