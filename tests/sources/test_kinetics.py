"""The Kinetics builder on CSVs in the official formats (K400 `is_cc`, K700 `validate`, a test CSV without labels)
with generated clips, some missing, empty, truncated or corrupt.

Run: `python -m pytest tests/sources/test_kinetics.py -q`
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset

from vstar.sources.kinetics import KineticsConfig, build_kinetics, read_kinetics_csv
from vstar.video import sample_frames, write_video

FRAMES = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)

# label, youtube_id, start, end, split, is_cc, where the file goes ("flat", "split", "label", None = missing)
TRAIN = [
    ("abseiling", "-7kbO0v4hag", 2, 12, "train", 0, "label"),
    ("petting animal (not cat)", "_a9_x-Y2zQk", 0, 10, "train", 1, "label"),
    ("passing American football (in game)", "--Lc3MGlIm8", 35, 45, "train", 0, "flat"),
    ("tasting beer", "B3AgsR5Mw4Q", 120, 130, "train", 0, "split"),
    ("person's hair", "abcdefghijk", 5, 15, "train", 0, None),
    ("abseiling", "emptyfile01", 1, 11, "train", 0, "empty"),
    ("abseiling", "truncated01", 3, 13, "train", 0, "truncated"),
    ("tasting beer", "corrupt0001", 4, 14, "train", 1, "corrupt"),
]
VALIDATE = [
    ("abseiling", "val-clip-01", 0, 10, "validate", None, "split"),
    ("yoga", "val_clip_02", 10, 20, "validate", None, "label"),
]
TEST = [("test_clip_1", 7, 17, "test", "flat"), ("-test-clip2", 0, 10, "test", None)]


def _write_csv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _place(videos: Path, name: str, split_dir: str, label: str | None, where: str | None) -> None:
    if where is None:
        return
    folder = {"flat": videos, "split": videos / split_dir, "label": videos / split_dir / (label or "")}.get(
        where, videos / split_dir
    )
    path = folder / f"{name}.mp4"
    folder.mkdir(parents=True, exist_ok=True)
    if where == "empty":
        path.write_bytes(b"")
    elif where == "corrupt":
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    else:
        write_video(path, FRAMES, fps=6)
        if where == "truncated":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def kinetics_inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kinetics")
    videos = root / "videos"
    header = ["label", "youtube_id", "time_start", "time_end", "split"]
    _write_csv(root / "train.csv", header + ["is_cc"], [row[:6] for row in TRAIN])
    _write_csv(root / "validate.csv", header, [row[:5] for row in VALIDATE])
    _write_csv(root / "test.csv", header[1:], [row[:4] for row in TEST])
    for label, yid, start, end, split, _, where in TRAIN + VALIDATE:
        _place(videos, f"{yid}_{start:06d}_{end:06d}", split, label, where)
    for yid, start, end, split, where in TEST:
        _place(videos, f"{yid}_{start:06d}_{end:06d}", split, None, where)
    return root


@pytest.fixture(scope="module")
def built(kinetics_inputs, tmp_path_factory) -> Path:
    root = kinetics_inputs
    config = KineticsConfig(
        annotations=[str(root / "train.csv"), str(root / "validate.csv"), str(root / "test.csv")],
        videos=str(root / "videos"),
        output=str(tmp_path_factory.mktemp("kinetics-out")),
        num_proc=2,
    )
    return build_kinetics(config)


def test_kinetics_dataset_loads_and_matches_the_csvs(built):
    ds = load_dataset(str(built))
    assert sorted(ds) == ["test", "train", "validation"]
    names = ds["train"].features["label"].names
    assert names == sorted({row[0] for row in TRAIN + VALIDATE})
    train = {row["id"]: row for row in ds["train"]}
    expected = {f"{r[1]}_{r[2]:06d}_{r[3]:06d}": r for r in TRAIN if r[6] in ("label", "flat", "split")}
    assert set(train) == set(expected)
    for clip_id, row in train.items():
        label, yid, start, end, _, is_cc, _ = expected[clip_id]
        assert names[row["label"]] == label
        assert (row["youtube_id"], row["time_start"], row["time_end"], row["is_cc"]) == (yid, start, end, bool(is_cc))
        assert (row["start"], row["end"], row["source"], row["split"]) == (None, None, "kinetics", "train")
        assert Path(row["video"]["path"]).is_absolute() and row["video"]["bytes"] is None
        assert (row["duration"], row["fps"], row["width"], row["height"], row["codec"]) == (1.0, 6.0, 32, 32, "h264")
    assert sample_frames(next(iter(train.values()))["video"], num_frames=4).frames.shape == (4, 32, 32, 3)
    assert [names[r["label"]] for r in ds["validation"]] == ["abseiling", "yoga"]
    assert ds["test"]["label"] == [None] and ds["test"]["is_cc"] == [None]


def test_bad_clips_are_reported_not_fatal(built):
    report = json.loads((built / "build_report.json").read_text())
    assert (report["rows_read"], report["rows_written"]) == (12, 7)
    reasons = {entry["id"].split("_0")[0]: entry for entry in report["skipped"]}
    assert reasons["abcdefghijk"]["reason"].startswith("missing")
    assert reasons["abcdefghijk"]["row"].endswith("train.csv:6")
    assert reasons["emptyfile01"]["reason"].startswith("empty")
    assert reasons["truncated01"]["reason"].startswith("truncated")
    assert reasons["corrupt0001"]["reason"].startswith("undecodable")
    assert reasons["-test-clip2"]["reason"].startswith("missing")
    assert reasons["emptyfile01"]["file"].endswith("emptyfile01_000001_000011.mp4")
    card = (built / "README.md").read_text()
    assert "7 rows written of 12 read; 5 skipped" in card
    assert "| petting animal (not cat) | 1 | 0 | 0 |" in card
    assert "| truncated | 1 |" in card and "license: cc-by-4.0" in card


def test_malformed_row_names_file_and_line(kinetics_inputs, tmp_path):
    bad = tmp_path / "train.csv"
    text = (kinetics_inputs / "train.csv").read_text().splitlines()
    text[3] = "abseiling,xyz,2"
    bad.write_text("\n".join(text) + "\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"train\.csv:4: expected 6 fields"):
        build_kinetics(annotations=[str(bad)], videos=str(kinetics_inputs / "videos"), output=str(out))
    assert not (out / "data").exists()  # validated before anything is written
    bad.write_text("label,youtube_id,time_start,split\nabseiling,x,1,train\n")
    with pytest.raises(ValueError, match="time_end"):
        list(read_kinetics_csv(bad))
    bad.write_text("label,youtube_id,time_start,time_end,split\nabseiling,x,one,11,train\n")
    with pytest.raises(ValueError, match=r"train\.csv:2: `time_start`"):
        list(read_kinetics_csv(bad))


def test_unwritable_output_fails_first(kinetics_inputs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="Cannot write"):
        build_kinetics(
            annotations=[str(kinetics_inputs / "train.csv")],
            videos=str(kinetics_inputs / "videos"),
            output=str(blocker / "out"),
        )


def test_cli_builds_from_flags(kinetics_inputs, tmp_path):
    from vstar.cli import main

    out = tmp_path / "cli"
    videos, annotations = str(kinetics_inputs / "videos"), str(kinetics_inputs / "validate.csv")
    flags = ["--annotations", annotations, "--videos", videos, "--output", str(out), "--num-proc", "1"]
    main(["build", "kinetics", *flags, "--version", "700-2020"])
    ds = load_dataset(str(out), split="validation")
    assert ds["source"] == ["kinetics-700-2020"] * 2
    assert "--version 700-2020" in (out / "README.md").read_text()


def test_real_sample_csv(shared_data, tmp_path):
    sample = shared_data / "kinetics" / "kinetics_sample.csv"
    rows = list(read_kinetics_csv(sample))
    assert rows and all(r.label for r in rows)
    videos = tmp_path / "videos"
    for row in rows[:3]:
        write_video(videos / row.raw_split / row.label / f"{row.clip_name}.mp4", FRAMES, fps=6)
    out = build_kinetics(annotations=[str(sample)], videos=str(videos), output=str(tmp_path / "out"))
    report = json.loads((out / "build_report.json").read_text())
    assert (report["rows_read"], report["rows_written"]) == (len(rows), 3)
    splits = {r.split for r in rows}
    ds = load_dataset(str(out))
    assert set(ds) == splits
    first = ds[rows[0].split].filter(lambda r: r["id"] == rows[0].clip_name)[0]
    assert first["video"]["path"].endswith(f"{rows[0].clip_name}.mp4")
    assert ds[rows[0].split].features["label"].names == sorted({r.label for r in rows})


def _sample_rows(shared_data: Path) -> dict[str, list[str]]:
    """The real sample CSV's rows by YouTube id (read only; the file stays where it is)."""
    with open(shared_data / "kinetics" / "kinetics_sample.csv", newline="") as handle:
        return {row[1]: row for row in list(csv.reader(handle))[1:]}


def _timed_video(path: Path, seconds: int) -> Path:
    """A 1 fps video whose frame at second `t` has the grey level 8 t, so a window can be checked by its frames."""
    frames = np.stack([np.full((32, 32, 3), 8 * t, np.uint8) for t in range(seconds)])
    return write_video(path, frames, fps=1)


def test_uncut_downloads_are_read_inside_the_csv_window(shared_data, tmp_path):
    from vstar.cli import main

    sample = shared_data / "kinetics" / "kinetics_sample.csv"
    rows = _sample_rows(shared_data)
    videos = tmp_path / "videos"
    _timed_video(videos / "RaKzWVLJsqw.mp4", 14)  # applauding, 2-12: uncut, flat
    _timed_video(videos / "val" / "bottling" / "PJc9MyvuZZw.mp4", 11)  # bottling, 0-10: uncut, split/label
    _timed_video(videos / "bouncing on bouncy castle" / "nj3KLfg5Kbg.mp4", 8)  # 3-13: the download is too short
    write_video(videos / "val" / "klbVshdtJgk_000004_000014.mp4", FRAMES, fps=6)  # bowling: the cut clip
    _timed_video(videos / "IDSbtVcmL_w.mp4", 10)  # 48-58: a cut clip a mirror named by its YouTube id
    out = tmp_path / "out"
    classes = str(shared_data / "kinetics" / "k700_labels.txt")
    main(["build", "kinetics", "--annotations", str(sample), "--videos", str(videos), "--output", str(out),
          "--classes", classes])  # fmt: skip
    ds = load_dataset(str(out), split="validation")
    assert ds.features["label"].num_classes == 700 and set(ds["source"]) == {"kinetics-700"}
    written = {row["youtube_id"]: row for row in ds}
    assert set(written) == {"RaKzWVLJsqw", "PJc9MyvuZZw", "klbVshdtJgk", "IDSbtVcmL_w"}
    applauding = written["RaKzWVLJsqw"]
    assert ds.features["label"].int2str(applauding["label"]) == rows["RaKzWVLJsqw"][0] == "applauding"
    assert (applauding["id"], applauding["start"], applauding["end"]) == ("RaKzWVLJsqw_000002_000012", 2.0, 12.0)
    assert applauding["video"]["path"] == str(videos / "RaKzWVLJsqw.mp4")  # the download itself, not re-encoded
    assert applauding["duration"] == 14.0
    assert (written["PJc9MyvuZZw"]["start"], written["PJc9MyvuZZw"]["end"]) == (0.0, 10.0)
    assert (written["klbVshdtJgk"]["start"], written["klbVshdtJgk"]["end"]) == (None, None)
    renamed = written["IDSbtVcmL_w"]
    assert (renamed["id"], renamed["start"], renamed["end"], renamed["time_start"]) == (
        "IDSbtVcmL_w_000048_000058", None, None, 48)  # fmt: skip
    clip = sample_frames(applauding["video"], num_frames=10, start=applauding["start"], end=applauding["end"])
    levels = clip.frames.reshape(10, -1).mean(axis=1)
    assert abs(levels[0] - 16) < 4 and abs(levels[-1] - 88) < 4  # seconds 2 and 11 of the download
    report = json.loads((out / "build_report.json").read_text())
    assert (report["rows_read"], report["rows_written"]) == (len(rows), 4)
    reasons = {entry["id"]: entry for entry in report["skipped"]}
    short = reasons["nj3KLfg5Kbg_000003_000013"]
    assert short["reason"].startswith("missing: the window ends at 13 s, past the end of the video (8.00 s)")
    assert (
        short["file"].endswith("nj3KLfg5Kbg.mp4") and short["row"] == f"{sample}:{list(rows).index('nj3KLfg5Kbg') + 2}"
    )
    assert sum(entry["reason"].startswith("missing") for entry in report["skipped"]) == len(rows) - 4
    # The card counts the windows' 10 + 10 s and the cut clips' 1 + 10 s, not the whole downloads' 14 + 11 s.
    assert "| validation | 4 | 0.009 |" in (out / "README.md").read_text()


def _csv_lines(rows: list[list[str]], header: str = "label,youtube_id,time_start,time_end,split") -> str:
    return "\n".join([header, *(",".join(f'"{v}"' if "," in v else v for v in row) for row in rows)]) + "\n"


def test_rows_are_validated_and_drops_reported(shared_data, tmp_path):
    rows = _sample_rows(shared_data)
    applauding, bottling, bowling, breading = (
        rows[i] for i in ("RaKzWVLJsqw", "PJc9MyvuZZw", "klbVshdtJgk", "Oc5h62mNb3A")
    )
    videos = tmp_path / "videos"
    for yid, seconds in (("RaKzWVLJsqw", 14), ("PJc9MyvuZZw", 11), ("klbVshdtJgk", 15), ("Oc5h62mNb3A", 20)):
        _timed_video(videos / f"{yid}.mp4", seconds)
    train = tmp_path / "train.csv"
    unlabelled = ["", *bowling[1:4], "train"]
    reversed_window = [breading[0], breading[1], "18", "8", "train"]
    train.write_text(_csv_lines([[*applauding[:4], "train"], [*bottling[:4], "train"], unlabelled, reversed_window]))
    validate = tmp_path / "validate.csv"
    validate.write_text(_csv_lines([[*applauding[:4], "val"], [*applauding[:4], "val"]]))
    test = tmp_path / "test.csv"  # a label column left empty in every row: an unlabelled test split, kept
    test.write_text(_csv_lines([["", *bowling[1:4], "test"]]))
    annotations = [str(train), str(validate), str(test)]
    out = build_kinetics(annotations=annotations, videos=str(videos), output=str(tmp_path / "out"))
    ds = load_dataset(str(out))
    assert list(ds) == ["train", "test"] and sorted(ds["train"]["youtube_id"]) == ["PJc9MyvuZZw", "RaKzWVLJsqw"]
    assert ds["test"]["youtube_id"] == ["klbVshdtJgk"] and ds["test"]["label"] == [None]
    report = json.loads((out / "build_report.json").read_text())
    reasons = {entry["row"].rsplit("/", 1)[-1]: entry["reason"] for entry in report["skipped"]}
    assert reasons["train.csv:4"].startswith("label: the `label` cell is empty")
    assert reasons["train.csv:5"] == "window: the start (18 s) is not before the end (8 s)"
    assert reasons["validate.csv:2"].startswith("duplicate: the id RaKzWVLJsqw_000002_000012 is already in the train")
    assert reasons["validate.csv:3"].startswith("duplicate")
    assert (report["rows_read"], report["rows_written"]) == (7, 3)


def test_bad_csv_files_are_one_clear_error(shared_data, tmp_path, capsys):
    from vstar.cli import main
    from vstar.errors import InputError

    applauding = _sample_rows(shared_data)["RaKzWVLJsqw"]
    videos = tmp_path / "videos"
    _timed_video(videos / "RaKzWVLJsqw.mp4", 14)
    latin = tmp_path / "train.csv"
    latin.write_bytes(_csv_lines([["applauding (café)", *applauding[1:4], "train"]]).encode("latin-1"))
    with pytest.raises(InputError, match=r"train\.csv:2: the file is not utf-8 text .*--encoding latin-1"):
        build_kinetics(annotations=[str(latin)], videos=str(videos), output=str(tmp_path / "out"))
    out = build_kinetics(
        annotations=[str(latin)], videos=str(videos), output=str(tmp_path / "out"), encoding="latin-1"
    )
    assert load_dataset(str(out), split="train").features["label"].names == ["applauding (café)"]
    doubled = tmp_path / "doubled.csv"
    doubled.write_text(
        _csv_lines([[*applauding[:4], "train", "x"]], "label,youtube_id,time_start,time_end,split,label")
    )
    with pytest.raises(InputError, match=r"doubled\.csv:1: the header names the column\(s\) 'label' more than once"):
        build_kinetics(annotations=[str(doubled)], videos=str(videos), output=str(tmp_path / "out2"))
    header_only = tmp_path / "empty.csv"
    header_only.write_text("label,youtube_id,time_start,time_end,split\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["build", "kinetics", "--annotations", str(header_only), "--videos", str(videos),
              "--output", str(tmp_path / "out3")])  # fmt: skip
    assert stop.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("vstar build: error: No rows to write")
    assert f"{tmp_path / 'out3' / 'build_report.json'}" in errors[0]
    assert not (tmp_path / "out3" / "README.md").exists()  # no card of a dataset that does not load
