"""Tasks without code through the real path: a video QA table and a table with mixed label columns, built by
`vstar build table`, evaluated with `vstar eval` and verified from answers made elsewhere (`vstar verify --answers`).

Run: `python -m pytest tests/tasks/test_table_tasks.py -q`
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from vstar.cli import main
from vstar.tasks import get_task
from vstar.tasks.base import load_task
from vstar.video import write_video

QA = [
    {"question": "Which way does the square move?", "options": ["left", "right", "up", "down"], "answer": "B"},
    {"question": "What colour is the square?", "options": ["red", "green", "blue", "white"], "answer": "red"},
    {"question": "How many squares are there?", "options": ["one", "two", "three", "four"], "answer": 0},
    {"question": "Does the square stop?", "options": ["yes", "no"], "answer": "no"},
]
MIXED = [
    {"label": "omelette", "score": 0.8, "steps": ["crack eggs", "whisk", "fry"]},
    {"label": "pancake", "score": 0.4, "steps": ["mix batter", "pour", "flip"]},
    {"label": "omelette", "score": 0.6, "steps": ["crack eggs", "fry"]},
]
FIELDS = [
    {"column": "label", "kind": "categorical"},
    {"column": "score", "kind": "numeric", "tolerance": 0.1},
    {"column": "steps", "kind": "sequence"},
]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("table-clips")
    frames = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    for i in range(4):
        write_video(root / f"clip{i}.mp4", frames, fps=8)
    return root


def _build(tmp_path: Path, clips: Path, records: list[dict], label_columns: list[str], name: str) -> Path:
    table = tmp_path / f"{name}.jsonl"
    lines = [json.dumps({"video": str(clips / f"clip{i}.mp4"), **r}) for i, r in enumerate(records)]
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / name
    main(["build", "table", "--annotations", str(table), "--output", str(out), "--split", "test",
          "--label_columns", *label_columns, "--probe", "false"])  # fmt: skip
    return out


def test_multiple_choice_task_reads_questions_options_and_answers():
    task = get_task("multiple_choice")
    label = task.label({"id": "a", **QA[1]})
    assert label == {"question": QA[1]["question"], "options": dict(zip("ABCD", QA[1]["options"])), "answer": "A"}
    question = task.question({"id": "a", **QA[1]}, rng=random.Random(0))
    assert QA[1]["question"] in question and "A. red\nB. green\nC. blue\nD. white" in question
    assert "Answer: <letter>" in question
    assert task.verify("The square is bright red.\nAnswer: (A)", label).passed
    assert task.verify("Answer: the square is red", label).passed
    assert task.verify("Answer: B", label).fields["answer"].reason == "mismatch"
    assert task.verify("Answer: A or C", label).fields["answer"].reason == "hedged"
    assert task.score("Answer: C", label) == {"answer": "C"}
    # One column per option, the answer as a 0-based index, other column names.
    columns = get_task("multiple_choice", question_column="q", answer_column="gold")
    assert columns.label({"q": "Q?", "A": "x", "B": "y", "C": "z", "D": None, "gold": 2})["options"] == {
        "A": "x", "B": "y", "C": "z"}  # fmt: skip
    with pytest.raises(KeyError, match="question_column"):
        get_task("multiple_choice").label({"id": "a", "options": ["x"], "answer": "A"})
    with pytest.raises(ValueError, match="names none of the options"):
        task.label({"id": "a", "question": "Q?", "options": ["x", "y"], "answer": "z"})


def test_generic_task_fields():
    fields = [{**FIELDS[0], "classes": ["omelette", "pancake"]}, *FIELDS[1:]]
    task = load_task("generic", json.dumps({"fields": fields}))
    label = MIXED[0]
    assert task.label_text(label) == "label: omelette. score: 0.8. steps: crack eggs, whisk, fry"
    assert "Answer: label: <label>. score: <number>. steps: <steps in order>" in task.question(rng=random.Random(0))
    assert task.verify("Answer: label: omelette. score: 0.85. steps: crack the eggs, whisk, then fry", label).passed
    for answer, reason in [
        ("Answer: label: pancake. score: 0.8. steps: crack eggs, whisk, fry", "label:mismatch"),
        ("Answer: label: omelette. score: 0.5. steps: crack eggs, whisk, fry", "score:out_of_tolerance"),
        ("Answer: label: omelette. score: 0.8 (or 0.5). steps: crack eggs, whisk, fry", "score:hedged"),
        ("Answer: label: omelette. score: 0.8. steps: whisk, crack eggs, fry", "steps:order"),
        ("Answer: label: omelette or pancake. score: 0.8. steps: crack eggs, whisk, fry", "label:hedged"),
    ]:
        assert task.verify(answer, label).reason == reason, answer
    assert task.score("Answer: label: pancake. score: 0.3. steps: mix batter, flip", MIXED[1]) == {
        "label": "pancake", "score": 0.3, "steps": ["mix batter", "flip"]}  # fmt: skip
    single = get_task("generic", fields=[{"column": "rating", "kind": "numeric", "abs_tolerance": 0.5}])
    assert single.label_text({"rating": 4.0}) == "4" and single.verify("Answer: 4.4", {"rating": 4.0}).passed
    with pytest.raises(ValueError, match="kind must be one of"):
        get_task("generic", fields=[{"column": "x", "kind": "boolean"}])
    with pytest.raises(ValueError, match="needs `fields`"):
        get_task("generic")


def test_verify_answers_made_elsewhere(clips, tmp_path, capsys):
    source = _build(tmp_path, clips, QA, ["question", "options", "answer"], "video_qa")
    ids = pq.read_table(next((source / "data").glob("test-*.parquet")), columns=["id"]).column("id").to_pylist()
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "\n".join(
            [
                json.dumps({"id": ids[0], "answer": "It moves to the right.\nAnswer: B"}),
                json.dumps({"id": ids[1], "answer": "Answer: (C)"}),
                json.dumps({"id": ids[2], "answer": "Answer: A or B"}),
                json.dumps({"id": "not-a-clip", "answer": "Answer: A"}),
                "{not json",
                json.dumps({"id": ids[0], "answer": "Answer: A"}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    capsys.readouterr()
    output = tmp_path / "verified.parquet"
    main(["verify", "--answers", str(answers), "--dataset", str(source), "--split", "test",
          "--task", "multiple_choice", "--output", str(output)])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert (summary["answers"], summary["passed"], summary["failed_by_reason"]) == (
        3, 1, {"answer:mismatch": 1, "answer:hedged": 1})  # fmt: skip
    assert (summary["unknown_ids"], summary["unknown_id_examples"]) == (1, ["not-a-clip"])
    assert [e["line"] for e in summary["skipped_lines"]] == [5, 6]
    rows = pq.read_table(output).to_pylist()
    # The same columns as verifying generations, with the label and the verdict.
    assert set(rows[0]) >= {"id", "attempt", "question", "prompt", "answer", "generator", "label", "verification"}
    assert rows[0]["generator"] == "answers:answers.jsonl"
    assert json.loads(rows[0]["label"])["answer"] == "B" and rows[0]["verification"]["passed"]


def test_verify_answers_uses_the_loops_vocabulary(clips, tmp_path, capsys):
    # A ClassLabel column gives the generic task's categorical field its classes, as in the loop.
    source = _build(tmp_path, clips, MIXED, ["label", "score", "steps"], "mixed")
    ids = pq.read_table(next((source / "data").glob("test-*.parquet")), columns=["id"]).column("id").to_pylist()
    answers = tmp_path / "answers.jsonl"
    lines = [
        {"id": ids[0], "answer": "Answer: label: omelette. score: 0.75. steps: crack eggs, whisk, fry"},
        {"id": ids[1], "answer": "Answer: label: pancake. score: 0.8. steps: mix batter, pour, flip"},
        {"id": ids[2], "answer": "Answer: label: omelette or pancake. score: 0.6. steps: crack eggs, fry"},
    ]
    answers.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    capsys.readouterr()
    main(["verify", "--answers", str(answers), "--dataset", str(source), "--split", "test", "--task", "generic",
          "--task_options", json.dumps({"fields": FIELDS}), "--output", str(tmp_path / "v.parquet")])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["passed"] == 1
    assert summary["failed_by_reason"] == {"score:out_of_tolerance": 1, "label:hedged": 1}
    from vstar.stages import StageData

    _, task = StageData(dataset=str(source), split="test", task="generic", task_options={"fields": FIELDS}).load()
    assert task.classes == ["omelette", "pancake"] and task.fields[1].classes is None


def test_eval_multiple_choice_on_a_video_qa_table(clips, tmp_path, tiny_model_dirs):
    source = _build(tmp_path, clips, QA, ["question", "options", "answer"], "video_qa")
    output = tmp_path / "results.json"
    main(["eval", "--model", str(tiny_model_dirs["qwen2_5_vl"]), "--dataset", str(source), "--split", "test",
          "--task", "multiple_choice", "--output", str(output), "--max_new_tokens", "4",
          "--num_frames", "4"])  # fmt: skip
    results = json.loads(output.read_text())
    metrics = results["metrics"]
    assert metrics["num_examples"] == 4
    assert {"accuracy", "unparsed_rate", "parse_rate", "choice_distribution", "verifier_yield"} <= set(metrics)
    predictions = results["predictions"]
    assert {p["label"]["answer"] for p in predictions} == {"A", "B"}
    # The prompt the model saw lists the row's own options.
    generations = pq.read_table(next(output.with_suffix(".generations").glob("eval-*.parquet"))).to_pylist()
    assert any("A. left\nB. right\nC. up\nD. down" in g["prompt"] for g in generations)
    assert metrics["accuracy"] == sum(p["correct"] for p in predictions) / 4
