"""`vstar split` on synthetic long videos written here with known cuts (real x264 files, real PyAV decoding, the real
PySceneDetect detector and the real TransNetV2 weights): cuts found within 2 frames, the dissolve, the static and
the long shot handled, every frame accounted for, bad files reported per file while the rest finish."""

from __future__ import annotations

import json
import logging
import sys
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
from split_fixtures import FPS, SHORT_SCRIPT, Shot, make_long_video, script_frames, write_frames, write_timed_frames

from vstar.curate.split import SplitConfig, split_video, split_videos

logger = logging.getLogger(__name__)


def cut_scores(found: list[int], truth: list[int], dissolves: list[tuple[int, int]], tolerance: int = 2):
    """Precision and recall of hard cuts within `tolerance` frames; a boundary inside a dissolve is that dissolve
    found, not a false cut."""
    found = [f for f in found if not any(a - tolerance <= f <= b + tolerance for a, b in dissolves)]
    matched = {t for t in truth if any(abs(f - t) <= tolerance for f in found)}
    true_found = [f for f in found if any(abs(f - t) <= tolerance for t in truth)]
    return len(true_found) / max(1, len(found)), len(matched) / max(1, len(truth))


def frames_of(result, fps: int = FPS) -> list[tuple[int, int]]:
    return [(round(lo * fps), round(hi * fps)) for lo, hi, _ in result.clips]


def check_script(video, result, max_seconds: float) -> None:
    """What every detector must get right on the long video."""
    clips = frames_of(result)
    shots = video.shots
    (dissolve_start, dissolve_end) = video.dissolves[0]
    before, after = shots[2], shots[3]  # the shots the dissolve joins
    for lo, hi in clips:
        assert not (lo < before[1] and hi > after[0]), f"clip {lo}-{hi} spans the dissolve"
        # A clip lies inside one shot (a frame of slack for where the cut frame is counted); a detector that cuts a
        # dissolve in its middle (TransNetV2 does) leaves each half with the shot it belongs to.
        middle = (dissolve_start + dissolve_end) / 2
        extended = [(a, middle if b == before[1] else b) if a != after[0] else (middle, b) for a, b, _ in shots]
        assert any(a - 1 <= lo and hi <= b + 1 for a, b in extended), f"clip {lo}-{hi} mixes shots"
        assert hi - lo <= max_seconds * FPS + 1
    static = next(s for s in shots if s[2] == "static")
    assert not any(lo < static[1] - 2 and hi > static[0] + 2 for lo, hi in clips), "the static shot was kept"
    assert any(reason == "static" for *_, reason, _ in result.dropped)
    long_shot = max(shots, key=lambda s: s[1] - s[0])
    parts = [(lo, hi) for lo, hi in clips if long_shot[0] - 1 <= lo and hi <= long_shot[1] + 1]
    assert len(parts) >= 3 and sum(hi - lo for lo, hi in parts) >= (long_shot[1] - long_shot[0]) - 2
    reasons = {reason for lo, hi, reason in result.clips if long_shot[0] / FPS - 0.1 <= lo < long_shot[1] / FPS}
    assert reasons == {"max_seconds"}
    # Every moving shot away from the dissolve ends up in clips.
    for a, b, kind in shots:
        if kind == "moving" and (a, b) not in (before[:2], after[:2]):
            assert any(lo <= a + 2 and hi >= b - 2 for lo, hi in clips) or (a, b) == long_shot[:2]


def check_accounted(result, seconds: float) -> None:
    """Clips and dropped spans tile the video: nothing vanishes unreported."""
    spans = sorted([(lo, hi) for lo, hi, _ in result.clips] + [(lo, hi) for lo, hi, *_ in result.dropped])
    position = 0.0
    for lo, hi in spans:
        assert abs(lo - position) < 1e-3, f"gap or overlap at {position:.3f} s: next span starts at {lo:.3f} s"
        position = hi
    assert abs(position - seconds) < 1e-3


@pytest.fixture(scope="module")
def content_result(long_video):
    return split_video(long_video.path, SplitConfig(max_seconds=5))


def test_content_detector_finds_the_cuts(long_video, content_result):
    found = [round(t * FPS) for t in content_result.stats["cut_times"]]
    precision, recall = cut_scores(found, long_video.hard_cuts, long_video.dissolves)
    logger.info("content detector: cut precision %.3f recall %.3f", precision, recall)
    assert (precision, recall) == (1.0, 1.0), (found, long_video.hard_cuts)


def test_stitching_drops_the_dissolve_and_the_static_shot_and_splits_the_long_one(long_video, content_result):
    check_script(long_video, content_result, max_seconds=5)
    check_accounted(content_result, long_video.frames / FPS)
    transitions = [(lo, hi) for lo, hi, reason, _ in content_result.dropped if reason == "transition"]
    dissolve = (long_video.dissolves[0][0] + long_video.dissolves[0][1]) / 2 / FPS
    assert any(lo <= dissolve <= hi for lo, hi in transitions)


@pytest.mark.slow  # ~15 s on two idle cores (TransNetV2 on CPU: ~40 frames/s), more when they are busy
def test_transnetv2_on_the_same_video(long_video):
    result = split_video(long_video.path, SplitConfig(detector="transnetv2", max_seconds=5))
    found = [round(t * FPS) for t in result.stats["cut_times"]]
    precision, recall = cut_scores(found, long_video.hard_cuts, long_video.dissolves)
    logger.info("transnetv2: cut precision %.3f recall %.3f", precision, recall)
    assert precision == 1.0 and recall == 1.0, (found, long_video.hard_cuts)
    check_script(long_video, result, max_seconds=5)
    check_accounted(result, long_video.frames / FPS)


def test_thresholds_are_settings(long_video, content_result):
    # A merge threshold above every distance (max 2 between unit vectors) joins the shots cut by hard cuts.
    merged = split_video(long_video.path, SplitConfig(max_seconds=60, merge_threshold=2.5, static_threshold=0))
    assert len(merged.clips) < len(content_result.clips)
    # Trimming leaves out both ends of every clip, each end reported.
    trimmed = split_video(long_video.path, SplitConfig(max_seconds=5, trim_fraction=0.1))
    assert len(trimmed.clips) == len(content_result.clips)
    for (lo, hi, _), (tlo, thi, _) in zip(content_result.clips, trimmed.clips):
        assert lo < tlo < thi < hi
    assert sum(reason == "trim" for *_, reason, _ in trimmed.dropped) == 2 * len(trimmed.clips)
    check_accounted(trimmed, long_video.frames / FPS)
    # A shot shown again later is redundant once a redundancy threshold is set.
    again = [*SHORT_SCRIPT, ("cut", SHORT_SCRIPT[0][1])]
    repeated = make_long_video(long_video.path.with_name("repeat.mp4"), again)
    plain = split_video(repeated.path, SplitConfig())
    dedup = split_video(repeated.path, SplitConfig(redundant_threshold=0.3))
    assert len(plain.clips) == 4 and len(dedup.clips) == 3
    assert [reason for *_, reason, _ in dedup.dropped] == ["redundant"]


def test_rows_are_a_source_dataset_and_labels_carry_over(long_video, tmp_path):
    from datasets import ClassLabel, Features, Value, load_dataset

    from vstar.schema import source_features
    from vstar.sources.base import write_source_dataset
    from vstar.video import sample_frames

    labels = {"label": ClassLabel(names=["cooking", "sport"]), "note": Value("string")}
    features = Features(source_features(labels))
    rows = [
        {"id": "cook/1", "video": {"path": str(long_video.path), "bytes": None}, "start": None, "end": None}
        | {"source": "raw", "split": "train", "label": "cooking", "note": "whole"},
        # A window into the parent: only its frames are split, times stay the file's.
        {"id": "sport/2", "video": {"path": str(long_video.path), "bytes": None}, "start": 4.0, "end": 13.0}
        | {"source": "raw", "split": "test", "label": "sport", "note": "window"},
    ]
    source = write_source_dataset({"train": rows[:1], "test": rows[1:]}, features, tmp_path / "src", {}, {})
    out = split_videos(SplitConfig(dataset=str(source), output=str(tmp_path / "clips"), max_seconds=5))
    dataset = load_dataset(str(out))
    train, test = dataset["train"], dataset["test"]
    assert train.features["label"] == features["label"]
    names = train.features["label"].names
    assert {names[i] for i in train["label"]} == {"cooking"} and {names[i] for i in test["label"]} == {"sport"}
    assert set(test["note"]) == {"window"}
    assert set(train["parent_id"]) == {"cook/1"} and train[0]["id"] == "cook/1_0000"
    assert all(4.0 <= row["start"] < row["end"] <= 13.0 for row in test)
    assert test[0]["duration"] == pytest.approx(long_video.frames / FPS, abs=0.05)  # the file's, not the window's
    assert [(r["start"], r["end"]) for r in test] == [(4.0, 8.0), (8.0, 13.0)]
    assert train[0]["video"]["path"] == str(long_video.path)
    report = json.loads((out / "build_report.json").read_text())
    assert report["rows_written"] == len(train) + len(test) and report["skipped"] == []
    assert {entry["reason"] for entry in report["dropped"]} >= {"static", "transition"}
    assert all(entry["detail"] for entry in report["dropped"])
    # A clip window decodes to frames of one shot only.
    clip = sample_frames(train[0]["video"], num_frames=4, start=train[0]["start"], end=train[0]["end"])
    assert clip.frames.shape[0] == 4 and clip.window_num_frames == 60


def test_cli_splits_a_glob_and_reencodes(long_video, tmp_path):
    from datasets import load_dataset

    from vstar.cli import main

    folder = tmp_path / "raw"
    folder.mkdir()
    write_frames(folder / "a.mp4", script_frames())
    out = tmp_path / "clips"
    main(["split", "--videos", str(folder / "*.mp4"), "--output", str(out), "--reencode", "true", "--min_seconds=1"])
    rows = load_dataset(str(out), split="train")
    assert rows["parent_id"] == ["a"] * 3 and rows["start"] == [None] * 3
    for row in rows:
        with av.open(row["video"]["path"]) as container:
            frames = sum(1 for _ in container.decode(video=0))
        assert frames == 45
    assert "--reencode True" in (out / "README.md").read_text()


def _bad_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    frames = script_frames()
    files = {"good": write_frames(folder / "good.mp4", frames)}
    audio = av.open(str(folder / "audio_only.mp4"), "w")
    stream = audio.add_stream("aac", rate=16000)
    stream.layout = "mono"
    sound = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    sound.sample_rate = 16000
    for packet in [*stream.encode(sound), *stream.encode()]:
        audio.mux(packet)
    audio.close()
    files["audio_only"] = folder / "audio_only.mp4"
    empty = av.open(str(folder / "zero_frames.mp4"), "w")
    video = empty.add_stream("libx264", rate=FPS)
    video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
    empty.start_encoding()
    empty.close()
    files["zero_frames"] = folder / "zero_frames.mp4"
    (folder / "garbage.mp4").write_bytes(b"not a video at all" * 100)
    files["garbage"] = folder / "garbage.mp4"
    times = [i / 15 for i in range(45)] + [3 + i / 7.5 for i in range(45)] + [9 + i / 30 for i in range(45)]
    files["vfr"] = write_timed_frames(folder / "vfr.mp4", frames, times)
    files["rotated"] = write_frames(folder / "rotated.mp4", frames, rotation=-90)
    whole = write_frames(folder / "whole.tmp", frames, faststart=True).read_bytes()
    (folder / "cut_tail.mp4").write_bytes(whole[: int(len(whole) * 0.7)])
    (folder / "whole.tmp").unlink()
    files["cut_tail"] = folder / "cut_tail.mp4"
    return files


def test_bad_files_are_reported_and_the_rest_finish(tmp_path):
    from datasets import load_dataset

    _bad_inputs(tmp_path / "raw")
    out = split_videos(SplitConfig(videos=str(tmp_path / "raw"), output=str(tmp_path / "clips"), min_seconds=1))
    report = json.loads((out / "build_report.json").read_text())
    skipped = {Path(entry["file"]).stem: entry["reason"] for entry in report["skipped"]}
    assert set(skipped) == {"audio_only", "zero_frames", "garbage"}
    assert skipped["audio_only"].endswith("no video stream")
    # A muxer that got no frame writes no video track: the file reads as one without a video stream.
    assert skipped["zero_frames"].endswith(("no video stream", "no frame could be decoded"))
    rows = load_dataset(str(out), split="train")
    by_parent: dict[str, list] = {}
    for row in rows:
        by_parent.setdefault(row["parent_id"], []).append((row["start"], row["end"]))
    assert by_parent["good"] == [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0)]
    assert by_parent["rotated"] == by_parent["good"]
    assert by_parent["vfr"] == [(0.0, 3.0), (3.0, 9.0), (9.0, pytest.approx(10.545, abs=0.01))]
    videos = {entry["id"]: entry for entry in report["videos"]}
    assert (videos["rotated"]["width"], videos["rotated"]["height"], videos["rotated"]["rotation"]) == (72, 128, 90)
    # The readable part of a file cut short is split; where decoding stopped is in the report.
    assert videos["cut_tail"]["stopped"] and 0 < videos["cut_tail"]["frames"] < 135
    assert by_parent["cut_tail"][0] == (0.0, 3.0)


def test_memory_stays_flat_on_a_long_file(tmp_path):
    """Ten times the video, about the same peak memory: frames are never gathered."""
    shots = [("cut", Shot("moving", 6, (40 + 60 * (k % 4), 200 - 40 * (k % 5), 90), "stripes")) for k in range(30)]
    long_path = make_long_video(tmp_path / "long.mp4", shots).path
    short_path = make_long_video(tmp_path / "short.mp4", shots[:3]).path

    def peak(path):
        tracemalloc.start()
        result = split_video(path, SplitConfig())
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak_bytes, result

    short_peak, _ = peak(short_path)
    long_peak, result = peak(long_path)
    assert result.stats["frames"] == 30 * 6 * FPS and len(result.clips) == 30
    logger.info("peak traced memory: %d kB (18 s) vs %d kB (180 s)", short_peak // 1024, long_peak // 1024)
    assert long_peak < 1.5 * short_peak + 2**20


def test_settings_are_checked(tmp_path):
    from vstar.errors import ConfigError, InputError

    with pytest.raises(ConfigError, match="exactly one"):
        split_videos(SplitConfig(output=str(tmp_path / "x")))
    with pytest.raises(ConfigError, match="max_seconds"):
        split_videos(SplitConfig(videos=str(tmp_path), output=str(tmp_path / "x"), min_seconds=5, max_seconds=3))
    with pytest.raises(InputError, match="no video files"):
        split_videos(SplitConfig(videos=str(tmp_path / "*.mp4"), output=str(tmp_path / "x")))


def test_our_tests_do_not_collide_with_the_transnetv2_tests_package():
    """The TransNetV2 wheel installs a top-level `tests` package: our test modules are imported under their own
    names (pytest's rootdir without `__init__.py`), never as `tests.*`, and nothing of that package is loaded."""
    assert __name__ == "test_split"
    assert "test_split" in sys.modules and sys.modules["test_split"].__file__ == __file__
    assert not [name for name in sys.modules if name == "tests" or name.startswith("tests.")]
    assert Path(sys.modules["split_fixtures"].__file__).parent == Path(__file__).parent


def _tiny_image_models(root: Path) -> dict[str, Path]:
    """A CLIP (image features through `get_image_features`) and a ViT backbone (its pooled output), built offline."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, ViTConfig, ViTImageProcessor, ViTModel

    small = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2}
    clip = CLIPModel(
        CLIPConfig(
            vision_config={**small, "image_size": 32, "patch_size": 8},
            text_config={**small, "vocab_size": 99, "bos_token_id": 0, "eos_token_id": 1},
            projection_dim=16,
        )
    )
    clip.save_pretrained(root / "clip")
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(root / "clip")
    ViTModel(ViTConfig(**small, image_size=32, patch_size=8)).save_pretrained(root / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "vit")
    return {"clip": root / "clip", "vit": root / "vit"}


def test_any_transformers_image_model_embeds_the_frames(long_video, tmp_path):
    from vstar.curate.embed import get_embedder
    from vstar.video import sample_frames

    frames = list(sample_frames(long_video.path, num_frames=3).frames)
    for name, path in _tiny_image_models(tmp_path).items():
        embedder = get_embedder(str(path))
        vectors = embedder(frames)
        assert vectors.shape[0] == 3 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5), name
        result = split_video(long_video.path, SplitConfig(embedder=str(path), max_seconds=5), embedder=embedder)
        assert result.error is None and result.stats["cuts"] == len(long_video.hard_cuts)
        check_accounted(result, long_video.frames / FPS)


@pytest.mark.parametrize("scale", [1, 5])
def test_cuts_are_the_ones_pyscenedetect_finds_on_its_pyav_backend(long_video, tmp_path, scale):
    """Our streaming pass (own PyAV loop, planes read in place) against PySceneDetect's own pipeline: `open_video(...,
    backend="pyav")`, a `SceneManager` with its automatic downscaling and the same `ContentDetector(25, 15)`."""
    from scenedetect import ContentDetector, SceneManager, open_video

    path = long_video.path
    if scale > 1:  # 640 x 360: both pipelines downscale to about 256 pixels wide
        frames = [np.kron(frame, np.ones((scale, scale, 1), np.uint8)) for frame in script_frames()]
        path = write_frames(tmp_path / "large.mp4", frames)
    manager = SceneManager()
    manager.add_detector(ContentDetector(threshold=25, min_scene_len=15))
    manager.detect_scenes(open_video(str(path), backend="pyav"))
    reference = [scene[0].frame_num for scene in manager.get_scene_list()][1:]
    ours = [round(t * FPS) for t in split_video(path, SplitConfig(min_seconds=1)).stats["cut_times"]]
    assert ours == reference and len(ours) == (5 if scale == 1 else 2)


def test_a_window_far_into_a_file_is_reached_by_seeking(long_video, content_result):
    from vstar.curate.detect import read_frames

    first = next(read_frames(long_video.path, start=21.0).frames)
    assert 10.0 < first.time <= 21.0  # the keyframe before the window, not the file's first frame
    window = split_video(long_video.path, SplitConfig(max_seconds=5), start=21.0)
    assert window.clips == [clip for clip in content_result.clips if clip[0] >= 22.0]
    assert window.dropped[0][:3] == (21.0, 22.0, "short")  # the static shot's last second


def test_the_fast_frame_score_is_pyscenedetects():
    """Same scores as the stock `ContentDetector` on frames of every kind of difference (so the same cuts)."""
    from scenedetect import ContentDetector, FrameTimecode

    from vstar.curate.detect import _fast_content_detector

    rng = np.random.default_rng(0)
    stock, fast = ContentDetector(), _fast_content_detector()()
    base = rng.integers(0, 256, (144, 256, 3), dtype=np.uint8)
    for i in range(40):
        image = base if i % 3 == 0 else rng.integers(0, 256, (144, 256, 3), dtype=np.uint8) // (1 + i % 4)
        timecode = FrameTimecode(i, 30.0)
        assert fast._calculate_frame_score(timecode, image) == stock._calculate_frame_score(timecode, image)
