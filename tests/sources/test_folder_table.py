"""The generic builders: a folder with one sub-folder per class, and CSV / JSON Lines / Parquet tables mapped by
column names.

Run: `python -m pytest tests/sources/test_folder_table.py -q`
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from vstar.errors import InputError
from vstar.sources.folder import build_folder
from vstar.sources.table import TableConfig, build_table
from vstar.video import write_video

FRAMES = np.random.default_rng(1).integers(0, 255, (8, 24, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", FRAMES, fps=8)


def _copy(clip: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(clip.read_bytes())
    return target


def test_class_folders(clip, tmp_path):
    root = tmp_path / "clips"
    for path in ["yoga/a.mp4", "yoga/b.mkv", "rock climbing/c.mp4", "rock climbing/more/d.mp4"]:
        _copy(clip, root / path)
    (root / "yoga" / "broken.mp4").write_bytes(b"\x00" * 100)
    (root / "yoga" / "notes.txt").write_text("not a video")
    _copy(clip, root / "stray.mp4")
    out = build_folder(videos=str(root), output=str(tmp_path / "out"), num_proc=2)
    ds = load_dataset(str(out), split="train")
    names = ds.features["label"].names
    assert names == ["rock climbing", "yoga"]
    assert {(r["id"], names[r["label"]]) for r in ds} == {
        ("yoga/a", "yoga"), ("yoga/b", "yoga"), ("rock climbing/c", "rock climbing"),
        ("rock climbing/more/d", "rock climbing")}  # fmt: skip
    assert set(ds["source"]) == {"clips"} and set(ds["duration"]) == {1.0}
    report = json.loads((out / "build_report.json").read_text())
    assert (report["rows_read"], report["rows_written"]) == (7, 4)
    reasons = {entry["row"]: entry["reason"] for entry in report["skipped"]}
    assert reasons["stray.mp4"].startswith("no class") and reasons["yoga/broken.mp4"].startswith("undecodable")
    # A file under a class folder that is not built is reported, whatever its extension.
    assert reasons["yoga/notes.txt"].startswith("unknown extension") and "--extensions" in reasons["yoga/notes.txt"]


def test_all_bad_folder_is_an_error_naming_the_report(tmp_path):
    root = tmp_path / "clips"
    (root / "yoga").mkdir(parents=True)
    (root / "yoga" / "a.mp4").write_bytes(b"")
    (root / "yoga" / "b.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match=r"all 2 rows read were left out \(empty 1, undecodable 1\)"):
        build_folder(videos=str(root), output=str(tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert report["rows_written"] == 0 and len(report["skipped"]) == 2
    assert not (tmp_path / "out" / "README.md").exists()


def test_class_folders_inside_split_folders(clip, tmp_path):
    root = tmp_path / "clips"
    for path in ["train/cat/1.mp4", "train/dog/2.mp4", "val/cat/3.mp4", "test/bird/4.mp4"]:
        _copy(clip, root / path)
    ds = load_dataset(str(build_folder(videos=str(root), output=str(tmp_path / "out"), name="pets", probe=False)))
    assert sorted(ds) == ["test", "train", "validation"]
    assert ds["train"]["duration"] == [None, None]  # not probed: only checked to exist and not be empty
    names = ds["train"].features["label"].names
    assert names == ["bird", "cat", "dog"]
    assert [names[x] for x in ds["validation"]["label"]] == ["cat"] and ds["test"]["id"] == ["test/bird/4"]
    assert "| bird | 0 | 0 | 1 |" in (tmp_path / "out" / "README.md").read_text()


@pytest.fixture()
def table_videos(clip, tmp_path) -> Path:
    for name in ["a.mp4", "b.mp4", "sub/c.mp4"]:
        _copy(clip, tmp_path / "videos" / name)
    return tmp_path / "videos"


def test_csv_table_with_mapping(table_videos, tmp_path):
    table = tmp_path / "clips.csv"
    table.write_text(
        "path,t0,t1,action,score,fold,camera\n"
        "videos/a.mp4,0.5,1.0,jumping jacks,7.5,train,front\n"
        'videos/b.mp4,,,"push up, wide",6,train,side\n'
        "videos/sub/c.mp4,0,0.5,jumping jacks,8,test,front\n"
        "videos/missing.mp4,0,1,squat,5,test,side\n"
    )
    config = TableConfig(annotations=[str(table)], output=str(tmp_path / "out"), video_column="path",
                         start_column="t0", end_column="t1", label_columns=["action", "score", "camera"],
                         class_label_columns=["action"], split_column="fold")  # fmt: skip
    ds = load_dataset(str(build_table(config)))
    assert ds["train"].features["action"].names == ["jumping jacks", "push up, wide", "squat"]
    assert ds["train"].features["score"].dtype == "float64" and ds["train"].features["camera"].dtype == "string"
    first, second = ds["train"]
    assert (first["id"], first["start"], first["end"], first["score"], first["action"]) == (
        "videos/a_0.5_1", 0.5, 1.0, 7.5, 0)  # fmt: skip
    assert (second["id"], second["start"], second["end"], second["action"]) == ("videos/b", None, None, 1)
    assert ds["test"]["id"] == ["videos/sub/c_0_0.5"] and ds["test"]["source"] == ["clips"]
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert report["skipped"][0]["row"].endswith("clips.csv:5") and report["skipped"][0]["reason"].startswith("missing")


def test_jsonl_and_parquet_tables(clip, table_videos, tmp_path):
    records = [
        {"video": "a.mp4", "label": "wave", "steps": ["raise", "wave"], "count": 2, "ok": True},
        {"video": "b.mp4", "label": "clap", "steps": [], "count": 3, "ok": False},
        {"video": str(table_videos / "sub" / "c.mp4"), "label": "wave", "steps": ["wave"], "count": None, "ok": True},
    ]
    jsonl = table_videos / "train.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    parquet = table_videos / "test.parquet"
    for name in ("d.mp4", "e.mp4"):
        _copy(clip, table_videos / name)
    pq.write_table(pa.Table.from_pylist([{**r, "video": v} for r, v in zip(records, ("d.mp4", "e.mp4"))]), parquet)
    config = TableConfig(annotations=[str(jsonl), str(parquet)], output=str(tmp_path / "out"),
                         label_columns=["label", "steps", "count", "ok"], optional_columns=["count"],
                         name="gestures")  # fmt: skip
    ds = load_dataset(str(build_table(config)))
    train, test = ds["train"], ds["test"]
    assert train.features["label"].names == ["clap", "wave"]  # `label` holds strings: a ClassLabel by default
    assert train.features["count"].dtype == "int64" and train.features["ok"].dtype == "bool"
    assert train["steps"] == [["raise", "wave"], [], ["wave"]] and train["count"] == [2, 3, None]
    assert train["id"] == ["a", "b", "sub/c"] and len(test) == 2 and set(test["source"]) == {"gestures"}


def test_bad_tables(table_videos, tmp_path):
    table = tmp_path / "clips.csv"
    table.write_text("video,label\nvideos/a.mp4,wave\nvideos/b.mp4,clap,extra\n")
    with pytest.raises(ValueError, match=r"clips\.csv:3: expected 2 fields"):
        build_table(annotations=[str(table)], output=str(tmp_path / "out"))
    assert not (tmp_path / "out" / "data").exists()
    with pytest.raises(
        KeyError, match=r"no column 'clip' \(given by --video_column\); the columns there are: video, label"
    ):
        build_table(annotations=[str(table)], output=str(tmp_path / "out"), video_column="clip")
    with pytest.raises(KeyError, match="'action'"):
        build_table(annotations=[str(table)], output=str(tmp_path / "out"), label_columns=["action"])
    jsonl = tmp_path / "clips.jsonl"
    jsonl.write_text('{"video": "videos/a.mp4", "label": "wave"}\n{"video": "videos/b.mp4", "label": \n')
    with pytest.raises(ValueError, match=r"clips\.jsonl:2: not valid JSON"):
        build_table(annotations=[str(jsonl)], output=str(tmp_path / "out"))
    table.write_text("video,label,t0\nvideos/a.mp4,wave,soon\n")
    with pytest.raises(InputError, match=r"No usable rows: all 1 rows read were left out \(window 1\).*build_report"):
        build_table(annotations=[str(table)], output=str(tmp_path / "out"), start_column="t0")
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert report["skipped"][0]["reason"] == "window: `t0` must be a number of seconds, not 'soon'"
    table.write_text("video,label,label\nvideos/a.mp4,wave,clap\n")
    with pytest.raises(InputError, match=r"clips\.csv:1: the header names the column\(s\) 'label' more than once"):
        build_table(annotations=[str(table)], output=str(tmp_path / "out"))
    jsonl.write_text('{"video": "videos/a.mp4", "label": "wave", "label": "clap"}\n')
    with pytest.raises(InputError, match=r"clips\.jsonl:1: the object gives the key\(s\) 'label' more than once"):
        build_table(annotations=[str(jsonl)], output=str(tmp_path / "out"))
    table.write_bytes("video,label\nvideos/a.mp4,wave\nvideos/b.mp4,café\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"clips\.csv:3: the file is not utf-8 text .*iconv -f latin1"):
        build_table(annotations=[str(table)], output=str(tmp_path / "out"))
    ds = load_dataset(str(build_table(annotations=[str(table)], output=str(tmp_path / "out"), encoding="latin-1")))
    assert ds["train"].features["label"].names == ["café", "wave"]
    table.write_text("video,label\n")
    with pytest.raises(InputError, match=r"clips\.csv has a header but no rows"):
        build_table(annotations=[str(table)], output=str(tmp_path / "empty"))


def test_table_rows_are_validated_and_drops_reported(table_videos, tmp_path):
    """Each bad row is left out with its line and reason; the good rows and the column types survive."""
    table = tmp_path / "clips.csv"
    table.write_text(
        "video,start,end,label,score,split\n"
        "videos/a.mp4,0,0.5,wave,7.5,train\n"  # 2: kept
        "videos/b.mp4,0.2,0.9,clap,6,train\n"  # 3: kept
        "videos/a.mp4,0.8,0.3,wave,5,train\n"  # 4: start after end
        "videos/a.mp4,0,inf,wave,5,train\n"  # 5: infinite end
        "videos/b.mp4,0.5,9,clap,5,train\n"  # 6: ends 8 s past the 1 s clip
        "videos/b.mp4,3,4,clap,5,train\n"  # 7: starts after the clip's end
        "videos/sub/c.mp4,,,,5,train\n"  # 8: empty label
        "videos/sub/c.mp4,0,1,wave,abc,train\n"  # 9: one bad number in a numeric column
        "videos/sub/c.mp4,0,1,wave,nan,train\n"  # 10: NaN score
        "videos/sub/c.mp4,0.1,0.6,clap,8,train\n"  # 11: kept
        "videos/b.mp4,0.2,0.9,clap,6,test\n"  # 12: the id of line 3, in another split
        "videos/sub/c.mp4,0.1,0.6,clap,8,train\n"  # 13: listed twice
        "videos/a.mp4,0.1,0.2,wave,9,test\n"  # 14: kept
        ",0,1,wave,1,test\n"  # 15: no video
    )
    out = build_table(annotations=[str(table)], output=str(tmp_path / "out"), start_column="start",
                      end_column="end", label_columns=["label", "score"], split_column="split")  # fmt: skip
    ds = load_dataset(str(out))
    assert ds["train"].features["score"].dtype == "float64"  # one "abc" does not turn the scores into strings
    assert ds["train"]["id"] == ["videos/a_0_0.5", "videos/b_0.2_0.9", "videos/sub/c_0.1_0.6"]
    assert ds["train"]["score"] == [7.5, 6.0, 8.0] and ds["test"]["id"] == ["videos/a_0.1_0.2"]
    report = json.loads((out / "build_report.json").read_text())
    reasons = {int(entry["row"].rsplit(":", 1)[1]): entry["reason"] for entry in report["skipped"]}
    assert reasons == {
        4: "window: the start (0.8 s) is not before the end (0.3 s)",
        5: "window: the end is inf, not a finite number of seconds",
        6: "missing: the window ends at 9 s, past the end of the video (1.00 s)",
        7: "missing: the window starts at 3 s, after the end of the video (1.00 s)",
        8: "label: `label` is empty; fill it in, or list the column in --optional_columns to keep rows without it",
        9: "value: `score` holds float64 values, but this row's 'abc' is not a number; fix the cell",
        10: "label: `score` is NaN; fill it in, or list the column in --optional_columns to keep rows without it",
        12: "duplicate: the id videos/b_0.2_0.9 is already in the train split (one clip cannot be in two splits)",
        13: "duplicate: the id videos/sub/c_0.1_0.6 is listed twice in the train split (the first row is kept)",
        15: "missing: the video column `video` is empty",
    }
    assert (report["rows_read"], report["rows_written"]) == (14, 4)
    assert "| window | 2 |" in (out / "README.md").read_text()
