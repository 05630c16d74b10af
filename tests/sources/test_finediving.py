"""The FineDiving builder: the real annotation pickles (when `../shared/data` is present) and synthetic ones in the
same format, with generated JPEG frame folders for a few clips.

Run: `python -m pytest tests/sources/test_finediving.py -q`
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset
from PIL import Image

from vstar.sources.finediving import (
    FineDivingConfig,
    UnsafePickleError,
    build_finediving,
    dive_name,
    load_annotation_pickle,
    load_finediving_annotations,
    sub_action_sequence,
)
from vstar.video import sample_frames

TABLE = {2: "Back", 4: "Inward", 15: "2.5 Soms.Pike", 25: "3.5 Soms.Tuck", 31: "1.5 Twists", 36: "Entry"}


def _frames(folder: Path, first: int, count: int, size=(36, 50)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((*size, 3), 30 * i, np.uint8)).save(folder / f"{first + i:05d}.jpg")


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("407c", "inward 3 1/2 somersaults tuck"),
        ("107b", "forward 3 1/2 somersaults pike"),
        ("101b", "forward dive pike"),
        ("201a", "back dive straight"),
        ("5253b", "back 2 1/2 somersaults 1 1/2 twists pike"),
        ("5231d", "back 1 1/2 somersaults 1/2 twist free"),
        ("5172b", "forward 3 1/2 somersaults 1 twist pike"),
        ("6243d", "armstand back 2 somersaults 1 1/2 twists free"),
        ("626c", "armstand back 3 somersaults tuck"),
        ("612b", "armstand forward 1 somersault pike"),
        ("112b", "forward flying 1 somersault pike"),
        ("1011b", "forward 5 1/2 somersaults pike"),
    ],
)
def test_dive_code_in_words(code, name):
    assert dive_name(code) == name


@pytest.mark.parametrize("code", ["407", "707c", "407e", "5053b", "52b", "x"])
def test_invalid_dive_codes(code):
    with pytest.raises(ValueError):
        dive_name(code)


def test_sub_actions_follow_the_frames_in_order():
    labels = np.array([4, 4, 25, 25, 25, 36, 36, 25, 36])
    ids, names = sub_action_sequence(labels, {np.int64(4): "Inward"}, TABLE)
    assert ids == [4, 25, 36, 25, 36]  # consecutive repeats collapsed, later returns kept
    assert names == ["Inward", "3.5 Soms.Tuck", "Entry", "3.5 Soms.Tuck", "Entry"]


def test_unpickler_refuses_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    path = tmp_path / "FineDiving_coarse_annotation.pkl"
    path.write_bytes(pickle.dumps({("v", 1): Exploit()}))
    with pytest.raises(UnsafePickleError, match=r"refusing to load `(posix|os)\.system`"):
        load_annotation_pickle(path)
    path.write_bytes(pickle.dumps(io.BytesIO(b"x")))
    with pytest.raises(UnsafePickleError, match="_io.BytesIO"):
        load_annotation_pickle(path)


def _synthetic_annotations(folder: Path) -> dict:
    """Five pickles in the FineDiving layout (protocol 3, numpy arrays and scalars, like the released files)."""
    folder.mkdir(parents=True)
    final = "FINAWorldChampionships2019_Women10m_final_r1"
    clips = {
        (final, 1): ("407c", 3.2, 65.6, [7.0, 6.5, 7.0], [4] * 3 + [25] * 4 + [36] * 2),
        (final, 2): ("205b", 3.0, 66.0, [7.5] * 5, [2] * 2 + [15] * 5 + [36] * 2),
        ("07", 3): ("5253b", 3.3, 72.6, [np.float64(7.0)] * 7, [2] * 3 + [15, 15, 31, 31] + [36] * 2),
        ("07", 4): ("107b", 3.1, 50.0, [6.0, 5.5, 6.0], [1] * 9),
    }
    coarse, fine = {}, {}
    for i, (key, (code, dd, score, judges, labels)) in enumerate(clips.items()):
        start = 1000 * (i + 1)
        coarse[key] = {"action_type": code, "start_frame": start, "end_frame": start + len(labels) - 1,
                       "dive_score": score, "difficulty": dd, "judge_scores": judges}  # fmt: skip
        fine[key] = {"action_type": code, "dive_score": score, "difficulty": dd,
                     "steps_transit_frames": np.array([3, 7]), "frames_labels": np.array(labels),
                     "sub-action_types": {np.int64(k): TABLE.get(k, "Forward") for k in set(labels)}}  # fmt: skip
    keys = list(clips)
    for name, obj in [("FineDiving_coarse_annotation.pkl", coarse), ("FineDiving_fine-grained_annotation.pkl", fine),
                      ("Sub_action_Types_Table.pkl", {**TABLE, 1: "Forward"}), ("train_split.pkl", keys[:3]),
                      ("test_split.pkl", keys[3:])]:  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(obj, protocol=3))
    return coarse


def test_synthetic_annotations_build_embed_and_resume(tmp_path):
    coarse = _synthetic_annotations(tmp_path / "ann")
    frames = tmp_path / "frames"
    for (video, clip), entry in list(coarse.items())[:3]:
        _frames(frames / video / str(clip), entry["start_frame"], entry["end_frame"] - entry["start_frame"] + 1)
    (frames / "07" / "4").mkdir(parents=True)  # a clip folder without frames
    out = build_finediving(annotations=str(tmp_path / "ann"), frames=str(frames), output=str(tmp_path / "out"))
    ds = load_dataset(str(out))
    train = {row["id"]: row for row in ds["train"]}
    assert len(train) == 3 and list(ds) == ["train"]  # the test split has no usable clip
    row = train["FINAWorldChampionships2019_Women10m_final_r1_1"]
    assert row["sub_actions"] == ["Inward", "3.5 Soms.Tuck", "Entry"]
    assert (row["action_type"], row["dive_name"], row["difficulty"], row["dive_score"]) == (
        "407c", "inward 3 1/2 somersaults tuck", 3.2, 65.6)  # fmt: skip
    assert row["judge_scores"] == [7.0, 6.5, 7.0] and len(train["07_3"]["judge_scores"]) == 7
    assert train["07_3"]["sub_actions"] == ["Back", "2.5 Soms.Pike", "1.5 Twists", "Entry"]
    assert (row["start_frame"], row["end_frame"], row["num_frames"], row["fps"]) == (1000, 1008, 9, 25.0)
    assert (row["width"], row["height"]) == (50, 36)
    clip = sample_frames(row["video"], num_frames=9)
    assert clip.frames.shape == (9, 36, 50, 3) and clip.frames[0].mean() < clip.frames[-1].mean()
    report = json.loads((out / "build_report.json").read_text())
    assert (report["rows_read"], report["rows_written"]) == (4, 3)
    assert report["skipped"][0]["row"] == "07/4" and report["skipped"][0]["reason"].startswith("missing")
    # A rebuild reuses the encoded clips.
    video = Path(row["video"]["path"])
    mtime = video.stat().st_mtime_ns
    build_finediving(annotations=str(tmp_path / "ann"), frames=str(frames), output=str(out))
    assert video.stat().st_mtime_ns == mtime
    # Embedded videos: the bytes travel in the Parquet file.
    embedded = build_finediving(
        FineDivingConfig(
            annotations=str(tmp_path / "ann"),
            frames=str(frames),
            output=str(tmp_path / "embed"),
            embed_videos=True,
            fps=10,
        )  # fmt: skip
    )
    first = load_dataset(str(embedded), split="train")[0]
    assert first["video"]["bytes"] and not (embedded / "videos").exists()
    assert sample_frames(first["video"], num_frames=3).fps == 10.0


def test_real_annotations_with_generated_frames(shared_data, tmp_path):
    annotations = shared_data / "finediving"
    loaded = load_finediving_annotations(annotations)
    assert len(loaded.coarse) == 3000 and len(loaded.sub_action_types) == 42
    assert (len(loaded.splits["train"]), len(loaded.splits["test"])) == (2251, 749)
    chosen = loaded.splits["train"][:3] + loaded.splits["test"][:2]
    frames = tmp_path / "frames"
    for video, clip in chosen:
        _frames(frames / video / str(clip), loaded.coarse[(video, clip)]["start_frame"], 5)
    broken_video, broken_clip = loaded.splits["test"][2]
    (frames / broken_video / str(broken_clip)).mkdir(parents=True)
    (frames / broken_video / str(broken_clip) / "00001.jpg").write_bytes(b"not a jpeg")
    out = build_finediving(annotations=str(annotations), frames=str(frames), output=str(tmp_path / "out"), num_proc=2)
    ds = load_dataset(str(out))
    assert (len(ds["train"]), len(ds["test"])) == (3, 2)
    for row in list(ds["train"]) + list(ds["test"]):
        key = (row["video_name"], row["clip_idx"])
        assert key in chosen
        coarse, fine = loaded.coarse[key], loaded.fine[key]
        assert row["action_type"] == coarse["action_type"] and row["dive_name"] == dive_name(coarse["action_type"])
        assert row["difficulty"] == coarse["difficulty"] and row["dive_score"] == coarse["dive_score"]
        assert row["judge_scores"] == [float(s) for s in coarse["judge_scores"]]
        assert (row["start_frame"], row["end_frame"]) == (coarse["start_frame"], coarse["end_frame"])
        labels = [int(x) for x in fine["frames_labels"]]
        order = [x for i, x in enumerate(labels) if i == 0 or labels[i - 1] != x]
        assert row["sub_actions"] == [loaded.sub_action_types[i] for i in order]
        assert row["sub_actions"][-1] == "Entry" and row["num_frames"] == 5
    report = json.loads((out / "build_report.json").read_text())
    assert (report["rows_read"], report["rows_written"]) == (3000, 5)
    reasons = {entry["row"]: entry["reason"] for entry in report["skipped"]}
    assert reasons[f"{broken_video}/{broken_clip}"].startswith("undecodable")
    assert sum(r.startswith("missing") for r in reasons.values()) == 2994
    card = (out / "README.md").read_text()
    assert "5 rows written of 3000 read" in card and "| missing | 2994 |" in card and "xu2022finediving" in card


def test_build_from_the_command_line(tmp_path):
    from vstar.cli import main, parse_build_args

    coarse = _synthetic_annotations(tmp_path / "ann")
    for (video, clip), entry in list(coarse.items())[:3]:
        _frames(tmp_path / "frames" / video / str(clip), entry["start_frame"], 4)
    main(["build", "finediving", "--annotations", str(tmp_path / "ann"), "--frames", str(tmp_path / "frames"),
          "--output", str(tmp_path / "out"), "--embed_videos", "true"])  # fmt: skip
    rows = load_dataset(str(tmp_path / "out"), split="train")
    assert len(rows) == 3 and all(row["video"]["bytes"] for row in rows)
    # `--embed_videos` is the builder's own setting; a push still embeds the videos by default.
    config, target = parse_build_args("finediving", ["--embed_videos", "false", "--push_to_hub", "org/finediving"])
    assert not config.embed_videos and target.hub_repo == "org/finediving" and target.embed_videos


def test_bad_labels_are_left_out_and_not_encoded(tmp_path):
    coarse = _synthetic_annotations(tmp_path / "ann")
    keys = list(coarse)
    coarse[keys[0]]["dive_score"] = float("nan")
    coarse[keys[1]]["judge_scores"] = [7.0, np.float64("nan"), 7.0]
    del coarse[keys[2]]["dive_score"]
    (tmp_path / "ann" / "FineDiving_coarse_annotation.pkl").write_bytes(pickle.dumps(coarse, protocol=3))
    # The last clip is listed in both splits: a held-out dive must not be a training dive.
    (tmp_path / "ann" / "train_split.pkl").write_bytes(pickle.dumps(keys, protocol=3))
    frames = tmp_path / "frames"
    for video, clip in keys:
        _frames(frames / video / str(clip), coarse[(video, clip)]["start_frame"], 3)
    out = build_finediving(annotations=str(tmp_path / "ann"), frames=str(frames), output=str(tmp_path / "out"))
    ds = load_dataset(str(out))
    assert list(ds) == ["train"] and ds["train"]["id"] == ["07_4"]
    report = json.loads((out / "build_report.json").read_text())
    reasons = {entry["row"]: entry["reason"] for entry in report["skipped"]}
    final = "FINAWorldChampionships2019_Women10m_final_r1"
    assert reasons == {
        f"{final}/1": "label: `dive_score` is nan, not a number",
        f"{final}/2": "label: `judge_scores` [7.0, nan, 7.0] is empty or holds a NaN",
        "07/3": "label: the coarse annotation has no dive_score",
        "07/4": "duplicate: the id 07_4 is already in the train split (one clip cannot be in two splits)",
    }
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["07_4.mp4"]  # dropped rows are not encoded


def test_broken_pickles_and_settings_are_one_clear_line(tmp_path, capsys):
    from vstar.cli import main
    from vstar.errors import ConfigError, InputError

    _synthetic_annotations(tmp_path / "ann")
    (tmp_path / "frames").mkdir()
    coarse = tmp_path / "ann" / "FineDiving_coarse_annotation.pkl"
    data = coarse.read_bytes()
    coarse.write_bytes(data[: len(data) // 2])
    flags = ["--annotations", str(tmp_path / "ann"), "--frames", str(tmp_path / "frames"), "--output", str(tmp_path)]
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["build", "finediving", *flags])
    errors = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(errors) == 1
    assert errors[0] == (
        f"vstar build: error: {coarse}: the pickle ends early ({len(data) // 2} bytes): the file is cut "
        "short; download the FineDiving annotations again."
    )
    coarse.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(InputError, match=r"FineDiving_coarse_annotation\.pkl: not a readable FineDiving annotation"):
        load_annotation_pickle(coarse)
    with pytest.raises(ConfigError, match="--fps must be greater than 0, not 0"):
        build_finediving(
            annotations=str(tmp_path / "ann"), frames=str(tmp_path / "frames"), output=str(tmp_path), fps=0
        )
