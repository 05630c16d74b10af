"""The viewer's data layer: filters, counts and lazy paging, on a real run and on a large synthetic table."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vstar.errors import InputError
from vstar.io import load_split
from vstar.view.data import RowFilter, label_class, open_view


def test_a_run_directory_shows_every_cycle_with_its_counts(view_run):
    view = open_view(str(view_run))
    assert view.cycles() == [1, 2] and view.statuses() == ["accepted", "rejected"]
    metrics = json.loads((view_run / "metrics.json").read_text())["cycles"]
    table = view.cycle_table()
    assert [row["cycle"] for row in table] == [entry["cycle"] for entry in metrics]
    for row, entry in zip(table, metrics):
        assert row["heldout_accuracy"] == entry["heldout_accuracy"] and row["rejected"] == entry.get("rejected")
    assert {p["series"] for p in view.curve()} >= {"held-out accuracy", "yield"}
    for cycle in (1, 2):
        dataset = view_run / f"cycle-{cycle}" / "dataset"
        for status, config in (("accepted", "default"), ("rejected", "rejected")):
            expected = load_split(dataset, "train", config)
            rows = RowFilter(cycle=cycle, status=status)
            assert view.count(rows) == len(expected)
            assert [r["id"] for r in view.page(rows, 0, 1000)] == expected["id"]


def test_filters_match_the_rows_they_name(view_run):
    view = open_view(str(view_run))
    every = view.page(RowFilter(), 0, 10_000)
    assert len(every) == view.count()
    rejected_hinted = [r for r in every if r["_status"] == "rejected" and r["rationalized"] and r["cycle"] == 1]
    rows = RowFilter(cycle=1, status="rejected", kind="rationalized")
    assert [r["id"] for r in view.page(rows, 0, 1000)] == [r["id"] for r in rejected_hinted]
    some_class = label_class(every[0]["label"])
    assert view.count(RowFilter(label_class=some_class)) == sum(label_class(r["label"]) == some_class for r in every)
    assert "match" in view.facet_values("verification")
    mismatches = sum(r["verification"]["reason"] == "label:mismatch" for r in every)
    assert mismatches and view.count(RowFilter(reason="label:mismatch")) == mismatches
    # A run's answers have no question type, format or teacher: nothing to offer, and a filter on one names no row.
    assert view.facets() == [] and view.count(RowFilter(teacher="any")) == 0
    word = every[0]["answer"].split()[-1]
    assert view.count(RowFilter(text=word.upper())) == sum(word.lower() in r["answer"].lower() for r in every)
    # A selected row comes whole: its video and its conversation.
    full = view.row(every[0]["_part"], every[0]["_row"])
    assert full["id"] == every[0]["id"] and full["video"]["bytes"] and full["messages"][1]["role"] == "assistant"


def _large_table(path, rows: int, group: int) -> None:
    rng = np.random.default_rng(0)
    reasons = np.array(["match", "label:mismatch", "label:hedged", "no_answer"])
    table = pa.table(
        {
            "id": [f"clip-{i:06d}" for i in range(rows)],
            "video": pa.array([{"bytes": bytes(2048), "path": f"clip-{i}.mp4"} for i in range(rows)]),
            "label": [json.dumps({"label": f"class {i % 700}"}) for i in range(rows)],
            "question": ["What happens?"] * rows,
            "answer": [f"Answer: class {i % 700}" + (" waterfall" if i % 997 == 0 else "") for i in range(rows)],
            "rationalized": (np.arange(rows) % 3 == 0),
            "cycle": np.full(rows, 1, dtype=np.int32),
            "verification": pa.array([{"passed": r == "match", "reason": r} for r in rng.choice(reasons, rows)]),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=group)


def test_large_runs_are_read_lazily(tmp_path):
    rows, group = 60_000, 1_000
    _large_table(tmp_path / "ds" / "rejected" / "train-00000-of-00001.parquet", rows, group)
    _large_table(tmp_path / "ds" / "data" / "train-00000-of-00001.parquet", 2_000, group)
    view = open_view(str(tmp_path / "ds"))
    # Counting everything, or one status, reads no rows: the footers know.
    assert view.count() == rows + 2_000 and view.count(RowFilter(status="rejected")) == rows
    assert view.row_groups_read == 0 and view.index_reads == 0
    # A page far into the table reads the one row group that holds it, without the video column.
    page = view.page(RowFilter(status="rejected"), 45_500, 50)
    assert [r["id"] for r in page] == [f"clip-{i:06d}" for i in range(45_500, 45_550)]
    assert view.row_groups_read == 1 and "video" not in page[0]
    # A filter reads only its small column, once per file; paging the filtered rows reads few row groups.
    table = pq.read_table(tmp_path / "ds" / "rejected" / "train-00000-of-00001.parquet", columns=["verification"])
    expected = [i for i, v in enumerate(table.column("verification").to_pylist()) if v["reason"] == "label:hedged"]
    hedged = RowFilter(status="rejected", reason="label:hedged")
    assert view.count(hedged) == len(expected)
    reads = view.index_reads
    page = view.page(hedged, 100, 20)
    assert [r["id"] for r in page] == [f"clip-{i:06d}" for i in expected[100:120]]
    assert view.index_reads == reads  # the index column was kept
    assert view.row_groups_read <= 1 + 2
    # Text search scans the text columns.
    assert view.count(RowFilter(status="rejected", text="WATERFALL")) == len(range(0, rows, 997))


def test_unknown_targets_are_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="no Parquet files"):
        open_view(str(tmp_path))
    with pytest.raises(InputError, match="neither a run directory"):
        open_view(str(tmp_path / "missing" / "run"))


def test_a_pushed_run_is_shown_from_the_hub(hub_env, view_run):
    from vstar.push import PushConfig, push_run

    push_run(view_run, PushConfig(dataset_repo="vstar-org/view-data", model_repo="vstar-org/view-model"))
    view = open_view("vstar-org/view-data", model_repo="vstar-org/view-model")
    local = open_view(str(view_run))
    assert view.cycles() == [1, 2]
    assert view.count() == local.count()
    assert view.count(RowFilter(cycle=2, status="rejected")) == local.count(RowFilter(cycle=2, status="rejected"))
    assert view.cycle_table() == local.cycle_table()
    one = open_view("vstar-org/view-data@cycle-1")
    assert one.cycles() == [1] and one.count() == local.count(RowFilter(cycle=1))


def test_the_command_names_what_it_needs(capsys):
    from vstar.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["view"])
    assert stop.value.code == 2 and "vstar view RUN_DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["view", "/nonexistent/run"])
    assert stop.value.code == 2 and "neither a run directory" in capsys.readouterr().err


def test_caption_qa_and_selection_datasets_show_their_own_columns(tmp_path):
    from datasets import ClassLabel, Features

    from vstar.curate.select import SCORE_COLUMNS
    from vstar.io import split_file, write_parquet
    from vstar.schema import conversation
    from vstar.synthesize.captions import caption_features
    from vstar.synthesize.qa_schema import QA_FEATURES
    from vstar.view.app import detail_markdown, table_row

    video = {"path": "clip.mp4", "bytes": None}
    source = Features({"label": ClassLabel(names=["red square moving", "blue square moving"])})
    caption = {"id": "c1", "video": video, "start": 0.0, "end": 40.0, "teacher": "tiny@sha256:0",
               "clip_descriptions": [{"start": 0.0, "end": 10.0, "text": "A red square enters."}],
               "summaries": [{"start": 0.0, "end": 30.0, "text": "A square crosses."}],
               "description": "A red square moves left, then stops.", "label": 1}  # fmt: skip
    features = caption_features(source)
    write_parquet(tmp_path / "captions" / split_file("train"), [caption], features)
    selected = Features({**features, **SCORE_COLUMNS})
    rejected = {**caption, "id": "c2", "score": 0.01, "scores": [{"teacher": "tiny", "score": 0.01}],
                "reason": "best score 0.0100 < min_score 0.2"}  # fmt: skip
    write_parquet(tmp_path / "selected" / split_file("train", "rejected"), [rejected], selected)
    qa = {name: None for name in QA_FEATURES}
    qa.update(id="c1/multiple_choice/count", clip_id="c1", video=video, question="How many squares?",
              answer="A.", messages=conversation("How many squares?", "A."), question_type="count",
              format="multiple_choice", options=["A. One", "B. Two", "C. Three", "D. Four"], teacher="t")  # fmt: skip
    write_parquet(tmp_path / "qa" / split_file("train"), [qa], QA_FEATURES)

    captions = open_view(str(tmp_path / "captions"))
    row = captions.page(None, 0, 10)[0]
    assert captions.facet_values("label") == ["blue square moving"]  # ClassLabel names, not integers
    assert captions.count(RowFilter(label_class="blue square moving")) == 1
    assert captions.count(RowFilter(text="stops")) == 1
    shown = detail_markdown(row)
    assert "A red square enters." in shown and "A square crosses." in shown and "0.0-10.0 s" in shown
    assert table_row(row, captions)[4] == "blue square moving"

    selection = open_view(str(tmp_path / "selected"))
    assert selection.statuses() == ["rejected"] and selection.facet_values("verification") == [rejected["reason"]]
    assert selection.count(RowFilter(reason=rejected["reason"])) == 1
    assert "0.01" in detail_markdown(selection.page(None, 0, 1)[0])

    questions = open_view(str(tmp_path / "qa"))
    shown = detail_markdown(questions.page(None, 0, 1)[0])
    assert "question_type:** count" in shown and "B. Two" in shown
