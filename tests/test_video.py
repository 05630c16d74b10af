"""Frame sampling with PyAV on real H.264 files: exact frames, windows, fps sampling, bad input."""

import numpy as np
import pytest

from vstar.video import VideoDecodeError, encode_video, sample_frames, write_video


def numbered_frames(count: int, size: int = 32) -> np.ndarray:
    """Frames whose brightness encodes their index, so a decoded frame tells which one it is."""
    frames = np.zeros((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        frames[i] = (i * 255) // max(1, count - 1)
    return frames


def frame_index(frame: np.ndarray, count: int) -> int:
    return round(float(frame.mean()) * (count - 1) / 255)


@pytest.fixture(scope="module")
def counted_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "count.mp4"
    # A keyframe every 10 frames, so targets both before and after keyframes are exercised.
    import av

    frames = numbered_frames(60)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "1", "g": "10"}
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_uniform_frames_are_the_exact_frames(counted_video):
    clip = sample_frames(counted_video, num_frames=6)
    assert clip.frames.shape == (6, 32, 32, 3)
    assert clip.fps == pytest.approx(30)
    decoded = [frame_index(f, 60) for f in clip.frames]
    assert decoded == clip.indices == [5, 15, 25, 35, 45, 55]
    assert clip.timestamps == pytest.approx([i / 30 for i in clip.indices])


def test_window_and_metadata(counted_video):
    clip = sample_frames(counted_video, num_frames=4, start=1.0, end=1.5)
    assert clip.window_num_frames == 15
    assert [frame_index(f, 60) for f in clip.frames] == [30 + i for i in clip.indices]
    assert all(1.0 <= t < 1.5 for t in clip.timestamps)
    metadata = clip.video_metadata()
    assert metadata.total_num_frames == 15 and metadata.fps == pytest.approx(30)
    # The processor derives the sampled rate from the window, not from the whole video.
    assert metadata.sampled_fps == pytest.approx(4 / 15 * 30)


def test_fps_sampling(counted_video):
    clip = sample_frames(counted_video, fps=2)
    assert len(clip.frames) == 4  # 2 s at 2 fps
    assert [frame_index(f, 60) for f in clip.frames] == [0, 15, 30, 45]


def test_out_of_order_targets_and_duplicates(counted_video):
    # A target behind the decoder's position forces a seek back; duplicates decode once.
    clip = sample_frames(counted_video, num_frames=60)
    assert [frame_index(f, 60) for f in clip.frames] == list(range(60))


@pytest.fixture(scope="module")
def textured_video(tmp_path_factory):
    """A moving texture with B-frames and two keyframe intervals, whose frames all differ."""
    import av

    path = tmp_path_factory.mktemp("video") / "texture.mp4"
    texture = np.random.default_rng(0).integers(0, 256, (64, 160, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": "24", "bframes": "3"}
        for t in range(90):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(texture[:, t : t + 64].copy(), format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize("mode", ["one thread", "frame threads", "parallel runs", "parallel runs from bytes"])
@pytest.mark.parametrize(
    "kwargs", [{"num_frames": 8}, {"num_frames": 3, "start": 1.0, "end": 2.5}, {"fps": 7}, {"num_frames": 90}]
)
def test_frames_equal_a_full_decode(textured_video, kwargs, mode, monkeypatch):
    # Frames skipped on the way to a target must not change the target's pixels, whichever way large frames are
    # decoded: frame threads, or the keyframe runs split over decoders that each open the file (or bytes) anew.
    import av

    from vstar import video

    monkeypatch.setattr(video, "FRAME_THREADING_MIN_PIXELS", 10**9 if mode == "one thread" else 0)
    monkeypatch.setattr(video, "_CORES", 2 if mode.startswith("parallel") else 1)
    with av.open(str(textured_video)) as container:
        every = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    source = {"bytes": textured_video.read_bytes(), "path": None} if mode.endswith("bytes") else textured_video
    clip = sample_frames(source, **kwargs)
    first = round((kwargs.get("start") or 0) * 25)
    assert clip.indices == sorted(clip.indices) and len(clip.frames) == len(clip.indices)
    for index, frame in zip(clip.indices, clip.frames):
        np.testing.assert_array_equal(frame, every[first + index])


def test_runs_are_split_evenly():
    from vstar.video import _runs, _split_runs

    runs = _runs([0, 250, 500, 750, 1000, 1250], [93, 281, 468, 656, 843, 1031, 1218, 1406])
    assert runs == [(0, [93]), (250, [281, 468]), (500, [656]), (750, [843]), (1000, [1031, 1218]), (1250, [1406])]
    groups = _split_runs(runs, 2)
    assert sorted(run for group in groups for run in group) == runs
    loads = [sum(targets[-1] - keyframe + 1 for keyframe, targets in group) for group in groups]
    assert max(loads) - min(loads) <= 100  # 940 frames to decode, split 470 / 470 give or take a run


def test_bytes_and_dataset_entries(tmp_path):
    frames = numbered_frames(8)
    data = encode_video(frames, fps=8)
    from_bytes = sample_frames(data, num_frames=8)
    from_entry = sample_frames({"bytes": data, "path": "x.mp4"}, num_frames=8)
    path = write_video(tmp_path / "v.mp4", frames, fps=8)
    from_path = sample_frames({"path": str(path), "bytes": None}, num_frames=8)
    for clip in (from_bytes, from_entry, from_path):
        assert [frame_index(f, 8) for f in clip.frames] == list(range(8))


def test_frame_folder(tmp_path):
    from PIL import Image

    for i, frame in enumerate(numbered_frames(10)):
        Image.fromarray(frame).save(tmp_path / f"{i:05d}.jpg", quality=100)
    clip = sample_frames(tmp_path, num_frames=5, folder_fps=10)
    assert [frame_index(f, 10) for f in clip.frames] == [1, 3, 5, 7, 9]
    assert clip.fps == 10


@pytest.mark.parametrize(
    "content, message",
    [(None, "cannot decode"), (b"", "cannot decode"), (b"not a video at all" * 10, "cannot decode")],
)
def test_bad_videos_raise_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        sample_frames(path, num_frames=4)


def test_truncated_video(tmp_path):
    data = encode_video(numbered_frames(30), fps=10)
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoDecodeError, match="truncated.mp4"):
        sample_frames(path, num_frames=4)


def test_empty_window(counted_video):
    with pytest.raises(VideoDecodeError, match="holds no frames"):
        sample_frames(counted_video, num_frames=4, start=5.0, end=6.0)


def test_needs_exactly_one_of_num_frames_and_fps(counted_video):
    with pytest.raises(ValueError, match="exactly one"):
        sample_frames(counted_video)
