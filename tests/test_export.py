"""`vstar export --format llava` and its inverse `vstar build llava`: a round trip keeps every conversation turn
exactly (multi-turn, unicode, newlines, `<image>` inside later text), embedded videos become files under the video
root, files outside the root are linked into it, and a run directory exports its last cycle's dataset.

Run: `python -m pytest tests/test_export.py -q`
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset

from vstar.export import export_llava
from vstar.io import split_file, write_parquet
from vstar.schema import INSTRUCTION_FEATURES, conversation
from vstar.sources.llava import LlavaConfig, build_llava
from vstar.synthesize.qa_schema import QA_FEATURES, accepted_verdict
from vstar.video import encode_video, sample_frames, write_video

ODD = "Ünïcode — “quotes” 日本語 ✓\nsecond line\n\n  indented\ttab <image> mid-text"


def _frames(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (6, 32, 32, 3), np.uint8)


def _row(row_id: str, video: dict, messages: list[dict], **extra) -> dict:
    row = {
        "id": row_id,
        "video": video,
        "start": None,
        "end": None,
        "source": "handmade",
        "task": "qa",
        "label": None,
        "question": "",
        "answer": "",
        "messages": messages,
        "rationalized": False,
        "cycle": 0,
        "verification": accepted_verdict(),
        "generator": "m",
        "clip_id": row_id,
        "question_type": None,
        "format": "open",
        "options": [],
        "teacher": None,
        "data_source": "handmade_v1",
    }
    row.update(extra)
    return row


def _text(role: str, text: str) -> dict:
    return {"role": role, "content": [{"type": "text", "text": text}]}


@pytest.fixture()
def dataset(tmp_path) -> tuple[Path, Path, list[dict]]:
    root = tmp_path / "library"
    inside = write_video(root / "clips" / "a.mp4", _frames(0), fps=4)
    outside = write_video(tmp_path / "elsewhere" / "b.mp4", _frames(1), fps=4)
    embedded = encode_video(_frames(2), fps=4)
    multi = [
        *conversation(ODD, "First answer.\nWith a second line and <image> in it."),
        _text("user", "<image>\nA later question that starts with the token"),
        _text("assistant", "   spaces kept   "),
        _text("user", "<video> third \u200b zero-width"),
        _text("assistant", "Done. 🎬"),
    ]
    choice = conversation(
        "What colour is the car?\nA. Red\nB. Blue\nC. Green\nD. Black\n"
        "Please respond with only the letter of the correct answer.",
        "B.",
    )
    rows = [
        _row("single", {"path": str(inside), "bytes": None}, conversation("What happens?", "A dog runs.")),
        _row("multi-turn", {"path": "clip.mp4", "bytes": embedded}, multi, start=0.25, end=1.0),
        _row("same-bytes", {"path": "other-name.mp4", "bytes": embedded}, conversation("Again?", "Yes.")),
        _row(
            "outside", {"path": str(outside), "bytes": None}, [_text("system", "Be brief."), *conversation("Q", "A")]
        ),
        _row("missing", {"path": str(tmp_path / "gone.mp4"), "bytes": None}, conversation("Q", "A")),
        _row(
            "choice",
            {"path": str(inside), "bytes": None},
            choice,
            format="multiple_choice",
            options=["Red", "Blue", "Green", "Black"],
            task="multiple_choice",
        ),
    ]
    directory = tmp_path / "qa"
    write_parquet(directory / split_file("train"), rows, QA_FEATURES)
    return directory, root, rows


def test_round_trip_keeps_every_turn_exactly(dataset, tmp_path):
    directory, root, rows = dataset
    out = tmp_path / "llava" / "qa.json"
    summary = export_llava(directory, out, video_root=root)
    records = json.loads(out.read_text(encoding="utf-8"))
    assert summary["records"] == len(records) == 5
    assert [s["id"] for s in summary["skipped"]] == ["missing"]
    by_id = {r["id"]: r for r in records}
    for record in records:
        humans = [t for t in record["conversations"] if t["from"] == "human"]
        assert humans[0]["value"].startswith("<image>\n")
        assert set(record) >= {"id", "video", "conversations", "data_source"}
        assert not Path(record["video"]).is_absolute() and (root / record["video"]).is_file()
    assert by_id["single"]["video"] == "clips/a.mp4"
    # One embedded video, written once, decodes to the frames it held.
    assert by_id["multi-turn"]["video"] == by_id["same-bytes"]["video"]
    assert by_id["multi-turn"]["video"].startswith("embedded/") and summary["videos"]["embedded_written"] == 1
    assert sample_frames(str(root / by_id["multi-turn"]["video"]), num_frames=6).frames.shape[0] == 6
    assert (root / by_id["outside"]["video"]).is_symlink()
    assert by_id["multi-turn"]["conversations"][2]["value"] == "<image>\nA later question that starts with the token"
    assert [t["from"] for t in by_id["outside"]["conversations"]] == ["system", "human", "gpt"]
    assert (by_id["multi-turn"]["start"], by_id["multi-turn"]["end"]) == (0.25, 1.0)
    assert by_id["single"]["data_source"] == "handmade_v1"

    back = build_llava(LlavaConfig(annotations=[str(out)], videos=str(root), output=str(tmp_path / "back")))
    rebuilt = {r["id"]: r for r in load_dataset(str(back), split="train")}
    originals = {r["id"]: r for r in rows if r["id"] != "missing"}
    assert set(rebuilt) == set(originals)
    for row_id, row in originals.items():
        assert rebuilt[row_id]["messages"] == row["messages"], row_id
        assert rebuilt[row_id]["data_source"] == "handmade_v1"
    assert (rebuilt["multi-turn"]["start"], rebuilt["multi-turn"]["end"]) == (0.25, 1.0)
    assert (
        rebuilt["choice"]["format"] == "multiple_choice"
        and rebuilt["choice"]["options"] == originals["choice"]["options"]
    )
    report = json.loads((back / "build_report.json").read_text())
    assert report["rows_written"] == 5 and report["skipped"] == [] and report["without_media_token"] == 0

    # And back out again: the same JSON, byte for byte.
    again = tmp_path / "again.json"
    export_llava(back, again, video_root=root)
    assert again.read_text(encoding="utf-8") == out.read_text(encoding="utf-8")


def test_cli_export_then_build(dataset, tmp_path, monkeypatch, capsys):
    from vstar.cli import main

    directory, root, _ = dataset
    monkeypatch.chdir(tmp_path)
    main(["export", "--format", "llava", str(directory), "out.json", "--outside_root", "copy"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["records"] == 5 and printed["skipped"] == 1
    records = json.loads((tmp_path / "out.json").read_text())
    videos = tmp_path / "videos"  # the default root, beside the JSON file
    assert all((videos / r["video"]).is_file() for r in records)
    assert not any((videos / r["video"]).is_symlink() for r in records)  # copied, not linked
    main(["build", "llava", "--annotations", "out.json", "--videos", str(videos), "--output", "rebuilt"])
    assert len(load_dataset(str(tmp_path / "rebuilt"), split="train")) == 5


def test_run_directory_exports_its_last_cycle(tmp_path):
    video = write_video(tmp_path / "v.mp4", _frames(3), fps=4)
    for cycle in (1, 2):
        row = {
            "id": f"clip-{cycle}",
            "video": {"path": str(video), "bytes": None},
            "start": None,
            "end": None,
            "source": "shapes",
            "task": "shapes",
            "label": "{}",
            "question": "q",
            "answer": f"cycle {cycle}",
            "messages": conversation("What moves?", f"cycle {cycle}"),
            "rationalized": False,
            "cycle": cycle,
            "verification": accepted_verdict(),
            "generator": "m",
        }
        write_parquet(
            tmp_path / "run" / f"cycle-{cycle}" / "dataset" / split_file("train"), [row], INSTRUCTION_FEATURES
        )
    export_llava(tmp_path / "run", tmp_path / "last.json", video_root=tmp_path)
    (record,) = json.loads((tmp_path / "last.json").read_text())
    assert record["id"] == "clip-2" and record["data_source"] == "shapes" and record["video"] == "v.mp4"
    export_llava(tmp_path / "run", tmp_path / "first.json", video_root=tmp_path, cycle=1)
    assert json.loads((tmp_path / "first.json").read_text())[0]["conversations"][1]["value"] == "cycle 1"


def test_export_bad_input_is_one_line(tmp_path, capsys):
    from vstar.cli import main

    for argv, expected in [
        (["export", "--format", "llava", str(tmp_path / "nope"), "o.json"], "does not exist"),
        (["export", "--format", "webdataset", str(tmp_path), "o.json"], "formats: llava"),
        (["export", "--format", "llava", str(tmp_path)], "needs the dataset"),
    ]:
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vstar")]
        assert len(lines) == 1 and expected in lines[0], lines
