"""`vstar build llava`: LLaVA-Video-178K's released record layout and the official Video-STaR JSON as an instruction
dataset; records without a usable video or with malformed turns are reported in build_report.json, never fatal;
multiple-choice records become rows of the `multiple_choice` task.

Run: `python -m pytest tests/sources/test_llava.py -q`
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset

from vstar.sources import SOURCES
from vstar.sources.llava import LlavaConfig, build_llava, choice_item
from vstar.video import write_video

MC_QUESTION = (
    "<image>\nWhat is the man holding when he enters?\nA. A red umbrella.\nB. A paper bag.\nC. A phone.\nD. A dog.\n"
    "Please respond with only the letter of the correct answer."
)


def _videos(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("academic_source/activitynet/v_abc.mp4", "liwei_youtube_videos/videos/x1.mp4", "star/clip.mp4"):
        write_video(root / name, rng.integers(0, 255, (4, 32, 32, 3), np.uint8), fps=4)
    (root / "star" / "empty.mp4").write_bytes(b"")
    return root


def _178k_records() -> list:
    """Records shaped like LLaVA-Video-178K's `*_mc_qa_processed.json`, `*_oe_qa_processed.json`, `*_cap_*.json`."""
    return [
        {
            "id": "v_abc_mc_0",
            "conversations": [{"from": "human", "value": MC_QUESTION}, {"from": "gpt", "value": "B."}],
            "data_source": "0_30_s_academic_v0_1",
            "video": "academic_source/activitynet/v_abc.mp4",
        },
        {
            "id": "x1_oe",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat does the woman do first?"},
                {"from": "gpt", "value": "She opens the fridge."},
                {"from": "human", "value": "And then?\n(two lines)"},
                {"from": "gpt", "value": "She pours a glass of milk — slowly."},
            ],
            "data_source": "0_30_s_youtube_v0_1",
            "video": "liwei_youtube_videos/videos/x1.mp4",
        },
        {
            "id": "x1_cap",
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe this video in detail."},
                {"from": "gpt", "value": "A kitchen at night…"},
            ],
            "data_source": "0_30_s_youtube_v0_1",
            "video": "liwei_youtube_videos/videos/x1.mp4",
        },
        {"id": "image-only", "image": "coco/1.jpg", "conversations": [{"from": "human", "value": "<image>\nHi"}]},
        {
            "id": "gone",
            "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}],
            "video": "academic_source/missing.mp4",
        },
        {"id": "bad-role", "conversations": [{"from": "robot", "value": "x"}], "video": "star/clip.mp4"},
        {"id": "no-answer", "conversations": [{"from": "human", "value": "<image>\nQ"}], "video": "star/clip.mp4"},
        {
            "id": "empty-file",
            "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}],
            "video": "star/empty.mp4",
        },
        "not a record",
    ]


def test_178k_layout(tmp_path):
    root = _videos(tmp_path / "LLaVA-Video-178K")
    annotations = tmp_path / "0_30_s_mixed_qa_processed.json"
    annotations.write_text(json.dumps(_178k_records(), ensure_ascii=False))
    out = build_llava(LlavaConfig(annotations=[str(annotations)], videos=str(root), output=str(tmp_path / "ds")))
    rows = {r["id"]: r for r in load_dataset(str(out), split="train")}
    assert set(rows) == {"v_abc_mc_0", "x1_oe", "x1_cap"}
    report = json.loads((out / "build_report.json").read_text())
    assert report["rows_read"] == 9 and report["rows_written"] == 3
    assert report["skipped_by_reason"] == {"no video": 1, "missing": 1, "value": 3, "empty": 1}
    reasons = {e["id"]: e["reason"] for e in report["skipped"]}
    assert reasons["gone"].startswith("missing:") and "missing.mp4" in reasons["gone"]
    assert "robot" in reasons["bad-role"] and "last turn" in reasons["no-answer"]
    oe = rows["x1_oe"]
    assert [m["role"] for m in oe["messages"]] == ["user", "assistant", "user", "assistant"]
    assert oe["messages"][0]["content"] == [
        {"type": "video", "text": None},
        {"type": "text", "text": "What does the woman do first?"},
    ]
    assert oe["messages"][3]["content"][0]["text"] == "She pours a glass of milk — slowly."
    assert oe["clip_id"] == rows["x1_cap"]["clip_id"] == "liwei_youtube_videos/videos/x1.mp4"
    assert Path(oe["video"]["path"]).is_file() and oe["source"] == "0_30_s_youtube_v0_1"
    # The choice record is a row of the multiple-choice task, verified by it.
    from vstar.tasks import get_task

    mc = rows["v_abc_mc_0"]
    assert mc["format"] == "multiple_choice" and mc["options"] == [
        "A red umbrella.",
        "A paper bag.",
        "A phone.",
        "A dog.",
    ]
    task = get_task("multiple_choice")
    label = task.label(mc)
    assert label["answer"] == "B" and label["question"] == "What is the man holding when he enters?"
    assert task.verify(mc["answer"], label).passed and not task.verify("C.", label).passed
    assert rows["x1_cap"]["format"] == "open"


def test_video_star_jsonl_with_video_token(tmp_path):
    """The official Video-STaR JSON writes `<video>` (Video-LLaVA's token); JSON Lines work too."""
    root = _videos(tmp_path / "videos")
    lines = [
        {
            "id": "k700_1",
            "video": "star/clip.mp4",
            "conversations": [
                {"from": "human", "value": "<video>\nWhat is the person doing?"},
                {"from": "gpt", "value": "They are juggling. Answer: juggling balls"},
            ],
        },
        {
            "id": "k700_2",
            "video": "star/clip.mp4",
            "conversations": [
                {"from": "human", "value": "What is shown?\n<video>"},
                {"from": "gpt", "value": "A clip."},
            ],
        },
        {
            "id": "k700_1",
            "video": "star/clip.mp4",
            "conversations": [{"from": "human", "value": "Again"}, {"from": "gpt", "value": "Twice"}],
        },
    ]
    path = tmp_path / "video_star_k700.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n{broken\n")
    out = build_llava(LlavaConfig(annotations=[str(path)], videos=str(root), output=str(tmp_path / "ds")))
    rows = {r["id"]: r for r in load_dataset(str(out), split="train")}
    assert rows["k700_1"]["messages"][0]["content"][1]["text"] == "What is the person doing?"
    assert rows["k700_2"]["messages"][0]["content"][1]["text"] == "What is shown?"
    assert rows["k700_1"]["source"] == "video_star_k700"
    report = json.loads((out / "build_report.json").read_text())
    assert report["skipped_by_reason"] == {"duplicate": 1, "value": 1}


def test_choice_item_reads_lettered_options():
    assert choice_item("Q?\nA. x\nB. y\nC. z\nD. w\nRespond.", "C. z") == ("Q?", ["x", "y", "z", "w"], "C")
    assert choice_item("Q?\nA. x\nB. y", "(B)") == ("Q?", ["x", "y"], "B")
    assert choice_item("Q?\nA. x\nB. y", "The answer is y") is None
    assert choice_item("What happens?", "A.") is None
    assert choice_item("Q?\nA. x\nB. y", "D.") is None


def test_registered_and_all_missing_is_one_line(tmp_path, capsys):
    from vstar.cli import main

    assert "llava" in SOURCES.names()
    root = tmp_path / "videos"
    root.mkdir()
    path = tmp_path / "a.json"
    path.write_text(json.dumps(_178k_records()[:2]))
    with pytest.raises(SystemExit) as stop:
        main(["build", "llava", "--annotations", str(path), "--videos", str(root), "--output", str(tmp_path / "o")])
    assert stop.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("vstar")]
    assert "build_report.json" in line and "missing" in line
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": 1,,}]')
    with pytest.raises(SystemExit):
        main(["build", "llava", "--annotations", str(bad), "--videos", str(root), "--output", str(tmp_path / "o2")])
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("vstar")]
    assert "bad.json:1: not valid JSON" in line
